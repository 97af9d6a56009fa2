"""The student journey: inquiry -> application -> enrollment -> active -> alumni (or withdrawn).

Per person (fractions are of the whole population unless said otherwise):

* about 90 % find Northbridge on the web; the other 10 % enter the CRM offline (education fair, agent,
  phone call) and may still apply, enroll and use the app.
* of the web visitors, ``anonymous_only_visitors`` (33 %) never submit a form; 15 % of those leave their
  details at a fair instead (a CRM contact that stays an inquiry), the rest remain anonymous visitors.
* everyone else with a CRM contact is an inquiry (100 %); of those about 55 % start an application,
  about 30 % accept an offer and enroll. Of the enrolled most become active students, some graduate
  (alumni, mostly Executive Education, which is short) and some withdraw.
* dates are spread over 2025-09-01 .. 2026-11-01; a step that would fall after the end of the period is
  simply not reached yet, which is what a real snapshot looks like.
* the MBA's January intake closes soon after the end of the period: ``RESEARCH_BURST_SHARE`` of the MBA
  inquiries who know the website are back researching it in the last week (``Person.burst_t``: from when;
  :mod:`.web` emits the sessions, :mod:`.whatsapp` the questions some of them ask). That is the current
  high intent the segment ``high_intent_mba_prospect`` and the WhatsApp advisor sync act on.
"""

from __future__ import annotations

import random

from .ids import rr
from .population import Person
from .rates import MessRates
from .timefmt import MS_DAY, MS_HOUR, MS_MIN, T_END

STAGES = ("Inquiry", "Application Started", "Application Submitted", "Offer Made", "Offer Accepted")
# Stage index on Person.stage: 0 = no CRM contact (anonymous visitor), 1..5 = STAGES[stage - 1].
ENROLLMENT = ("Not Enrolled", "Enrolled", "Active", "Alumni", "Withdrawn")

WEB_SHARE = 0.9
OFFLINE_SHARE_OF_ANONYMOUS = 0.15
# Furthest stage reached by a progressing contact: inquiry only, started, submitted, offer made, accepted.
_STAGE_CUM = (0.45, 0.55, 0.63, 0.70, 1.0)
# Final enrollment status of those who accepted: enrolled (not started), active, alumni, withdrawn.
_ENROLL_CUM = (0.12, 0.75, 0.87, 1.0)
_LAST = T_END - MS_HOUR  # nothing happens in the last hour: late deliveries still fit into the period
# About 4 % of all inquiries (a fifth of them are MBA inquiries who know the website).
RESEARCH_BURST_SHARE = 0.18
# The burst's sessions fall in [BURST_FROM, BURST_TO]: inside the 7 days before the data's as-of moment, with
# margins. As-of is the latest event (cdp.as_of): in the last hours of the period (19:48 on 2026-10-31 at 10,000
# people), and never before the burst's own page views.
BURST_FROM = T_END - 6 * MS_DAY - 12 * MS_HOUR
BURST_TO = T_END - 6 * MS_HOUR


def plan_journey(p: Person, rng: random.Random, rates: MessRates) -> None:
    """Fill the journey attributes of ``p`` (channel, stage reached, dates of each step)."""
    rand = rng.random
    p.web = rand() < WEB_SHARE
    p.anon_only = p.web and rand() < rates.anonymous_only_visitors
    p.offline = (not p.web) or (p.anon_only and rand() < OFFLINE_SHARE_OF_ANONYMOUS)
    p.start_t = p.submit_t = p.offer_t = p.accept_t = p.active_t = p.end_t = None
    p.enrollment = "Not Enrolled"
    p.burst_t = None
    if p.anon_only and not p.offline:
        p.stage = 0
    elif p.anon_only:
        p.stage = 1  # a fair contact whose web browsing stays anonymous does not apply in this period
    else:
        r = rand()
        p.stage = 1 + sum(r >= c for c in _STAGE_CUM[:-1])
    # people who get further started earlier, so that most of their journey fits into the period
    horizon = 200 if p.stage == 5 else 250 if p.stage >= 2 else 390
    p.first_touch = rr(rng, 0, horizon * MS_DAY)
    p.inquiry_t = p.first_touch + (rr(rng, 0, 21 * MS_DAY) if p.web else 0)
    p.crm_created_t = p.inquiry_t + (rr(rng, MS_MIN, 30 * MS_MIN) if p.stage else 0)
    if p.stage < 2:
        _plan_burst(p, rng)
        return
    reached = 1
    t = p.inquiry_t
    steps = ((3, 45), (2, 25), (7, 30), (3, 20))
    for target, (lo, hi) in zip(range(2, 6), steps, strict=True):
        if p.stage < target:
            break
        t += rr(rng, lo * MS_DAY, hi * MS_DAY) + rr(rng, MS_DAY)
        if t > _LAST:
            break
        reached = target
        if target == 2:
            p.start_t = t
        elif target == 3:
            p.submit_t = t
        elif target == 4:
            p.offer_t = t
        else:
            p.accept_t = t
    p.stage = reached
    if reached < 5:
        if reached == 1:  # the application would start after the end of the period: still an inquiry
            _plan_burst(p, rng)
        return
    p.enrollment = "Enrolled"
    r = rand()
    final = sum(r >= c for c in _ENROLL_CUM[:-1])  # 0 enrolled, 1 active, 2 alumni, 3 withdrawn
    if final == 0:
        return
    t = p.accept_t + rr(rng, 7 * MS_DAY, 45 * MS_DAY)
    if t > _LAST:
        return
    p.active_t = t
    p.enrollment = "Active"
    if final == 1:
        return
    if final == 2:
        lo, hi = (20, 90) if p.program.key == "executive-education" else (40, 180)
    else:
        lo, hi = 14, 150
    t += rr(rng, lo * MS_DAY, hi * MS_DAY)
    if t > _LAST:
        return
    p.end_t = t
    p.enrollment = ENROLLMENT[3] if final == 2 else ENROLLMENT[4]


def _plan_burst(p: Person, rng: random.Random) -> None:
    """Whether an inquiry is back on the MBA pages in the last week, and from when (``p.burst_t``)."""
    if p.stage != 1 or not p.web or p.program.key != "mba" or rng.random() >= RESEARCH_BURST_SHARE:
        return
    start = max(BURST_FROM, p.crm_created_t + MS_HOUR)  # a fresh inquiry researches after inquiring
    if start <= BURST_TO - MS_DAY:
        p.burst_t = start
