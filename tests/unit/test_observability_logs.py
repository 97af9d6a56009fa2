"""Structured JSON logs: email addresses and phone numbers are redacted (to short stable hashes) wherever they
appear, while timestamps, ids, file names and counts survive unchanged; every line is one JSON object with the
run id, step and asset; and a Dagster run writes them through the `cdp_json` logger."""

import hashlib
import json
import logging
import re
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from orchestration.observability.logs import (
    JSON_LOGGER,
    JsonLinesFileHandler,
    JsonLogFormatter,
    json_file_logger,
    redact,
    redact_value,
    run_config,
)

TOKEN = re.compile(r"<(email|phone):[0-9a-f]{8}>")


def sha8(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


# --- emails -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("contact max.mueller@gmail.com now", "max.mueller@gmail.com"),
        ("MAX.Mueller@Gmail.COM", "MAX.Mueller@Gmail.COM"),
        ('{"email": "lena_schmidt+news@uni-koeln.de"}', "lena_schmidt+news@uni-koeln.de"),
        ("<j.doe@mail.example.co.uk>", "j.doe@mail.example.co.uk"),
        ("mailto:anna.k@web.de?subject=x", "anna.k@web.de"),
        ("sent to o'hara@x.io", "hara@x.io"),
        ("user 12@numbers.fr, next", "12@numbers.fr"),
    ],
)
def test_emails_are_replaced_by_a_token(text: str, address: str) -> None:
    redacted = redact(text)
    assert address not in redacted
    assert "<email:" in redacted


def test_an_email_token_is_the_hash_of_the_normalized_address() -> None:
    token = f"<email:{sha8('max.mueller@gmail.com')}>"
    assert redact("max.mueller@gmail.com") == token
    assert redact("MAX.Mueller@Gmail.COM") == token  # the same person: the same token
    assert redact("/brochure?email=max.mueller%40gmail.com&x=1") == f"/brochure?email={token}&x=1"
    assert redact("a@b.de") != redact("a@b.fr")


# --- phones -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "phone",
    [
        "+4915123456789",
        "+33612345678",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+1 (555) 123-4567",
        "+1-555-123-4567",
        "+49 151 23456789",
        "+31 6 1234 5678",
        "0151 23456789",
        "06 12 34 56 78",
        "06-12-34-56-78",
        "020 7946 0958",
        "(020) 7946-0958",
        "0612345678",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
    ],
)
def test_phone_numbers_are_replaced_by_a_token(phone: str) -> None:
    for text in (phone, f"call {phone} today", f'"phone": "{phone}"', f"whatsapp:{phone}", f"({phone})"):
        redacted = redact(text)
        assert phone not in redacted, text
        assert re.search(r"<phone:[0-9a-f]{8}>", redacted), text


def test_a_phone_token_is_the_hash_of_its_digits() -> None:
    token = f"<phone:{sha8('+4915123456789')}>"
    assert redact("+4915123456789") == token
    assert redact("+49 151 23456789") == token  # formatting does not change the token
    assert redact("+44 (0)20 7946 0958") == redact("+44 20 7946 0958")  # nor does the trunk zero
    assert redact("0612345678") == redact("06 12 34 56 78")


@pytest.mark.parametrize(
    "text",
    ['"WaId": "4915123456789"', "MobilePhone=4915123456789", "msisdn: 33612345678", "phone_number='447700900123'"],
)
def test_a_bare_number_labelled_as_a_phone_is_redacted(text: str) -> None:
    assert re.fullmatch(r"[^\d]*<phone:[0-9a-f]{8}>['\"]?", redact(text)), redact(text)


# --- what must survive --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T08:00:53.123456+00:00",
        "2026-11-22T08:00:53Z",
        "2026-11-22 08:00:53 +0000 - dagster - DEBUG",
        "2026-11-22 08:00:53.123",
        "22/11/2026 08:00",
        "01.02.2026",
        "lag 00:01:23.456",
        "a9f7c920-51d4-4ade-8701-b4293f83ebbd",
        "01234567-8901-2345-6789-012345678901",
        "batch 0123456789abcdef0123456789abcdef",
        "batch 04123456789012345678901234567890",
        "(batch 041234567890)",
        "batch-0123456789abcdef0123456789abcdef.parquet",
        "web_events_0612345678.ndjson",
        "landing/web: 1 new batches (1,234,567 records); 3 batches, 12,345,678 records in the zone",
        "12 345 678 rows",
        "Finished execution of step \"landing__web\" in 15ms.",
        "run finished in 57.3 s",
        "Executing steps in process (pid: 21507)",
        "zone_watermark_ns: 1763798453123456789",
        "dagster/last_updated_timestamp 1763798453.123",
        "match rate 0.94485427",
        "phone_count: 12345678",
        "lag +12.5 %",
        "version 1.13.0 on 10.0.0.1",
        "take 00000123",
        "record_key 0123456789abcdef0123456789abcdef:1234",
        "P0000042 and U00012345",
        "prf_000001a82535fda901eeec7f",
        "003Hs00001AbCdEfGH",
        "price 1.234.567,89",
    ],
)
def test_timestamps_ids_file_names_and_counts_survive(text: str) -> None:
    assert redact(text) == text


