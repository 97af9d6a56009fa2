"""Website clickstream (Segment-like JSON events): page views, brochure downloads, form submissions.

Each web visitor uses one or two browsers (one ``anonymous_id`` and fingerprint each) and comes back in
several sessions. Sessions land on a course page or the home page, from paid campaigns (UTM parameters
in the URL and in ``utm``), organic search or directly, and click through a few pages. Identified
visitors submit ``request_info`` when they inquire and ``application_start`` when they apply; the form
traits reveal their email (sometimes with case/whitespace variants) and, for about half, their mobile
number (national format at the configured rate) and country. ``anonymous_only_visitors`` never submit.

The MBA has its own sub-pages (/mba/curriculum, /mba/fees...). Inquiries with a research burst
(``Person.burst_t``, see :mod:`.journey`) come back in the last week: 3-8 MBA page views in 2-4 sessions,
on the browsers they used before (identified where that browser submitted a form, anonymous elsewhere).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from .ids import hex_id, pick, rr, uuid4
from .journey import BURST_TO
from .population import PROGRAMS, Person, email_variant
from .sink import BreakSpec, Sink
from .timefmt import MS_DAY, MS_HOUR, T_END, iso_ms_z

if TYPE_CHECKING:
    from .simulate import ChunkContext

BASE = "https://www.northbridge.edu"
GENERAL_PAGES = {
    "/": "Northbridge University | Business and Data Science Degrees",
    "/admissions": "Admissions | Northbridge University",
    "/fees": "Fees and Scholarships | Northbridge University",
    "/campus": "Campus | Northbridge University",
    "/apply": "Apply | Northbridge University",
}
MBA_PAGES = {
    "/mba/curriculum": "Curriculum | MBA | Northbridge University",
    "/mba/fees": "Fees and Scholarships | MBA | Northbridge University",
    "/mba/admissions": "Admissions | MBA | Northbridge University",
    "/mba/careers": "Careers | MBA | Northbridge University",
    "/mba/faculty": "Faculty | MBA | Northbridge University",
}
TITLES = {**GENERAL_PAGES, **{f"/{p.key}": p.title for p in PROGRAMS}, **MBA_PAGES}
PATHS = tuple(TITLES)
PROGRAM_PATHS = tuple(f"/{p.key}" for p in PROGRAMS)
MBA_SECTION = ("/mba", *MBA_PAGES)  # what a research burst browses
_IS_PROGRAM_PATH = frozenset(PROGRAM_PATHS)

USER_AGENTS = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Safari/537.36", 30),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
     "Safari/605.1.15", 12),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1", 22),
    ("Mozilla/5.0 (Linux; Android 14; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Mobile Safari/537.36", 20),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", 7),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Safari/537.36 Edg/124.0.2478.80", 9),
)
_UA = [ua for ua, w in USER_AGENTS for _ in range(w)]

# How sessions start: (utm_source, utm_medium, referrer, weight); None source = no campaign.
ACQUISITION = (
    ("google", "cpc", "https://www.google.com/", 28),
    ("facebook", "paid_social", "https://www.facebook.com/", 8),
    ("instagram", "paid_social", "https://www.instagram.com/", 8),
    ("linkedin", "paid_social", "https://www.linkedin.com/", 9),
    ("newsletter", "email", None, 5),
    (None, None, "https://www.google.com/", 22),  # organic search
    (None, None, "https://www.bing.com/", 2),
    (None, None, None, 18),  # direct / bookmark
)
_ACQ = [a[:3] for a in ACQUISITION for _ in range(a[3])]
_SOCIAL_CONTENT = ("video_a", "video_b", "carousel", "story")
_CPC_TERMS = ("{p} germany", "{p} berlin", "best {p} europe", "{p} part time", None, None)

NULL_UTM = {"source": None, "medium": None, "campaign": None, "term": None, "content": None}
EMPTY: dict = {}
NEXT_PAGES = {
    "/": (*PROGRAM_PATHS, "/admissions", "/campus"),
    "/admissions": ("/fees", "/apply", "/", *PROGRAM_PATHS[:2]),
    "/fees": ("/admissions", "/apply", "/"),
    "/campus": ("/", "/admissions"),
    "/apply": ("/admissions", "/fees"),
}
for _path in PROGRAM_PATHS:
    NEXT_PAGES[_path] = ("/fees", "/admissions", "/apply", "/campus", "/", _path)
NEXT_PAGES["/mba"] += tuple(MBA_PAGES)
for _path in MBA_PAGES:
    NEXT_PAGES[_path] = (*MBA_SECTION, "/apply")

# page objects of internal navigation are immutable and shared between events (orjson does not care)
_INTERNAL_PAGE = {
    (path, prev): {"url": BASE + path, "path": path, "title": TITLES[path], "referrer": BASE + prev}
    for path in PATHS
    for prev in PATHS
}

WEB_SPEC = BreakSpec(
    droppable=("anonymous_id", "timestamp", "event"),
    identifier_of={"anonymous_id": lambda v: v},
    timestamp_field="timestamp",
)


def _season(t: int) -> str:
    month = int(iso_ms_z(t)[5:7])
    return ("winter", "spring", "summer", "autumn")[(month % 12) // 3]


def emit_web(p: Person, ctx: ChunkContext) -> None:
    """All web events of one person (nothing for the 10 % who only appear offline)."""
    if not p.web:
        return
    rng = ctx.rng
    rand = rng.random
    rates = ctx.rates
    n_browsers = 2 if rand() < 0.25 else 1
    browsers = [
        (f"anon_{hex_id(rng, 24)}", f"fp_{hex_id(rng, 16)}", pick(rng, _UA)) for _ in range(n_browsers)
    ]
    # browsing window: from the first touch until a while after the last step that happens on the web
    last_step = p.start_t if p.start_t is not None and not p.anon_only else p.inquiry_t
    window_end = min(T_END - MS_HOUR, last_step + rr(rng, MS_DAY, 75 * MS_DAY))
    span = max(window_end - p.first_touch, MS_HOUR)
    program_path = f"/{p.program.key}"
    forms: list[tuple[int, str]] = []
    if not p.anon_only:
        forms.append((p.inquiry_t, "request_info"))
        again = p.inquiry_t + rr(rng, MS_DAY, 40 * MS_DAY)
        if rand() < 0.08 and again < T_END - MS_HOUR:
            forms.append((again, "request_info"))
        if p.start_t is not None:
            forms.append((p.start_t, "application_start"))
    # the very first session is at first touch; further sessions are spread over the window
    n_sessions = 1 + min(int(rng.expovariate(1.7)), 6)
    starts = [p.first_touch] + [p.first_touch + rr(rng, span) for _ in range(n_sessions - 1)]
    used = [False] * n_browsers
    for t0 in starts:
        b = 0 if n_browsers == 1 or rand() < 0.65 else 1
        used[b] = True
        _session(p, ctx, browsers[b], t0, program_path, None)
    for t0, form_id in sorted(forms):
        b = 0 if n_browsers == 1 or rand() < 0.7 else 1
        used[b] = True
        _session(p, ctx, browsers[b], t0, program_path, (form_id, rates))
    if p.burst_t is not None:
        _research_burst(p, ctx, [b for b, u in zip(browsers, used, strict=True) if u])


def _research_burst(p: Person, ctx: ChunkContext, browsers: list[tuple[str, str, str]]) -> None:
    """3-8 MBA page views in 2-4 sessions between ``p.burst_t`` and the end of the burst window, on the
    ``browsers`` the person used before."""
    rng = ctx.rng
    rand = rng.random
    n_views = rr(rng, 3, 9)
    n_sessions = min(n_views, rr(rng, 2, 5))
    views = [1] * n_sessions
    for _ in range(n_views - n_sessions):
        views[rr(rng, n_sessions)] += 1
    starts = sorted(p.burst_t + rr(rng, BURST_TO - p.burst_t) for _ in range(n_sessions))
    for t, n in zip(starts, views, strict=True):
        anon, fp, ua = browsers[0 if len(browsers) == 1 or rand() < 0.65 else 1]
        sess = f"sess_{hex_id(rng, 24)}"
        ids = (anon, sess)
        path = "/mba" if rand() < 0.6 else pick(rng, MBA_SECTION)
        page, utm = _entry_page(p, rng, path, t)
        for i in range(n + (rand() < 0.2)):  # some go on to the application page, without starting yet
            if i:
                prev, path = path, "/apply" if i == n else pick(rng, MBA_SECTION)
                page, utm = _INTERNAL_PAGE[(path, prev)], NULL_UTM
                t += rr(rng, 8_000, 240_000)
            _page_view(ctx.sink, rng, t, page, utm, anon, sess, fp, ua, ids)


def _entry_page(p: Person, rng: random.Random, landing: str, t: int) -> tuple[dict, dict]:
    """The first page of a session and its UTM parameters: from a campaign, a search engine or direct."""
    source, medium, referrer = pick(rng, _ACQ)
    if source is None:
        return {"url": BASE + landing, "path": landing, "title": TITLES[landing], "referrer": referrer}, NULL_UTM
    prog = (landing[1:] if landing in PROGRAM_PATHS else p.program.key).replace("-", "_")
    campaign = f"{prog}_{_season(t)}"
    term = content = None
    if medium == "cpc":
        term_t = pick(rng, _CPC_TERMS)
        term = term_t.format(p=p.program.name.lower()) if term_t else None
    elif medium == "paid_social":
        content = pick(rng, _SOCIAL_CONTENT)
    utm = {"source": source, "medium": medium, "campaign": campaign, "term": term, "content": content}
    query = f"utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
    if term:
        query += "&utm_term=" + term.replace(" ", "+")
    if content:
        query += "&utm_content=" + content
    return {"url": f"{BASE}{landing}?{query}", "path": landing, "title": TITLES[landing], "referrer": referrer}, utm


def _page_view(sink: Sink, rng: random.Random, t: int, page: dict, utm: dict, anon: str, sess: str, fp: str,
               ua: str, ids: tuple[str, ...]) -> None:
    sent = t + rr(rng, 30, 1800)
    eid = uuid4(rng)
    sink.event("web", sent, {
        "event_id": eid, "type": "page", "event": "page_view", "anonymous_id": anon,
        "session_id": sess, "fingerprint": fp, "timestamp": iso_ms_z(t), "sent_at": iso_ms_z(sent),
        "page": page, "utm": utm, "user_agent": ua, "properties": EMPTY, "traits": EMPTY,
    }, eid, ids, WEB_SPEC)


def _session(p: Person, ctx: ChunkContext, browser: tuple[str, str, str], t: int, program_path: str,
             form: tuple | None) -> None:
    rng = ctx.rng
    rand = rng.random
    sink = ctx.sink
    anon, fp, ua = browser
    sess = f"sess_{hex_id(rng, 24)}"
    ids = (anon, sess)
    landing = program_path if rand() < 0.6 or form else ("/" if rand() < 0.7 else pick(rng, PATHS))
    page, utm = _entry_page(p, rng, landing, t)
    n_pages = 1 + min(int(rng.expovariate(1.45)), 7)
    path = landing
    for i in range(n_pages):
        # (rr() inlined in this loop: it runs for every page view)
        if i:
            prev = path
            nxt = NEXT_PAGES[prev]
            path = nxt[int(rand() * len(nxt))]
            page = _INTERNAL_PAGE[(path, prev)]
            utm = NULL_UTM
            t += 8_000 + int(rand() * 232_000)
        sent = t + 30 + int(rand() * 1770)
        eid = uuid4(rng)
        sink.event("web", sent, {
            "event_id": eid, "type": "page", "event": "page_view", "anonymous_id": anon,
            "session_id": sess, "fingerprint": fp, "timestamp": iso_ms_z(t), "sent_at": iso_ms_z(sent),
            "page": page, "utm": utm, "user_agent": ua, "properties": EMPTY, "traits": EMPTY,
        }, eid, ids, WEB_SPEC)
        if path in _IS_PROGRAM_PATH and rand() < 0.1:
            t += rr(rng, 5_000, 90_000)
            sent = t + rr(rng, 30, 1800)
            program = path[1:]
            eid = uuid4(rng)
            sink.event("web", sent, {
                "event_id": eid, "type": "track", "event": "brochure_download", "anonymous_id": anon,
                "session_id": sess, "fingerprint": fp, "timestamp": iso_ms_z(t), "sent_at": iso_ms_z(sent),
                "page": page, "utm": utm, "user_agent": ua,
                "properties": {"program": program, "brochure_id": f"br-{program}-2026"}, "traits": EMPTY,
            }, eid, ids, WEB_SPEC)
    if form is None:
        return
    form_id, rates = form
    form_pages = ("/apply",) if form_id == "application_start" else (program_path, "/admissions")
    if path not in form_pages:
        # the visitor navigates to the page that holds the form
        prev, path = path, form_pages[0]
        page = _INTERNAL_PAGE[(path, prev)]
        utm = NULL_UTM
        t += rr(rng, 8_000, 120_000)
        _page_view(sink, rng, t, page, utm, anon, sess, fp, ua, ids)
    t += rr(rng, 20_000, 300_000)
    sent = t + rr(rng, 30, 1800)
    email = email_variant(rng, p.email) if rand() < rates.email_variant else p.email
    ids = (anon, sess, p.email)
    phone = None
    if form_id == "application_start" or rand() < 0.55:
        phone = p.mobile_written(rng, rates.phone_national_format)
        if not p.phone_known:
            p.phone_known = True
            p.phone_t = t
        ids = (anon, sess, p.email, p.mobile_e164)
    eid = uuid4(rng)
    sink.event("web", sent, {
        "event_id": eid, "type": "track", "event": "form_submit", "anonymous_id": anon,
        "session_id": sess, "fingerprint": fp, "timestamp": iso_ms_z(t), "sent_at": iso_ms_z(sent),
        "page": page, "utm": utm, "user_agent": ua,
        "properties": {"form_id": form_id, "program": p.program.key},
        "traits": {"email": email, "first_name": p.first, "last_name": p.last, "phone": phone,
                   "country": p.country.iso2},
    }, eid, ids, WEB_SPEC)

