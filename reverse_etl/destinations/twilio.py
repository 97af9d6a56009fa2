"""The Twilio destination: WhatsApp (or SMS) messages from approved templates, each sent exactly once, with the
twilio library.

Configuration (environment, ARCHITECTURE.md): `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`, and the sender:
`TWILIO_FROM_WHATSAPP` (`whatsapp:+E164` or `+E164`) for the whatsapp channel, `TWILIO_FROM_SMS` for sms.
`TWILIO_API_BASE_URL` (optional) sends every request for https://api.twilio.com and https://content.twilio.com to
another base URL (the local emulator): the SDK builds Twilio's URLs whatever `edge`/`region` say, so its HTTP
client rewrites them. The same client counts each request in the ApiBudget before it is sent.

Sync options (reverse_etl/syncs.yml): `channel` (whatsapp | sms), `content_sid` (an approved template, HX + 32 hex:
sent as ContentSid + ContentVariables; without it Body is sent as a freeform message), `max_messages_per_profile`
(1) and `frequency_window_days` (7): the frequency cap; `quiet_hours` ("21:00-08:00", or "off") and
`default_timezone` ("Europe/Berlin"); `consent_statuses` (default: whatsapp opted_in or implied -- gold's
can_contact for the channel --, sms opted_in only); `status_poll_limit` (200).

What a message needs (issue 7), in the order they are checked per record:
1. Exactly once per profile and trigger. `reverse_etl.message_sends` (in the warehouse, through a cursor of the
   runner's connection: `ApiBudget.con`) holds one row per send_key = sync|profile|trigger (the IdempotencyKey).
   Before calling Twilio the row is written with status `intent` and committed; after the call it becomes `sent`
   (with the message SID), `failed` (Twilio refused it: nothing was sent) or `unknown` (the answer was lost or a 5xx:
   it may have been sent). A key found `sent` is answered from the table. A key found `intent` or `unknown` (a crash,
   a lost answer) is reconciled first: the recipient's latest messages (`messages.list(to=..., page_size=50)`, one
   request) are searched for one from our sender, with the expected text (the payload's Body, or the template
   rendered with the record's ContentVariables) and created at or after attempted_at - 2 s, not claimed by another
   send_key. Found: the row becomes `sent` and nothing is sent again. Not found: it is sent.
2. Consent: the payload model only selects profiles whose consent allows contact; the destination checks again the
   consent the record carries (`Consent`, the payload's consent status for the channel) and refuses a record without
   it, or with another status, with the per-record code NO_CONSENT (defence in depth). check() fails when the sync
   does not map Consent at all.
3. Quiet hours per profile: local time from the record's `Timezone` (IANA), else its `Country` (ISO 3166 alpha-2 or
   English name, the country's first zone), else `default_timezone`. Inside the window the record is deferred with
   the per-record code QUIET_HOURS: the runner sends it on a later run. `TWILIO_QUIET_HOURS` in the environment
   (a window, or "off") overrides the option of every Twilio sync: an operator's switch, and what `cdp demo` sets
   ("off") so that the demo's messages go out whatever the hour.
4. Frequency cap: at most `max_messages_per_profile` messages (sent, or possibly sent: intent, unknown) per profile
   -- or per number: either matches -- and channel, over all syncs, in the rolling window; otherwise FREQUENCY_CAP
   (deferred: later runs try again).

Delivery statuses, at the start of each run (`start()`, which the runner calls first, so the calls count in the
run's api_calls), into message_sends (delivery_status, and each change with time, error code and source appended to
status_history as JSON):
1. Status callbacks: with `TWILIO_STATUS_CALLBACK_URL` set (the API's public `.../webhooks/twilio/status`), every
   message is created with that StatusCallback; the API writes what Twilio posts (reverse_etl/status_callbacks.py)
   and the run records it (source "callback"), so that `read` after `delivered` is seen too.
2. Polling, for what no callback settled: `messages(sid).fetch()` for up to `status_poll_limit` sent messages of the
   last 7 days without a final status (delivered, read, undelivered, failed, canceled), source "poll". Best effort:
   an error or a spent budget ends it for the run.

Quiet hours and the frequency cap are deferrals, not failures (reverse_etl/base.py, DEFERRED_RECORD_CODES): the
runner neither resends them within the run nor counts them as attempts, and reports them as `deferred`.

Errors: 429 and 5xx -> RetryableError (the runner resends the batch: records already sent are answered from
message_sends); a lost connection -> RetryableError after marking the record `unknown`; 401/403/404 ->
DestinationError; 400 refusals (21211 invalid number, 21610 opted out, 63016 outside the WhatsApp window, 21656 bad
ContentVariables, 63027 template not approved...) -> per-record errors with Twilio's code.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import sleep as _sleep
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from connectors.landing import default_landing_root
from orchestration.quality.gate_4 import DestinationField
from reverse_etl import status_callbacks
from reverse_etl.base import (
    ApiBudget,
    BudgetExhausted,
    DestinationError,
    DestinationNotConfigured,
    Mode,
    Record,
    RecordResult,
    RetryableError,
)
from reverse_etl.config import CATALOGUES
from reverse_etl.state import SCHEMA

if TYPE_CHECKING:
    import duckdb

    from reverse_etl.config import SyncConfig

log = logging.getLogger("cdp.reverse_etl.twilio")

MESSAGE_SENDS = f"{SCHEMA}.message_sends"
TWILIO_HOSTS = ("https://api.twilio.com", "https://content.twilio.com")
TIMEOUT = 30.0  # seconds per request; the SDK's default waits forever
MAX_BATCH = 50  # messages are sent one request each; a small batch keeps the runner's bookkeeping frequent
RECONCILE_PAGE = 50  # the recipient's latest messages searched for a lost send
RECONCILE_SLACK = timedelta(seconds=2)  # Twilio's date_created has whole seconds; clocks differ a little
STATUS_POLL_DAYS = 7
# how far a message got: a status callback never moves delivery_status back (they may arrive out of order)
STATUS_RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3, "delivered": 4, "read": 5,
               "undelivered": 5, "failed": 5, "canceled": 5}
FINAL_DELIVERY_STATUSES = frozenset({"delivered", "read", "undelivered", "failed", "canceled", "not_found"})
POSSIBLY_SENT = ("sent", "intent", "unknown")  # what the frequency cap counts

CHANNELS = ("whatsapp", "sms")
SENDER_VARIABLES = {"whatsapp": "TWILIO_FROM_WHATSAPP", "sms": "TWILIO_FROM_SMS"}
DEFAULT_CONSENT_STATUSES = {"whatsapp": ("opted_in", "implied"), "sms": ("opted_in",)}
DEFAULT_OPTIONS: dict[str, Any] = {
    "channel": "whatsapp",
    "content_sid": None,
    "max_messages_per_profile": 1,
    "frequency_window_days": 7,
    "quiet_hours": "21:00-08:00",
    "default_timezone": "Europe/Berlin",
    "consent_statuses": None,
    "status_poll_limit": 200,
}

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CONTENT_SID = re.compile(r"^HX[0-9a-f]{32}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")  # Twilio's template variables: {{1}}, {{first_name}}
_QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")

DDL = (
    f"create schema if not exists {SCHEMA}",
    f"""create table if not exists {MESSAGE_SENDS} (
        send_key varchar not null,
        sync varchar not null,
        profile_id varchar,
        trigger_key varchar not null,
        channel varchar not null,
        "to" varchar not null,
        from_address varchar not null,
        content_sid varchar,
        status varchar not null,
        message_sid varchar,
        attempts bigint not null,
        attempted_at timestamp not null,
        sent_at timestamp,
        error_code varchar,
        error_message varchar,
        delivery_status varchar,
        delivery_checked_at timestamp,
        status_history varchar,
        updated_at timestamp not null
    )""",
)


def ensure_message_sends(con: duckdb.DuckDBPyConnection) -> None:
    """Create reverse_etl.message_sends if it is missing (idempotent)."""
    for statement in DDL:
        con.execute(statement)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the warehouse stores naive UTC


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


# ----------------------------------------------------------------------------------------------------------------
# Quiet hours


def parse_quiet_hours(value: Any) -> tuple[time, time] | None:
    """'21:00-08:00' -> (21:00, 08:00); None / 'off' / false -> None (no quiet hours)."""
    if value in (None, False, "off", ""):
        return None
    match = _QUIET_HOURS.match(str(value).strip())
    if not match:
        raise ValueError(f"quiet_hours {value!r} is not HH:MM-HH:MM (e.g. 21:00-08:00) or off")
    start = time(int(match.group(1)), int(match.group(2)))
    end = time(int(match.group(3)), int(match.group(4)))
    if start == end:
        raise ValueError(f"quiet_hours {value!r}: start and end are equal")
    return start, end


def in_quiet_hours(local: datetime, window: tuple[time, time] | None) -> bool:
    """Whether the local wall-clock time is inside [start, end); a window may wrap midnight (21:00-08:00)."""
    if window is None:
        return False
    start, end = window
    now = local.time().replace(tzinfo=None)
    return (start <= now or now < end) if start > end else start <= now < end


def _country_zones() -> tuple[dict[str, list[str]], dict[str, str]]:
    try:
        import pytz  # a dependency of dagster and dbt-core; only its country tables are used
    except ImportError:  # pragma: no cover - without it countries fall back to the default zone
        return {}, {}
    zones = {code.upper(): list(names) for code, names in pytz.country_timezones.items()}
    names = {name.lower(): code.upper() for code, name in pytz.country_names.items()}
    return zones, names


_COUNTRY_ZONES, _COUNTRY_NAMES = _country_zones()


def profile_timezone(timezone: Any, country: Any, default: ZoneInfo) -> tuple[ZoneInfo, str]:
    """The zone to judge quiet hours in and where it came from: an IANA `timezone`, else the `country` (alpha-2
    code or English name: the country's first zone, e.g. America/New_York for US), else `default`."""
    name = _text(timezone)
    if name:
        try:
            return ZoneInfo(name), f"timezone {name}"
        except (ZoneInfoNotFoundError, ValueError):
            log.warning(f"unknown timezone {name!r}; using the country or the default zone")
    text = _text(country)
    if text:
        code = text.upper() if len(text) == 2 else _COUNTRY_NAMES.get(text.lower(), "")
        zones = _COUNTRY_ZONES.get(code)
        if zones:
            return ZoneInfo(zones[0]), f"country {text} ({zones[0]})"
    return default, f"default {default.key}"


def render_template(text: str, variables: Mapping[str, Any]) -> str | None:
    """The template's text with its {{n}} placeholders filled as Twilio does; None when one is missing."""
    if any(name not in variables for name in _PLACEHOLDER.findall(text)):
        return None
    return _PLACEHOLDER.sub(lambda match: str(variables[match.group(1)]), text)


# ----------------------------------------------------------------------------------------------------------------
# Connection


class _BudgetedHttpClient(TwilioHttpClient):
    """The SDK's HTTP client: counts each request in the budget before it is sent and, with a base URL, sends
    Twilio's hosts there (TWILIO_API_BASE_URL). No retries of its own: a lost answer must surface, since the message
    may have been created; message_sends decides what to resend."""

    def __init__(self, before_request: Callable[[], None] | None, base_url: str | None) -> None:
        super().__init__(timeout=TIMEOUT)
        self.before_request = before_request
        self.base_url = base_url.rstrip("/") if base_url else None

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        if self.before_request is not None:
            self.before_request()  # BudgetExhausted here: nothing was sent
        if self.base_url:
            for host in TWILIO_HOSTS:
                if url.startswith(host):
                    url = self.base_url + url[len(host):]
                    break
        return super().request(method, url, *args, **kwargs)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


@dataclass(frozen=True)
class _Settings:
    account_sid: str
    auth_token: str
    sender: str  # From: whatsapp:+E164 or an SMS sender
    base_url: str | None
    status_callback_url: str | None = None  # TWILIO_STATUS_CALLBACK_URL: the API's /webhooks/twilio/status


def _settings(env: Mapping[str, str], channel: str) -> _Settings:
    """The TWILIO_* settings of `channel`, checked; DestinationNotConfigured names what to set."""
    sender_variable = SENDER_VARIABLES[channel]
    names = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", sender_variable)
    values = {name: _text(env.get(name)) for name in (*names, "TWILIO_API_BASE_URL", "TWILIO_STATUS_CALLBACK_URL")}
    missing = [name for name in names if not values[name]]
    if missing:
        raise DestinationNotConfigured(
            f"twilio is not configured: set {', '.join(missing)} (the account SID and auth token of the Twilio "
            f"console, and the {channel} sender)"
        )
    if not _ACCOUNT_SID.match(values["TWILIO_ACCOUNT_SID"]):
        raise DestinationError(f"TWILIO_ACCOUNT_SID={values['TWILIO_ACCOUNT_SID']!r} is not an account SID "
                               "(AC followed by 32 hex digits, from the Twilio console)")
    sender = values[sender_variable]
    if channel == "whatsapp":
        number = sender.removeprefix("whatsapp:")
        if not _E164.match(number):
            raise DestinationError(f"{sender_variable}={sender!r} is not a WhatsApp sender: use whatsapp:+<E.164 "
                                   "number>, e.g. whatsapp:+14155238886")
        sender = f"whatsapp:{number}"
    base_url = values["TWILIO_API_BASE_URL"] or None
    if base_url and not re.match(r"^https?://[^/\s]+", base_url):
        raise DestinationError(f"TWILIO_API_BASE_URL={base_url!r} is not a URL: use e.g. http://127.0.0.1:8090")
    callback = values["TWILIO_STATUS_CALLBACK_URL"] or None
    if callback and not re.match(r"^https?://[^/\s]+/\S*$", callback):
        raise DestinationError(f"TWILIO_STATUS_CALLBACK_URL={callback!r} is not a URL: use the API's public "
                               "https://<host>/webhooks/twilio/status")
    return _Settings(values["TWILIO_ACCOUNT_SID"], values["TWILIO_AUTH_TOKEN"], sender, base_url, callback)


def twilio_client(env: Mapping[str, str] | None = None) -> Client:
    """A twilio Client from TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_API_BASE_URL (optional), for reads
    outside a sync (the demo's summary, support scripts); it spends no budget. DestinationNotConfigured names the
    variables to set."""
    env = os.environ if env is None else env
    values = {name: _text(env.get(name)) for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL")}
    missing = [name for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN") if not values[name]]
    if missing:
        raise DestinationNotConfigured(f"twilio is not configured: set {', '.join(missing)}")
    http = _BudgetedHttpClient(None, values["TWILIO_API_BASE_URL"] or None)
    return Client(values["TWILIO_ACCOUNT_SID"], values["TWILIO_AUTH_TOKEN"], http_client=http)


@dataclass(frozen=True)
class _Options:
    channel: str
    content_sid: str | None
    max_messages: int
    window: timedelta
    quiet_hours: tuple[time, time] | None
    default_zone: ZoneInfo
    consent_statuses: frozenset[str]
    status_poll_limit: int


def _options(sync: SyncConfig) -> _Options:
    """The sync's options, checked; DestinationError lists every problem."""
    raw = dict(sync.options or {})
    problems = [f"unknown option {name} (allowed: {', '.join(DEFAULT_OPTIONS)})"
                for name in sorted(set(raw) - set(DEFAULT_OPTIONS))]
    values = {**DEFAULT_OPTIONS, **raw}
    channel = values["channel"]
    if channel not in CHANNELS:
        problems.append(f"channel {channel!r} is not one of {', '.join(CHANNELS)}")
        channel = "whatsapp"
    content_sid = values["content_sid"]
    if content_sid is not None and not (isinstance(content_sid, str) and _CONTENT_SID.match(content_sid)):
        problems.append(f"content_sid {content_sid!r} is not a Content SID (HX followed by 32 hex digits, from the "
                        "Content Template Builder)")
    numbers = {}
    for name in ("max_messages_per_profile", "frequency_window_days", "status_poll_limit"):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < (0 if "poll" in name else 1):
            problems.append(f"{name} {value!r} is not a positive number")
            value = DEFAULT_OPTIONS[name]
        numbers[name] = value
    override = os.environ.get("TWILIO_QUIET_HOURS", "").strip()
    try:
        quiet = parse_quiet_hours(override or values["quiet_hours"])
    except ValueError as error:
        problems.append(f"{error}{' (TWILIO_QUIET_HOURS)' if override else ''}")
        quiet = None
    try:
        zone = ZoneInfo(str(values["default_timezone"]))
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"default_timezone {values['default_timezone']!r} is not an IANA time zone "
                        "(e.g. Europe/Berlin)")
        zone = ZoneInfo("Europe/Berlin")
    statuses = values["consent_statuses"] or DEFAULT_CONSENT_STATUSES[channel]
    if isinstance(statuses, str) or not all(isinstance(s, str) for s in statuses):
        problems.append(f"consent_statuses {statuses!r} is not a list of consent statuses (e.g. [opted_in])")
        statuses = DEFAULT_CONSENT_STATUSES[channel]
    if problems:
        raise DestinationError(f"sync {sync.name}: options: " + "; ".join(problems) + " (reverse_etl/syncs.yml)")
    return _Options(
        channel=channel,
        content_sid=content_sid,
        max_messages=int(numbers["max_messages_per_profile"]),
        window=timedelta(days=float(numbers["frequency_window_days"])),
        quiet_hours=quiet,
        default_zone=zone,
        consent_statuses=frozenset(statuses),
        status_poll_limit=int(numbers["status_poll_limit"]),
    )


# ----------------------------------------------------------------------------------------------------------------
# The destination


@dataclass
class _Send:
    """A row of message_sends."""

    send_key: str
    status: str
    message_sid: str | None
    to: str
    attempted_at: datetime
    attempts: int


class TwilioDestination:
    """Messages through Twilio's Messaging API, exactly once per profile and trigger (see the module docstring)."""

    name = "twilio"

    def __init__(self, sync: SyncConfig, budget: ApiBudget, *, env: Mapping[str, str] | None = None) -> None:
        self.sync = sync
        self.budget = budget
        self.options = _options(sync)
        self.settings = _settings(os.environ if env is None else env, self.options.channel)
        self.http = _BudgetedHttpClient(budget.spend, self.settings.base_url)
        self.client = Client(self.settings.account_sid, self.settings.auth_token, http_client=self.http)
        # A cursor is a second connection to the runner's database with its own transactions: each bookkeeping
        # statement commits at once (the intent is durable before Twilio is called), whatever the runner holds.
        self.con = budget.con.cursor()
        ensure_message_sends(self.con)
        self._template_text: str | None = None
        self.statuses_polled = 0
        self.callbacks_recorded = 0

    def start(self) -> None:
        """Called by the runner at the start of a run (after it notes the budget, so these calls count in the
        run's api_calls): record the status callbacks the API received, then poll the delivery statuses of recent
        messages still without a final one."""
        self.callbacks_recorded = self.record_callbacks()
        self.statuses_polled = self.refresh_statuses()

    # -- the interface ---------------------------------------------------------------------------------------

    def fields(self, object: str) -> dict[str, DestinationField]:
        self._object(object)
        return dict(CATALOGUES["twilio"]["Message"])

    def max_batch(self, object: str, mode: Mode) -> int:
        return MAX_BATCH

    def check(self) -> None:
        """One authenticated call: the template (credentials, and that content_sid exists for this account), or the
        account without a template. Also refuses a sync that does not map the consent to re-check."""
        if "Consent" not in self.sync.mapping:
            raise DestinationError(
                f"sync {self.sync.name} does not map Consent: the destination re-checks each message's consent, so "
                "map the payload's consent status column (e.g. Consent: whatsapp_consent) in reverse_etl/syncs.yml"
            )
        try:
            if self.options.content_sid:
                self._template()
            else:
                self.client.api.v2010.accounts(self.settings.account_sid).fetch()
        except BudgetExhausted:
            return  # nothing can be sent today: the first write raises it again and the run stops cleanly
        except TwilioRestException as error:
            if error.status == 404 and self.options.content_sid:
                raise DestinationError(
                    f"the template {self.options.content_sid} (option content_sid of sync {self.sync.name}) does not "
                    "exist for this account: use the SID of an approved template from the Content Template Builder"
                ) from error
            raise self._whole_call_error(error, "checking the connection", transient_as=DestinationError) from error
        except requests.RequestException as error:
            raise DestinationError(f"cannot reach Twilio at {self.settings.base_url or TWILIO_HOSTS[0]}: "
                                   f"{type(error).__name__}: {error}") from error

    def write(self, object: str, records: list[Record], mode: Mode) -> list[RecordResult]:
        self._object(object)
        if mode != "insert":
            raise DestinationError(f"twilio sends messages (mode insert); a message cannot be {mode}ed")
        return [self._write_one(record) for record in records]

    def delete(self, object: str, records: list[Record]) -> list[RecordResult]:
        raise DestinationError("a sent message cannot be recalled: twilio syncs run in insert mode only")

    def close(self) -> None:
        self.http.close()
        self.con.close()

    # -- one message -----------------------------------------------------------------------------------------

    def _write_one(self, record: Record) -> RecordResult:
        fields = record.fields
        to = _text(fields.get("To"))
        if not to:
            return self._refuse(record, "21604", "A 'To' phone number is required (the record has no To)")
        if not _E164.match(to):
            return self._refuse(record, "21211", f"The 'To' number {to} is not a valid phone number (E.164)")
        profile = _text(fields.get("ProfileId")) or to
        send_key = f"{self.sync.name}|{profile}|{record.key}"
        previous = self._load(send_key)
        if previous is not None and previous.status == "sent":
            return RecordResult(record.key, True, destination_id=previous.message_sid)  # a resent batch
        if previous is not None and previous.status in ("intent", "unknown"):
            found = self._reconcile(previous, fields)
            if found is not None:
                self._mark_sent(send_key, found, source="reconcile")
                return RecordResult(record.key, True, destination_id=found.sid)
            self._set_status(send_key, "failed", "NOT_SENT", "reconciled: no such message on Twilio")

        refusal = self._consent_refusal(fields)
        if refusal:
            return self._refuse(record, "NO_CONSENT", refusal)
        zone, source = profile_timezone(fields.get("Timezone"), fields.get("Country"), self.options.default_zone)
        local = datetime.now(UTC).astimezone(zone)
        if in_quiet_hours(local, self.options.quiet_hours):
            start, end = self.options.quiet_hours or (time(), time())
            return RecordResult(record.key, False, error_code="QUIET_HOURS", message=(
                f"quiet hours {start:%H:%M}-{end:%H:%M} for this profile ({source}, local time {local:%H:%M}): "
                "deferred to a later run"))
        sent = self._recent_sends(send_key, profile, to)
        if sent >= self.options.max_messages:
            days = self.options.window.total_seconds() / 86_400
            return self._refuse(record, "FREQUENCY_CAP", (
                f"frequency cap: this profile got {sent} message(s) in the last {days:g} days (at most "
                f"{self.options.max_messages}); not sent now, a later run tries again"))

        request: dict[str, Any] = {"to": self._address(to), "from_": self.settings.sender}
        if self.settings.status_callback_url:
            request["status_callback"] = self.settings.status_callback_url
        if self.options.content_sid:
            variables = self._variables(fields.get("ContentVariables"))
            if variables is None:
                return self._refuse(record, "21656", "The ContentVariables Parameter is invalid: expected a JSON "
                                                     "object of the template's variables")
            request.update(content_sid=self.options.content_sid, content_variables=json.dumps(variables))
        else:
            body = _text(fields.get("Body"))
            if not body:
                return self._refuse(record, "21602", "Message body is required (no Body and no content_sid)")
            request["body"] = body

        self._write_intent(send_key, previous, profile, record.key, to)
        try:
            message = self.client.messages.create(**request)
        except BudgetExhausted:
            self._set_status(send_key, "failed", "BUDGET", "the daily API budget was spent before the request")
            raise
        except TwilioRestException as error:
            return self._twilio_refusal(record, send_key, error)
        except requests.RequestException as error:
            # the request may have been applied (e.g. the answer was lost): reconciled on the next attempt
            self._set_status(send_key, "unknown", type(error).__name__, str(error)[:500])
            raise RetryableError(f"twilio: the answer to a message was lost ({type(error).__name__}); the "
                                 "message is reconciled before it is sent again") from error
        self._mark_sent(send_key, message, source="create")
        return RecordResult(record.key, True, destination_id=message.sid)

    def _consent_refusal(self, fields: Mapping[str, Any]) -> str | None:
        if "Consent" not in fields:
            return ("the record carries no consent (map the payload's consent column to Consent): not sent without "
                    "current consent")
        value = fields["Consent"]
        if value is True or (isinstance(value, str) and value.strip() in self.options.consent_statuses):
            return None
        allowed = ", ".join(sorted(self.options.consent_statuses))
        return (f"current {self.options.channel} consent is {value!r}, not one of {allowed}: the profile may not be "
                "contacted on this channel")

    def _twilio_refusal(self, record: Record, send_key: str, error: TwilioRestException) -> RecordResult:
        code = str(error.code or error.status)
        if error.status == 429 or error.status >= 500:
            # a 5xx may have been applied; a 429 was not, but reconciling it costs one list at most
            self._set_status(send_key, "failed" if error.status == 429 else "unknown", code, error.msg)
            raise self._whole_call_error(error, "sending a message")
        self._set_status(send_key, "failed", code, error.msg)
        if error.status in (401, 403, 404):
            raise self._whole_call_error(error, "sending a message")
        return self._refuse(record, code, _message(error))

    def _whole_call_error(self, error: TwilioRestException, doing: str,
                          transient_as: type[Exception] = RetryableError) -> Exception:
        text = f"twilio answered {error.status} (error {error.code}) {doing}: {_message(error)}"
        if error.status == 429 or error.status >= 500:
            later = "the runner retries" if transient_as is RetryableError else "the next run tries again"
            return transient_as(f"{text} (transient: {later})")
        if error.status == 401:
            return DestinationError(text + ": check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        return DestinationError(text)

    @staticmethod
    def _refuse(record: Record, code: str, message: str) -> RecordResult:
        return RecordResult(record.key, False, error_code=code, message=message)

    def _address(self, number: str) -> str:
        return f"whatsapp:{number}" if self.options.channel == "whatsapp" else number

    @staticmethod
    def _variables(value: Any) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(_text(value) or "{}")
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    # -- reconciliation ---------------------------------------------------------------------------------------

    def _template(self) -> str | None:
        """The template's text (twilio/text, else the first type with a body), fetched once per run."""
        if self._template_text is None and self.options.content_sid:
            content = self.client.content.v1.contents(self.options.content_sid).fetch()
            types = content.types or {}
            text = (types.get("twilio/text") or {}).get("body")
            if text is None:
                text = next((t["body"] for t in types.values() if isinstance(t, dict) and "body" in t), None)
            self._template_text = text
        return self._template_text

    def _expected_bodies(self, fields: Mapping[str, Any]) -> set[str]:
        bodies = {body} if (body := _text(fields.get("Body"))) else set()
        if self.options.content_sid:
            try:
                text = self._template()
            except (TwilioRestException, requests.RequestException) as error:
                log.warning(f"twilio: template {self.options.content_sid} not read ({error}); matching on Body")
                text = None
            variables = self._variables(fields.get("ContentVariables"))
            if text is not None and variables is not None and (rendered := render_template(text, variables)):
                bodies.add(rendered.strip())
        return bodies

    def _reconcile(self, previous: _Send, fields: Mapping[str, Any]) -> Any | None:
        """The message an earlier attempt of this send_key created, if Twilio has it (None: it was not sent)."""
        try:
            messages = self.client.messages.list(to=self._address(previous.to), page_size=RECONCILE_PAGE,
                                                 limit=RECONCILE_PAGE)
        except TwilioRestException as error:
            raise self._whole_call_error(error, "looking up an unconfirmed message") from error
        except TwilioException as error:  # a list page that is not 200 raises this, with the response
            raise self._whole_call_error(_page_error(error), "looking up an unconfirmed message") from error
        except requests.RequestException as error:
            raise RetryableError(f"twilio: looking up an unconfirmed message failed ({type(error).__name__}: "
                                 f"{error})") from error
        claimed = {row[0] for row in self.con.execute(
            f'select message_sid from {MESSAGE_SENDS} where "to" = ? and message_sid is not null and send_key <> ?',
            [previous.to, previous.send_key]).fetchall()}
        bodies = self._expected_bodies(fields)
        since = previous.attempted_at.replace(tzinfo=UTC) - RECONCILE_SLACK
        for message in messages:  # newest first
            created = message.date_created
            if (
                message.sid not in claimed
                and (message.direction or "").startswith("outbound")
                and message.from_ == self.settings.sender
                and created is not None and created >= since
                and (not bodies or _text(message.body) in bodies)
            ):
                return message
        return None

    # -- bookkeeping ------------------------------------------------------------------------------------------

    def _load(self, send_key: str) -> _Send | None:
        row = self.con.execute(
            f'select send_key, status, message_sid, "to", attempted_at, attempts from {MESSAGE_SENDS} '
            "where send_key = ?", [send_key]).fetchone()
        return None if row is None else _Send(*row)

    def _write_intent(self, send_key: str, previous: _Send | None, profile: str, trigger: str, to: str) -> None:
        """Durable before Twilio is called: a crash after the call leaves `intent`, which the next attempt
        reconciles instead of sending again."""
        now = _utcnow()
        if previous is None:
            self.con.execute(
                f'insert into {MESSAGE_SENDS} (send_key, sync, profile_id, trigger_key, channel, "to", from_address, '
                "content_sid, status, attempts, attempted_at, status_history, updated_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, 'intent', 1, ?, '[]', ?)",
                [send_key, self.sync.name, profile, trigger, self.options.channel, to, self.settings.sender,
                 self.options.content_sid, now, now])
        else:
            self.con.execute(
                f"update {MESSAGE_SENDS} set status = 'intent', attempts = attempts + 1, attempted_at = ?, "
                "message_sid = null, error_code = null, error_message = null, from_address = ?, content_sid = ?, "
                "updated_at = ? where send_key = ?",
                [now, self.settings.sender, self.options.content_sid, now, send_key])

    def _set_status(self, send_key: str, status: str, code: str | None, message: str | None) -> None:
        self.con.execute(
            f"update {MESSAGE_SENDS} set status = ?, error_code = ?, error_message = ?, updated_at = ? "
            "where send_key = ?", [status, code, (message or "")[:2000] or None, _utcnow(), send_key])

    def _mark_sent(self, send_key: str, message: Any, *, source: str) -> None:
        now = _utcnow()
        history = self._history(send_key)
        history.append(_history_entry(message.status, message.error_code, source))
        self.con.execute(
            f"update {MESSAGE_SENDS} set status = 'sent', message_sid = ?, sent_at = ?, error_code = null, "
            "error_message = null, delivery_status = ?, delivery_checked_at = ?, status_history = ?, updated_at = ? "
            "where send_key = ?",
            [message.sid, now, message.status, now, json.dumps(history), now, send_key])

    def _history(self, send_key: str) -> list[dict[str, Any]]:
        row = self.con.execute(f"select status_history from {MESSAGE_SENDS} where send_key = ?",
                               [send_key]).fetchone()
        return json.loads(row[0]) if row and row[0] else []

    def _recent_sends(self, send_key: str, profile: str, to: str) -> int:
        since = _utcnow() - self.options.window
        return int(self.con.execute(
            f'select count(*) from {MESSAGE_SENDS} where (profile_id = ? or "to" = ?) and channel = ? '
            f"and status in {POSSIBLY_SENT} and attempted_at >= ? and send_key <> ?",
            [profile, to, self.options.channel, since, send_key]).fetchone()[0])

    def record_callbacks(self, landing_root: Path | None = None) -> int:
        """Record the status callbacks the API wrote (reverse_etl/status_callbacks.py) into message_sends: each
        change appended to status_history (source "callback", at = when the API received it), delivery_status
        moved forward only (callbacks may arrive out of order). Returns how many were recorded."""
        paths = status_callbacks.claim(landing_root or default_landing_root())
        if not paths:
            return 0
        entries, unreadable = status_callbacks.read(paths)
        by_sid: dict[str, list[dict[str, Any]]] = {}
        for entry in entries:
            by_sid.setdefault(str(entry["MessageSid"]), []).append(entry)
        known = {}
        if by_sid:
            self.con.execute("create or replace temp table _callback_sids (sid varchar)")
            self.con.executemany("insert into _callback_sids values (?)", [[sid] for sid in by_sid])
            known = {row[1]: row for row in self.con.execute(
                f"select send_key, message_sid, delivery_status, status_history from {MESSAGE_SENDS} "
                "where message_sid in (select sid from _callback_sids)").fetchall()}
        recorded = unknown = 0
        for sid, items in by_sid.items():
            if sid not in known:
                unknown += len(items)  # a message no sync recorded as sent (reconciled later, or erased)
                continue
            send_key, _, status, history_json = known[sid]
            history = json.loads(history_json) if history_json else []
            seen = {(h.get("status"), h.get("at")) for h in history if h.get("source") == "callback"}
            for entry in items:
                new = str(entry["MessageStatus"])
                if (new, entry.get("ReceivedAt")) in seen:
                    continue  # recorded by an earlier run that stopped before deleting the file
                seen.add((new, entry.get("ReceivedAt")))
                history.append({"status": new, "at": entry.get("ReceivedAt"), "source": "callback",
                                **({"error_code": str(entry["ErrorCode"])} if entry.get("ErrorCode") else {})})
                if STATUS_RANK.get(new, 0) >= STATUS_RANK.get(status or "", 0):
                    status = new
                recorded += 1
            code = next((str(e["ErrorCode"]) for e in reversed(items) if e.get("ErrorCode")), None)
            self.con.execute(
                f"update {MESSAGE_SENDS} set delivery_status = ?, delivery_checked_at = ?, status_history = ?, "
                "error_code = coalesce(?, error_code), updated_at = ? where send_key = ?",
                [status, _utcnow(), json.dumps(history), code, _utcnow(), send_key])
        status_callbacks.release(paths)
        if unknown or unreadable:
            log.info(f"twilio: {unknown} status callbacks for messages no sync recorded as sent, {unreadable} "
                     "unreadable lines: not recorded")
        return recorded

    def refresh_statuses(self) -> int:
        """Poll Twilio for the delivery status of recently sent messages without a final one (best effort, at the
        start of each run); returns how many were fetched."""
        since = _utcnow() - timedelta(days=STATUS_POLL_DAYS)
        final = tuple(sorted(FINAL_DELIVERY_STATUSES))
        rows = self.con.execute(
            f"select send_key, message_sid, delivery_status from {MESSAGE_SENDS} where status = 'sent' "
            f"and message_sid is not null and coalesce(delivery_status, '') not in {final} and attempted_at >= ? "
            "order by attempted_at limit ?", [since, self.options.status_poll_limit]).fetchall()
        polled = 0
        for send_key, sid, known in rows:
            try:
                message = self.client.messages(sid).fetch()
            except BudgetExhausted:
                log.info("twilio: API budget spent; delivery statuses are polled again on a later run")
                break
            except TwilioRestException as error:
                if error.status != 404:
                    log.warning(f"twilio: polling delivery statuses stopped: {_message(error)}")
                    break
                status, code = "not_found", error.code  # deleted on Twilio (e.g. erased)
            except requests.RequestException as error:
                log.warning(f"twilio: polling delivery statuses stopped: {type(error).__name__}: {error}")
                break
            else:
                status, code = message.status, message.error_code
            polled += 1
            now = _utcnow()
            if status == known:
                self.con.execute(f"update {MESSAGE_SENDS} set delivery_checked_at = ? where send_key = ?",
                                 [now, send_key])
                continue
            history = self._history(send_key)
            history.append(_history_entry(status, code, "poll"))
            self.con.execute(
                f"update {MESSAGE_SENDS} set delivery_status = ?, delivery_checked_at = ?, status_history = ?, "
                "error_code = coalesce(?, error_code), updated_at = ? where send_key = ?",
                [status, now, json.dumps(history), None if code is None else str(code), now, send_key])
        return polled

    def _object(self, object: str) -> None:
        if object != "Message":
            raise DestinationError(f"twilio has no object {object!r}; syncs send Message")


def _history_entry(status: Any, code: Any, source: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": status, "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                             "source": source}
    if code:
        entry["error_code"] = str(code)
    return entry


def _page_error(error: TwilioException) -> TwilioRestException:
    """The SDK raises TwilioException("Unable to fetch page", response) for a list page that failed: as the
    TwilioRestException a single fetch would raise (status, Twilio's code and message from the JSON body)."""
    response = error.args[1] if len(error.args) > 1 else None
    status = int(getattr(response, "status_code", 0) or 0)
    try:
        body = json.loads(getattr(response, "text", "") or "{}")
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return TwilioRestException(status, "", msg=str(body.get("message") or error.args[0]), code=body.get("code"))


def _message(error: TwilioRestException) -> str:
    return (error.msg or "").removeprefix("Unable to create record: ").removeprefix("Unable to fetch record: ")


# ---------------------------------------------------------------------------------------------------------------
# Erasure (reverse_etl/privacy.py): Twilio keeps every message (body, numbers) until it is deleted


def _addresses(phones: set[str]) -> list[str]:
    """Every address a number has on Twilio: +E164 (SMS) and whatsapp:+E164."""
    return sorted({form for phone in phones if _E164.match(phone) for form in (phone, f"whatsapp:{phone}")})


def find_subject_messages(client: Client, phones: set[str]) -> list[str]:
    """The SIDs of the messages to or from any of `phones` (E.164), outbound and inbound, SMS and WhatsApp."""
    sids: set[str] = set()
    try:
        for address in _addresses(phones):
            for filters in ({"to": address}, {"from_": address}):
                sids.update(message.sid for message in client.messages.stream(page_size=1000, **filters))
    except TwilioException as error:
        if isinstance(error, TwilioRestException):
            raise
        raise _page_error(error) from error
    return sorted(sids)


def erase_subject_messages(client: Client, phones: set[str], *, wait_seconds: float = 60.0,
                           sleep: Callable[[float], None] = _sleep) -> int:
    """Delete every message to or from the subject's numbers; returns how many were deleted (0 when run again).
    A message still on its way (queued, sending: Twilio refuses with 20009) is waited for, up to `wait_seconds`,
    then the erasure fails naming it, so that the request can be run again."""
    deleted = 0
    for sid in find_subject_messages(client, phones):
        waited, delay = 0.0, 0.5
        while True:
            try:
                if client.messages(sid).delete():
                    deleted += 1
                break
            except TwilioRestException as error:
                if error.status == 404:
                    break  # gone already: deleted by someone else, or by an earlier attempt
                if error.code != 20009 or waited >= wait_seconds:
                    raise DestinationError(
                        f"twilio: could not delete message {sid}: {_message(error)} (HTTP {error.status}, code "
                        f"{error.code}); run the request again") from error
                sleep(delay)
                waited, delay = waited + delay, min(delay * 2, 5.0)
    return deleted