def test_redaction_is_linear_on_long_digit_runs() -> None:
    import time

    start = time.perf_counter()
    for text in ("+" + "1" * 20_000 + "a", "0" + " 12" * 10_000 + "x", "a" * 10_000 + "@" + "b." * 5_000):
        redact(text)
    assert time.perf_counter() - start < 1.0


def test_nested_values_are_redacted() -> None:
    value = {"sample": [{"email": "a.b@c.de", "n": 3}, ("+33612345678", None)], "ok": True}
    redacted = redact_value(value)
    assert json.dumps(redacted).count("<email:") == 1 and json.dumps(redacted).count("<phone:") == 1
    assert redacted["sample"][0]["n"] == 3 and redacted["ok"] is True


# --- the formatter ------------------------------------------------------------------------------------------------

def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("cdp.test").makeRecord("cdp.test", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_line_has_the_fields_and_redacts_every_string() -> None:
    record = _record("lead max@x.org called from +33612345678", source="web", sample={"to": "ana@y.com"}, rows=3)
    line = json.loads(JsonLogFormatter().format(record))
    assert datetime.fromisoformat(line["ts"]).utcoffset().total_seconds() == 0
    assert line["level"] == "INFO" and line["logger"] == "cdp.test"
    assert line["message"] == f"lead <email:{sha8('max@x.org')}> called from <phone:{sha8('+33612345678')}>"
    assert line["run_id"] is None and line["step_key"] is None and line["asset"] is None
    assert line["source"] == "web" and line["rows"] == 3 and line["sample"] == {"to": f"<email:{sha8('ana@y.com')}>"}


def test_a_dagster_record_takes_run_step_and_original_message_from_dagster_meta() -> None:
    meta = {
        "run_id": "b5c4aa55-74b1-49d1-8880-6296a4f93819", "job_name": "__ASSET_JOB", "step_key": "landing__web",
        "op_name": "landing__web", "resource_name": None, "dagster_event": None,
        "orig_message": "landing/web: 1 new batches for max@x.org",
    }
    record = _record("__ASSET_JOB - b5c4aa55-… - landing__web - landing/web: …", dagster_meta=meta)
    line = json.loads(JsonLogFormatter({"landing__web": "landing/web"}).format(record))
    assert line["message"] == f"landing/web: 1 new batches for <email:{sha8('max@x.org')}>"
    assert (line["run_id"], line["step_key"], line["asset"], line["job"]) == (
        meta["run_id"], "landing__web", "landing/web", "__ASSET_JOB")
    assert "dagster_meta" not in line


def test_exceptions_are_kept_and_redacted() -> None:
    try:
        raise ValueError("bad row for max@x.org")
    except ValueError:
        record = logging.getLogger("cdp.test").makeRecord(
            "cdp.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonLogFormatter().format(record))
    assert "ValueError: bad row for <email:" in line["exception"] and "max@x.org" not in line["exception"]


def test_the_handler_appends_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "cdp.jsonl"
    for _ in range(2):  # two handlers, as two runs: the file is appended to
        handler = JsonLinesFileHandler(path)
        handler.setFormatter(JsonLogFormatter())
        handler.handle(_record("line one\nstill line one"))
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["message"] == "line one\nstill line one" for line in lines)


# --- through Dagster ----------------------------------------------------------------------------------------------

def test_a_dagster_run_writes_json_lines_with_its_run_id(tmp_path: Path) -> None:
    @dg.asset(key=["landing", "web"])
    def web(context: dg.AssetExecutionContext) -> None:
        context.log.info("landed a form from lena@example.org, +49 151 23456789")

    defs = dg.Definitions(assets=[web], loggers={"console": dg.colored_console_logger, JSON_LOGGER: json_file_logger})
    path = tmp_path / "cdp.jsonl"
    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, run_config=run_config(path=path)
        )
    assert result.success
    text = path.read_text()
    assert "lena@example.org" not in text and "23456789" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and {line["run_id"] for line in lines} == {result.run_id}
    (info,) = [line for line in lines if line["level"] == "INFO"]
    assert info["step_key"] == "landing__web" and info["asset"] == "landing/web"
    assert TOKEN.findall(info["message"]) == ["email", "phone"]
    events = {line.get("event_type") for line in lines}
    assert {"STEP_START", "STEP_SUCCESS", "ASSET_MATERIALIZATION"} <= events
    assert "STEP_OUTPUT" not in events  # noise, left to the run's event log
    (success,) = [line for line in lines if line.get("event_type") == "STEP_SUCCESS"]
    assert success["duration_ms"] >= 0


def test_without_the_logger_in_the_run_config_only_the_console_logs(tmp_path: Path) -> None:
    @dg.asset
    def quiet(context: dg.AssetExecutionContext) -> None:
        context.log.info("hello")

    defs = dg.Definitions(assets=[quiet], loggers={"console": dg.colored_console_logger, JSON_LOGGER: json_file_logger})
    config = run_config(path=tmp_path / "cdp.jsonl")
    del config["loggers"][JSON_LOGGER]
    with dg.instance_for_test() as instance:
        assert defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, run_config=config).success
    assert not (tmp_path / "cdp.jsonl").exists()
