"""Simulation clock and fast timestamp formatting.

Simulated time is an ``int`` of milliseconds since ``2025-09-01T00:00:00Z`` (``T0``); the simulated
period ends at ``2026-11-01``. Formatting goes through pre-computed day and time-of-day tables because
``datetime.strftime`` per event would dominate the run time at 10M records.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2025, 9, 1, tzinfo=UTC)
T0_UNIX = int(T0.timestamp())
MS_MIN = 60_000
MS_HOUR = 3_600_000
MS_DAY = 86_400_000
PERIOD_DAYS = 426  # 2025-09-01 .. 2026-11-01
T_END = PERIOD_DAYS * MS_DAY

# Central European and UK summer time (UTC offset +1 h) inside the period, as [start, end) in ms since T0.
_SUMMER = ((-MS_DAY * 400, 4_755_600_000), (18_061_200_000, 36_205_200_000))

_DAY_OFFSET = 60  # the tables start 60 days before T0 so a slightly negative time still formats
_DAYS = [(T0 + timedelta(days=d - _DAY_OFFSET)).strftime("%Y-%m-%d") for d in range(PERIOD_DAYS + 400)]
# "YYYY-MM-DDTHH:" per hour, "MM:SS" per second of the hour, ".mmm" per millisecond: formatting is then
# three list lookups and one f-string (strftime per event would dominate the run time)
_H0 = _DAY_OFFSET * 24
_HOURS = [f"{day}T{h:02d}:" for day in _DAYS for h in range(24)]
_MMSS = [f"{m:02d}:{s:02d}" for m in range(60) for s in range(60)]
_MS3 = [f".{i:03d}" for i in range(1000)]
# 1 where European summer time applies to the hour starting at that index (switches are at 01:00 UTC)
_DST = bytes(
    any(start <= (h - _H0) * MS_HOUR < end for start, end in _SUMMER) for h in range(len(_HOURS))
)
_OFFSETS = ("+00:00", "+01:00", "+02:00")


def iso_ms_z(t_ms: int) -> str:
    """``2026-03-01T10:15:30.123Z`` (web clickstream)."""
    s = t_ms // 1000
    return f"{_HOURS[s // 3600 + _H0]}{_MMSS[s % 3600]}{_MS3[t_ms % 1000]}Z"


def iso_s_z(t_ms: int) -> str:
    """``2026-03-01T10:15:30Z`` (Twilio receiver stamp)."""
    s = t_ms // 1000
    return f"{_HOURS[s // 3600 + _H0]}{_MMSS[s % 3600]}Z"


def sf_bulk(t_ms: int) -> str:
    """Salesforce Bulk API CSV datetime ``2026-03-01T10:15:30.000Z``."""
    s = t_ms // 1000
    return f"{_HOURS[s // 3600 + _H0]}{_MMSS[s % 3600]}.000Z"


def sf_rest(t_ms: int) -> str:
    """Salesforce REST datetime ``2026-03-01T10:15:30.000+0000``."""
    s = t_ms // 1000
    return f"{_HOURS[s // 3600 + _H0]}{_MMSS[s % 3600]}.000+0000"


def utc_offset_hours(t_ms: int, base_offset: int) -> int:
    """UTC offset of a European clock (``base_offset`` 0 for the UK, 1 for CET) at ``t_ms``."""
    return base_offset + _DST[t_ms // MS_HOUR + _H0]


def iso_ms_local(t_ms: int, base_offset: int) -> str:
    """``2026-03-01T11:15:30.123+01:00``: the device's local time with its UTC offset (mobile app)."""
    s = t_ms // 1000
    h = s // 3600 + _H0
    off = base_offset + _DST[h]
    return f"{_HOURS[h + off]}{_MMSS[s % 3600]}{_MS3[t_ms % 1000]}{_OFFSETS[off]}"


def unix_seconds(t_ms: int) -> int:
    return T0_UNIX + t_ms // 1000


def break_iso(value: str) -> str:
    """Make an ISO timestamp unparseable while keeping it unique: the hour becomes 24..47."""
    return f"{value[:11]}{int(value[11:13]) + 24}{value[13:]}"
