"""Mobile app events (Northbridge Learn, iOS and Android).

Only applicants and enrolled students use the app (about 40 % of applicants who did not enroll, 90 % of
the enrolled). A user has one device, sometimes two (phone and tablet). The first session on a device
starts with ``app_open`` without ``user_id``; the ``login`` (with the email, sometimes written with a
case/whitespace variant) sets ``user_id`` from then on, and the device registers its push token. Active
students complete lessons and submit quizzes; some lessons are done offline and sent hours later.
Timestamps carry the device's UTC offset (CET/CEST, or GMT/BST in the UK).

``shared_device``: a device becomes a family tablet used by 2 to 6 people of the same chunk; on it every
session starts with a ``login`` of whoever is using it, so each person's events carry their own user_id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ids import hex_id, pick, rr, uuid4
from .population import Person, email_variant
from .sink import BreakSpec
from .timefmt import MS_DAY, MS_HOUR, MS_MIN, T_END, iso_ms_local

if TYPE_CHECKING:
    from .simulate import ChunkContext

APP_SPEC = BreakSpec(
    droppable=("device_id", "timestamp", "event_name"),
    identifier_of={"device_id": lambda v: v},
    timestamp_field="timestamp",
)
APP_VERSIONS = ("3.4.1", "3.5.0", "3.5.2", "3.6.0")
OS_VERSIONS = {"ios": ("17.2", "17.5", "17.6", "18.0", "18.1", "18.3"), "android": ("12", "13", "14", "15")}
LOGIN_METHODS = ("password", "password", "magic_link", "google", "apple")
_LAST = T_END - 2 * MS_HOUR


class Device:
    __slots__ = ("app_version", "id", "logged_in", "os_version", "platform", "push_done", "shared", "tz")

    def __init__(self, ctx: ChunkContext, p: Person) -> None:
        rng = ctx.rng
        self.id = f"dev_{hex_id(rng, 24)}"
        self.platform = "ios" if rng.random() < 0.45 else "android"
        self.app_version = pick(rng, APP_VERSIONS)
        self.os_version = pick(rng, OS_VERSIONS[self.platform])
        self.tz = p.country.base_utc_offset
        self.logged_in = False
        self.push_done = False
        self.shared = False


def emit_app(p: Person, ctx: ChunkContext) -> None:
    if p.start_t is None:
        return
    rng = ctx.rng
    rand = rng.random
    enrolled = p.accept_t is not None
    if rand() >= (0.85 if enrolled else 0.4):
        return
    start = p.start_t + rr(rng, MS_HOUR, 5 * MS_DAY)
    if p.end_t is not None:
        end = p.end_t + rr(rng, 30 * MS_DAY)
    elif enrolled:
        end = _LAST
    else:
        end = start + rr(rng, 10 * MS_DAY, 60 * MS_DAY)
    end = min(end, _LAST)
    if start >= end:
        return
    devices = [Device(ctx, p)]
    if rand() < 0.2:
        devices.append(Device(ctx, p))
    pool = ctx.shared_devices
    for dev in devices:
        if rand() < ctx.rates.shared_device:
            dev.shared = True
            pool.append([dev, rr(rng, 2, 7) - 1])  # the family members still to come
    family_device = None
    if pool and pool[0][0] not in devices and rand() < 0.5:
        # this person also uses a family device set up by someone earlier in the chunk
        entry = pool[0]
        entry[1] -= 1
        if entry[1] == 0:
            pool.pop(0)
        family_device = entry[0]
        devices.append(family_device)
    n = 1 + rr(rng, 3)
    if p.active_t is not None:
        active_days = (min(end, p.end_t or end) - p.active_t) // MS_DAY
        n += int(active_days / 50 * (0.5 + rand()))
    times = sorted(rr(rng, start, end) for _ in range(n))
    lesson = [0, 0]
    busy_until = 0
    for t in times:
        if t < busy_until:  # one session at a time: the next starts after the previous one ended
            t = busy_until + rr(rng, 5 * MS_MIN, 3 * MS_HOUR)
            if t >= _LAST:
                break
        if family_device is not None:  # the first session is on the family device
            dev, family_device = family_device, None
        else:
            dev = devices[0] if len(devices) == 1 or rand() < 0.6 else pick(rng, devices)
        busy_until = _session(p, ctx, dev, t, lesson)


def _event(ctx: ChunkContext, p: Person, dev: Device, name: str, t: int, user: str | None, props: dict,
           ids: tuple[str, ...], delay: int = 0) -> None:
    rng = ctx.rng
    sent = t + (delay or 200 + int(rng.random() * 2800))
    eid = uuid4(rng)
    ctx.sink.event("app", sent, {
        "event_id": eid, "event_name": name, "device_id": dev.id, "user_id": user, "platform": dev.platform,
        "app_version": dev.app_version, "os_version": dev.os_version, "timestamp": iso_ms_local(t, dev.tz),
        "sent_at": iso_ms_local(sent, dev.tz), "properties": props,
    }, eid, ids, APP_SPEC)


_NO_PROPS: dict = {}


def _session(p: Person, ctx: ChunkContext, dev: Device, t: int, lesson: list[int]) -> int:
    """One app session from ``t``; returns when it ended."""
    rng = ctx.rng
    rand = rng.random
    uid = p.user_id
    with_user = (dev.id, uid)
    just_logged_in = False
    if dev.shared or not dev.logged_in:
        if not dev.shared:
            _event(ctx, p, dev, "app_open", t, None, _NO_PROPS, (dev.id,))
            t += rr(rng, 5_000, 90_000)
        email = email_variant(rng, p.email) if rand() < ctx.rates.email_variant else p.email
        _event(ctx, p, dev, "login", t, uid, {"email": email, "method": pick(rng, LOGIN_METHODS)},
               (dev.id, uid, p.email))
        just_logged_in = not dev.logged_in
        dev.logged_in = True
    else:
        _event(ctx, p, dev, "app_open", t, uid, _NO_PROPS, with_user)
    if just_logged_in and not dev.push_done and rand() < 0.7:
        dev.push_done = True
        t += rr(rng, 1_000, 20_000)
        token = hex_id(rng, 64) if dev.platform == "ios" else f"{hex_id(rng, 11)}:APA91b{hex_id(rng, 56)}"
        _event(ctx, p, dev, "push_token_registered", t, uid, {"push_token": token}, with_user)
    if p.active_t is None or t < p.active_t or (p.end_t is not None and t > p.end_t):
        return t
    course = p.program.key
    r = rand()
    n_lessons = 0 if r < 0.2 else 1 if r < 0.65 else 2 if r < 0.9 else 3
    offline = rand() < 0.1  # studied on the train: the events are sent when the device is back online
    for _ in range(n_lessons):
        duration = rr(rng, 120, 2400)
        t += duration * 1000
        lesson[0] += 1
        _event(ctx, p, dev, "lesson_completed", t, uid,
               {"course": course, "lesson_id": f"{course}-l{lesson[0]:02d}", "duration_s": duration},
               with_user,
               rr(rng, 10 * MS_MIN, 12 * MS_HOUR) if offline else 0)
    if n_lessons and rand() < 0.35:
        t += rr(rng, 60_000, 900_000)
        lesson[1] += 1
        _event(ctx, p, dev, "quiz_submitted", t, uid,
               {"course": course, "quiz_id": f"{course}-q{lesson[1]:02d}",
                "score": round(rng.betavariate(5, 2), 2)},
               with_user, rr(rng, 10 * MS_MIN, 12 * MS_HOUR) if offline else 0)
    return t
