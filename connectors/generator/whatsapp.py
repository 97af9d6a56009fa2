"""Twilio inbound WhatsApp webhooks, as logged by Northbridge's receiver (form parameters as strings plus
a ``ReceivedAt`` stamp, since Twilio sends no timestamp).

A minority of identified people whose mobile number is known (from a web form or the CRM) write to the
admissions WhatsApp number: questions about deadlines, scholarships and fees of their program, status
questions while applying, study questions and complaints once enrolled, thanks, sometimes a photo or
screenshot (media), and some ``STOP`` (opt-out) and later ``START`` (opt-in) replies. Messages are in
English or German. ``From`` is ``whatsapp:+<E.164>`` of the person's true mobile number.

Inquiries in a research burst (:mod:`.journey`) whose number is known use the site's "chat with us on
WhatsApp" button more often (``BURST_WHATSAPP_SHARE``): one question about the MBA during the burst week. A
conversation the person starts is what lets admissions answer on WhatsApp (gold.consent_current).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ids import hex_id, pick, rr
from .journey import BURST_TO
from .population import Person
from .sink import BreakSpec
from .timefmt import MS_DAY, MS_HOUR, MS_MIN, T_END, iso_s_z

if TYPE_CHECKING:
    from .simulate import ChunkContext

NORTHBRIDGE_NUMBER = "whatsapp:+4930901820"
WHATSAPP_SHARE = 0.15  # of the people whose phone is known
BURST_WHATSAPP_SHARE = 0.35  # of the people in a research burst whose phone is known

WHATSAPP_SPEC = BreakSpec(
    droppable=("From", "ReceivedAt"),
    identifier_of={"From": lambda v: v.removeprefix("whatsapp:")},
    timestamp_field="ReceivedAt",
)

_PROSPECT = (
    "Hi, when is the deadline for {p}?",
    "Is there a scholarship for the {p}?",
    "Hello, can I still apply for the {p} this year?",
    "What are the tuition fees for the {p}?",
    "Is the {p} taught completely in English?",
    "Can I do the {p} part-time while working?",
    "Hallo, wann ist die Bewerbungsfrist für den {p}?",
    "Gibt es ein Stipendium für den {p}?",
    "Hi! Do you have an open day for the {p} soon?",
    "hello is the {p} accredited??",
)
_APPLICANT = (
    "I submitted my application last week, is there any news?",
    "Which documents do I still need to upload for the {p}?",
    "Hi, I got the offer, how do I accept it?",
    "Can I defer my start of the {p} to the next intake?",
    "Hallo, ich habe meine Unterlagen geschickt, ist alles angekommen?",
)
_STUDENT = (
    "Where can I find the timetable for next week?",
    "I can't access the quiz for module 3 in the app",
    "The app keeps logging me out before I can finish the lesson",
    "Is the library open on Sunday?",
    "Wie kann ich mich für die Prüfung anmelden?",
)
_COMPLAINTS = (
    "This is the third time I'm asking about my transcript, nobody answers!!",
    "Very disappointed with the support so far.",
    "I was charged twice for the application fee, please fix this",
    "Leider habe ich immer noch keine Antwort bekommen.",
)
_THANKS = ("Thanks a lot for your help!", "Great, thank you!", "Danke für die schnelle Antwort 🙏",
           "perfect thx")
_MEDIA = (("Here is my transcript", "image/jpeg"), ("", "image/jpeg"),
          ("Screenshot of the error", "image/png"), ("My passport copy", "application/pdf"))


def emit_whatsapp(p: Person, ctx: ChunkContext) -> None:
    if p.stage == 0 or not p.phone_known:
        return
    rng = ctx.rng
    rand = rng.random
    conversation = rand() < WHATSAPP_SHARE
    burst_question = p.burst_t is not None and rand() < BURST_WHATSAPP_SHARE
    if not (conversation or burst_question):
        return
    r = rand()
    profile = p.first if r < 0.7 else f"{p.first} {p.last}" if r < 0.9 else f"{p.first[0]}. 🎓"
    if conversation:
        _conversation(p, ctx, profile)
    if burst_question:
        t = max(p.burst_t, p.phone_t) + rr(rng, MS_HOUR, 3 * MS_DAY)
        if t < BURST_TO:
            _message(p, ctx, profile, t, pick(rng, _PROSPECT).format(p=p.program.name), None)


def _conversation(p: Person, ctx: ChunkContext, profile: str) -> None:
    rng = ctx.rng
    rand = rng.random
    program = p.program.name
    t = max(p.phone_t or p.inquiry_t, p.inquiry_t) + rr(rng, MS_HOUR, 60 * MS_DAY)
    n = 1 + min(int(rng.expovariate(0.8)), 6)
    stopped = False
    for _ in range(n):
        if t >= T_END - MS_HOUR:
            break
        media = None
        r = rand()
        if stopped:
            body = "START" if r < 0.4 else None
            if body is None:
                break
            stopped = False
        elif r < 0.05:
            body = pick(rng, ("STOP", "Stop", "stop"))
            stopped = True
        elif r < 0.12:
            body, media = pick(rng, _MEDIA)
        elif r < 0.22:
            body = pick(rng, _THANKS)
        elif r < 0.3:
            body = pick(rng, _COMPLAINTS)
        elif p.active_t is not None and t > p.active_t:
            body = pick(rng, _STUDENT)
        elif p.start_t is not None and t > p.start_t:
            body = pick(rng, _APPLICANT).format(p=program)
        else:
            body = pick(rng, _PROSPECT).format(p=program)
        _message(p, ctx, profile, t, body, media)
        t += rr(rng, 2 * MS_MIN, 20 * MS_DAY)


def _message(p: Person, ctx: ChunkContext, profile: str, t: int, body: str, media: str | None) -> None:
    """One inbound message (webhook parameters) sent at ``t``."""
    rng = ctx.rng
    account = ctx.twilio_account_sid
    sender = f"whatsapp:{p.mobile_e164}"
    sid = f"{'MM' if media else 'SM'}{hex_id(rng, 32)}"  # Twilio uses MM for messages with media
    msg = {
        "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": account,
        "From": sender, "To": NORTHBRIDGE_NUMBER, "WaId": p.mobile_e164[1:], "ProfileName": profile,
        "Body": body,
        "NumMedia": "1" if media else "0", "NumSegments": "1" if len(body) <= 160 else "2",
        "MessageType": "image" if media else "text", "SmsStatus": "received", "ApiVersion": "2010-04-01",
    }
    if media:
        msg["MediaUrl0"] = (f"https://api.twilio.com/2010-04-01/Accounts/{account}/Messages/{sid}"
                            f"/Media/ME{hex_id(rng, 32)}")
        msg["MediaContentType0"] = media
        if media == "application/pdf":
            msg["MessageType"] = "document"
    received = t + rr(rng, 200, 3000)
    msg["ReceivedAt"] = iso_s_z(received)
    ctx.sink.event("whatsapp", received, msg, sid, (p.mobile_e164,), WHATSAPP_SPEC)
