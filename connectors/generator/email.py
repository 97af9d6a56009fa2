"""SendGrid Event Webhook events of Northbridge's marketing campaigns.

Campaigns (per program: open days, nurture series, deadlines, webinars; plus a monthly newsletter to
everyone) go to the email address of every CRM contact created before the send, with a targeting
probability per campaign. Each send yields ``processed`` and then ``delivered`` (or ``dropped`` /
``bounce``), and for delivered mails possibly ``open`` (one or more), ``click``, ``unsubscribe`` or
``spamreport``. After a hard bounce further sends are dropped; after an unsubscribe or spam report the
address is suppressed, and in 60 % of the cases the CRM contact gets ``HasOptedOutOfEmail = true``.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .ids import hex_id, pick, rr, sg_event_id
from .population import PROGRAMS, Person, email_variant
from .salesforce import Contact
from .sink import BreakSpec
from .timefmt import MS_DAY, MS_HOUR, MS_MIN, T0, T_END, unix_seconds

if TYPE_CHECKING:
    from .simulate import ChunkContext

EMAIL_SPEC = BreakSpec(
    droppable=("email", "timestamp", "event"),
    identifier_of={"email": lambda v: v.strip().lower()},
    timestamp_field="timestamp",
    unix_timestamp=True,
)

_PROGRAM_CAMPAIGNS = (  # (date, name template, category, targeting probability)
    ("2025-09-16", "{p} autumn open day", "open_day", 0.08),
    ("2025-10-21", "{p} autumn nurture", "nurture", 0.1),
    ("2025-12-02", "{p} scholarship deadline", "deadline", 0.1),
    ("2026-01-20", "{p} application deadline", "deadline", 0.12),
    ("2026-03-10", "{p} spring nurture", "nurture", 0.1),
    ("2026-05-05", "{p} summer open day", "open_day", 0.08),
    ("2026-07-01", "{p} last call autumn intake", "deadline", 0.12),
    ("2026-09-15", "{p} autumn nurture 2026", "nurture", 0.1),
    ("2026-10-13", "{p} winter intake webinar", "webinar", 0.08),
)
_NEWSLETTER_P = 0.03
_EMAIL_CLIENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
    "Safari/537.36",
)
_BOUNCES = (
    ("bounce", "5.1.1", "550 5.1.1 The email account that you tried to reach does not exist."),
    ("bounce", "5.1.1", "550 5.1.1 <{email}>: Recipient address rejected: User unknown"),
    ("blocked", "5.7.1", "550 5.7.1 Service unavailable; client host blocked using Spamhaus"),
    ("blocked", "4.7.0", "421 4.7.0 Temporary System Problem. Try again later."),
)


@dataclass(frozen=True)
class Campaign:
    id: int
    name: str
    program: str | None  # None: everyone (newsletter)
    category: str
    template_id: str
    url: str
    send_t: int
    probability: float


def build_campaigns(seed: int) -> tuple[list[Campaign], list[int]]:
    """The campaign calendar (same for every chunk of a run), sorted by send time, and the send times."""
    rng = random.Random(f"northbridge-campaigns:{seed}")
    plan: list[tuple[int, str, str | None, str, str, float]] = []
    for date, name, category, prob in _PROGRAM_CAMPAIGNS:
        t = int((datetime.fromisoformat(date).replace(tzinfo=UTC) - T0).total_seconds() * 1000) + 8 * MS_HOUR
        for prog in PROGRAMS:
            plan.append((t, name.format(p=prog.name), prog.key, category, f"/{prog.key}", prob))
    for month in range(14):
        year, mon = 2025 + (8 + month) // 12, (8 + month) % 12 + 1
        t = int((datetime(year, mon, 3, 7, tzinfo=UTC) - T0).total_seconds() * 1000)
        label = datetime(year, mon, 1).strftime("%B %Y")
        plan.append((t, f"Northbridge newsletter {label}", None, "newsletter", "/", _NEWSLETTER_P))
    plan.sort(key=lambda c: (c[0], c[1]))
    campaigns = []
    for i, (t, name, prog, category, path, prob) in enumerate(plan):
        slug = name.lower().replace(" ", "_")
        campaigns.append(Campaign(
            10231 + i, name, prog, category, f"d-{hex_id(rng, 32)}",
            f"https://www.northbridge.edu{path}?utm_source=email&utm_medium=email&utm_campaign={slug}",
            t, prob,
        ))
    return campaigns, [c.send_t for c in campaigns]


def emit_email(p: Person, contacts: list[Contact], ctx: ChunkContext) -> None:
    """All SendGrid events of the person's addresses; appends opt-out versions to the contacts."""
    if not contacts:
        return
    rng = ctx.rng
    rand = rng.random
    sink = ctx.sink
    variant_rate = ctx.rates.email_variant
    campaigns, send_times = ctx.campaigns, ctx.campaign_times
    key = p.program.key
    ip = f"{pick(rng, (79, 84, 87, 91, 93, 176, 188, 217))}.{rr(rng, 256)}.{rr(rng, 256)}.{rr(rng, 1, 255)}"
    client = pick(rng, _EMAIL_CLIENTS)
    for c in contacts:
        addr = c.email
        ids = (addr,)
        bounced = False
        for i in range(bisect_right(send_times, c.created_t), len(campaigns)):
            camp = campaigns[i]
            if (camp.program is not None and camp.program != key) or rand() >= camp.probability:
                continue
            t = camp.send_t + rr(rng, 2 * MS_HOUR)
            written = email_variant(rng, addr, whitespace=False) if rand() < variant_rate else addr
            msg = f"{hex_id(rng, 22)}.filterdrecv-p3mdw1-{rr(rng, 1000, 99999)}-{hex_id(rng, 8).upper()}-1.0"
            smtp = f"<{msg[:22]}@northbridge.edu>"
            send = (written, msg, smtp, [camp.category], camp, ids)
            _ev(sink, rng, send, "processed", t)
            t += rr(rng, 1000, 60_000)
            if bounced:
                _ev(sink, rng, send, "dropped", t, {"reason": "Bounced Address"})
                continue
            r = rand()
            if r < 0.008:
                _ev(sink, rng, send, "dropped", t, {"reason": "Invalid SMTPAPI header"})
                continue
            if r < 0.03:
                kind, status, reason = pick(rng, _BOUNCES)
                _ev(sink, rng, send, "bounce", t,
                    {"type": kind, "status": status, "reason": reason.format(email=addr)})
                bounced = kind == "bounce"
                continue
            _ev(sink, rng, send, "delivered", t, {"response": "250 2.0.0 OK"})
            if rand() >= 0.45:
                continue
            t += rr(rng, 5 * MS_MIN, 2 * MS_DAY)
            for _ in range(1 + (rand() < 0.3)):
                _ev(sink, rng, send, "open", t, {"useragent": client, "ip": ip, "sg_machine_open": False},
                    False)
                t += rr(rng, MS_MIN, MS_DAY)
            r = rand()
            if r < 0.3:
                _ev(sink, rng, send, "click", t, {"url": camp.url, "useragent": client, "ip": ip,
                                "url_offset": {"index": 0, "type": "html"}}, False)
            elif r < 0.345:
                opt_t = t + rr(rng, 10_000, 600_000)
                _ev(sink, rng, send, "unsubscribe" if r < 0.34 else "spamreport", opt_t, None, False)
                if rand() < 0.6 and opt_t + MS_DAY < T_END:
                    c.versions.append((opt_t + rr(rng, MS_HOUR, 3 * MS_DAY), {"HasOptedOutOfEmail": True}))
                break  # suppressed from now on


def _ev(sink, rng: random.Random, send: tuple, event: str, t_ms: int, extra: dict | None = None,
        with_smtp: bool = True) -> None:
    if t_ms >= T_END:
        return  # has not happened yet at the end of the simulated period
    written, msg, smtp, category, camp, ids = send
    eid = sg_event_id(rng)
    rec = {"email": written, "timestamp": unix_seconds(t_ms), "event": event, "sg_event_id": eid,
           "sg_message_id": msg}
    if with_smtp:
        rec["smtp-id"] = smtp
    rec["category"] = category
    rec["marketing_campaign_id"] = camp.id
    rec["marketing_campaign_name"] = camp.name
    rec["template_id"] = camp.template_id
    if extra:
        rec.update(extra)
    # SendGrid posts webhook batches a few seconds after the event
    sink.event("email", t_ms + rr(rng, 1000, 30_000), rec, eid, ids, EMAIL_SPEC)
