"""Structured JSON logs: one JSON object per line in `var/logs/cdp.jsonl`, every run appending, PII redacted.

Each line has `ts` (ISO 8601, UTC), `level`, `logger`, `message`, `run_id`, `step_key` and `asset` (null when
not known), plus what the record carries: the Dagster event type, the job, a step's duration, an error, and the
`extra` fields of the logging call. Inside a run the Dagster log manager hands every record (context.log lines,
Dagster events, the `cdp.progress` lines that `report()` sends through context.log) to `json_file_logger` with
`record.dagster_meta` (dagster/_core/log_manager.py), which is where run id, step key and job come from.

Redaction is applied to the message and to every string field, nested ones included: an email address becomes
`<email:3f2a9c1b>` and a phone number `<phone:0c4e1a77>`, the first 8 hex digits of the SHA-256 of the normalized
value (an email lower-cased; a phone's digits, with its leading `+`), so that lines about the same person can be
correlated without the value. 32 bits of an unsalted hash only confirm a guess, they do not reveal a value.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.settings import Settings

JSON_LOGGER = "cdp_json"
"""The key of the JSON file logger in the Definitions and in run config."""

LOG_FILE_NAME = "cdp.jsonl"


def default_log_path() -> Path:
    return Settings.from_env().home / "var" / "logs" / LOG_FILE_NAME


def run_config(console_level: str = "WARNING", file_level: str = "DEBUG", path: Path | None = None) -> dict[str, Any]:
    """The run config of the loggers: Dagster's console logger at `console_level` (`cdp run` shows warnings
    only, as before) and the JSON file logger at `file_level`. Dagster instantiates only the loggers named in
    the run config (and only the console logger when none is named), so a run that should write the JSON file
    must name it: `cdp run` passes this, and a job can take it as its default config (`define_asset_job(
    config=run_config(console_level="DEBUG"))`). `path` replaces var/logs/cdp.jsonl."""
    file_config: dict[str, str] = {"log_level": file_level}
    if path is not None:
        file_config["path"] = str(path)
    return {
        "loggers": {
            "console": {"config": {"log_level": console_level}},
            JSON_LOGGER: {"config": file_config},
        }
    }


# --- redaction ----------------------------------------------------------------------------------------------------

_EMAIL = re.compile(
    # `%40` too: an address inside a URL (a page path, a referrer) is percent-encoded
    r"(?<![\w.%+-])[a-z0-9][a-z0-9._%+-]*(?:@|%40)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
    re.IGNORECASE,
)

# Phone candidates; a candidate is a phone only with 8 to 15 digits and when it is not a date (see _phone). Every
# form must start where no word, number, path, email or signed value goes on (the look-behind), and end where no
# word or number does (the look-ahead), which keeps uuids, hex batch ids, file names, decimals and times out.
_SEP = r"[ \u00a0.-]"
# between two digit groups: a separator, an opening or a closing parenthesis (never nothing, so that two digit
# groups cannot split one run of digits in many ways: the match stays linear)
_GROUP_SEP = rf"(?:{_SEP}?\(|\){_SEP}?|{_SEP})"
_PHONE = re.compile(
    r"(?<![\w@/.+-])(?:"
    rf"\+\(?\d+(?:{_GROUP_SEP}\d+)*"  # E.164, international: +33612345678, +44 20 7946 0958, +1 (555) 123-4567
    rf"|\(?0\d{{1,4}}\)?(?:{_SEP}\d{{2,8}})+"  # national, grouped: 0151 23456789, 06 12 34 56 78, (020) 7946-0958
    r"|0[1-9]\d{8,9}"  # national, ungrouped: 0612345678 (no national number starts with 00: that is a prefix)
    r"|\(\d{3}\)[ \u00a0]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4}"  # North American: (555) 123-4567
    r")(?![\w@]|[.:/-]\w)"
)
# A bare international number without its `+` (a WhatsApp WaId, an MSISDN) is only recognizable by its label.
_LABELLED_PHONE = re.compile(
    r"(?<![<\w])([a-z_]*(?:phone|mobile|msisdn|wa_?id|tel)(?:_?(?:number|e164|no))?[\"']?\s*[:=]\s*[\"']?)"
    r"(\d{8,15})\b",
    re.IGNORECASE,
)
_DATE = re.compile(r"\(?\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\)?")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def _email(match: re.Match[str]) -> str:
    return f"<email:{_digest(match.group(0).replace('%40', '@').strip().lower())}>"


def _phone_token(text: str) -> str:
    digits = re.sub(r"\D", "", text.replace("(0)", ""))  # +44 (0)20 …: the trunk 0 is not dialled from abroad
    return f"<phone:{_digest(('+' if text.startswith('+') else '') + digits)}>"


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if not 8 <= digits <= 15 or _DATE.fullmatch(text):
        return text
    return _phone_token(text)


def redact(text: str) -> str:
    """The text with email addresses and phone numbers replaced by `<email:…>` / `<phone:…>` tokens."""
    if not any(c.isdigit() or c == "@" or c == "%" for c in text):
        return text  # most log lines: nothing to look for
    text = _EMAIL.sub(_email, text)
    text = _PHONE.sub(_phone, text)
    return _LABELLED_PHONE.sub(lambda m: m.group(1) + _phone_token("+" + m.group(2)), text)


def redact_value(value: Any) -> Any:
    """`value` with every string in it redacted (mappings, lists and tuples walked); other values as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    return value


# --- the formatter ------------------------------------------------------------------------------------------------

# Attributes every LogRecord has (and Dagster's own), so what remains on a record is the call's `extra`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message", "asctime", "dagster_meta", "dagster_event", "dagster_event_batch_metadata",
}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, dg.AssetKey):
        return value.to_user_string()
    return str(value)


def _event_fields(event: Any) -> dict[str, Any]:
    """What a Dagster event adds to its line: type, asset, a step's duration, an error's message."""
    fields: dict[str, Any] = {"event_type": event.event_type_value}
    data = event.event_specific_data
    asset_key = getattr(data, "asset_key", None)
    if asset_key is None:
        try:
            asset_key = event.asset_key
        except Exception:  # properties of other event types raise instead of returning None
            asset_key = None
    if asset_key is not None:
        fields["asset"] = asset_key.to_user_string()
    duration = getattr(data, "duration_ms", None)
    if isinstance(duration, int | float):
        fields["duration_ms"] = round(duration, 1)
    error = getattr(data, "error", None)
    if error is not None and getattr(error, "message", None):
        fields["error"] = f"{getattr(error, 'cls_name', None) or 'Error'}: {error.message.strip()}"
    check_name = getattr(data, "check_name", None)
    if check_name is not None:
        fields["check"] = check_name
        fields["passed"] = getattr(data, "passed", None)
    return fields


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, redacted. `asset_by_step` names the asset of steps that build one asset,
    for lines logged by user code (Dagster events name their asset themselves)."""

    def __init__(self, asset_by_step: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.asset_by_step = dict(asset_by_step or {})

    def format(self, record: logging.LogRecord) -> str:
        meta: Mapping[str, Any] = getattr(record, "dagster_meta", None) or {}
        step_key = meta.get("step_key") or getattr(record, "step_key", None)
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            # Dagster prefixes the message with job, run id and step: the original message is in dagster_meta
            "message": meta.get("orig_message", record.getMessage()) if meta else record.getMessage(),
            "run_id": meta.get("run_id") or getattr(record, "run_id", None),
            "step_key": step_key,
            "asset": getattr(record, "asset", None) or self.asset_by_step.get(step_key or ""),
        }
        if meta.get("job_name"):
            line["job"] = meta["job_name"]
        if meta.get("resource_name"):
            line["resource"] = meta["resource_name"]
        event = meta.get("dagster_event")
        if event is not None:
            line.update(_event_fields(event))
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in line:
                line[key] = _json_safe(value)
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(redact_value(line), ensure_ascii=False, default=str)


# --- the file handler and the Dagster logger ----------------------------------------------------------------------

class JsonLinesFileHandler(logging.Handler):
    """Appends each formatted record as one line. Every line is a single write(2) on a file opened with
    O_APPEND, so the runs of several processes (the daemon's, `cdp run`) appending to one file never interleave
    within a line; the file is opened per record so that no descriptor outlives a run and rotation is safe."""

    def __init__(self, path: Path, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.path = Path(path)
        # a log file must never fail a run: a folder that cannot be made is reported by emit (handleError)
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode()  # json.dumps escapes every newline inside
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except Exception:
            self.handleError(record)


# Dagster events that say nothing an operator reads (every dbt model's output, IO manager hand-offs): dropped from
# the file, where they were over half of the lines of a run. They stay in the run's event log (the UI).
_QUIET_EVENTS = frozenset({
    "STEP_OUTPUT", "HANDLED_OUTPUT", "LOADED_INPUT", "STEP_INPUT", "LOGS_CAPTURED", "ASSET_MATERIALIZATION_PLANNED",
    "RESOURCE_INIT_STARTED", "RESOURCE_INIT_SUCCESS", "STEP_WORKER_STARTING", "STEP_WORKER_STARTED",
})


def _not_quiet(record: logging.LogRecord) -> bool:
    event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
    return event is None or event.event_type_value not in _QUIET_EVENTS


def _asset_by_step(job_def: dg.JobDefinition | None) -> dict[str, str]:
    """Step key -> asset, for the steps that build (or check) exactly one asset."""
    if job_def is None:
        return {}
    names: dict[str, str] = {}
    try:
        for data in job_def.asset_layer.data:
            assets_def = data.assets_def
            keys = set(assets_def.keys) | {check.asset_key for check in assets_def.check_keys}
            if len(keys) == 1:
                names[str(data.node_handle)] = next(iter(keys)).to_user_string()
    except AttributeError:  # an internal API (AssetLayer.data): without it, lines name steps but not assets
        return {}
    return names


@dg.logger(
    config_schema={
        "log_level": dg.Field(str, is_required=False, default_value="DEBUG",
                              description="The threshold: DEBUG keeps Dagster's events (step starts, durations)."),
        "path": dg.Field(str, is_required=False, default_value="",
                         description="The JSON lines file; default <CDP_HOME>/var/logs/cdp.jsonl."),
    },
    description="Structured JSON lines (run id, step, asset; PII redacted) appended to var/logs/cdp.jsonl.",
)
def json_file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    config = init_context.logger_config
    level = logging.getLevelName(str(config["log_level"]).upper())
    if not isinstance(level, int):
        raise ValueError(f"{JSON_LOGGER}: unknown log_level {config['log_level']!r}")
    handler = JsonLinesFileHandler(Path(config["path"]) if config["path"] else default_log_path())
    handler.setFormatter(JsonLogFormatter(_asset_by_step(init_context.job_def)))
    handler.addFilter(_not_quiet)
    logger = logging.Logger("dagster", level=level)  # not registered: one per run
    logger.addHandler(handler)
    return logger
