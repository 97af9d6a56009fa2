"""The landing zone and the file connectors: idempotent, atomic, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from connectors.base import SourceError, split_csv, split_json, split_ndjson
from connectors.landing import LANDING_SCHEMA, SOURCES, LandingZone
from connectors.registry import file_source, land_folder


def read_zone(zone: LandingZone, source: str) -> list[tuple]:
    return duckdb.sql(
        f"select file_name, position, payload, parse_error from read_parquet('{zone.root}/{source}/*.parquet') "
        "order by file_name, position"
    ).fetchall()


def test_ndjson_lines_are_landed_verbatim_including_broken_ones(tmp_path: Path) -> None:
    lines = ['{"event_id": "a", "x": 1}', "{broken json", '  {"event_id": "b"}  ']
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n\n")
    zone = LandingZone(tmp_path / "landing")
    (batch,) = file_source("web", [path]).land(zone)
    assert batch.records == 3 and not batch.already_landed
    assert [row[2] for row in read_zone(zone, "web")] == lines
    assert [row[1] for row in read_zone(zone, "web")] == [0, 1, 2]


def test_landing_the_same_file_twice_is_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"event_id": "a"}\n')
    zone = LandingZone(tmp_path / "landing")
    first = file_source("app", [path]).land(zone)[0]
    copy = tmp_path / "renamed.ndjson"
    copy.write_bytes(path.read_bytes())
    second = file_source("app", [copy]).land(zone)[0]
    assert second.already_landed and second.batch_id == first.batch_id
    assert zone.landed_counts()["app"] == {"batches": 1, "records": 1}
    # Same bytes under another source are another batch.
    assert not file_source("web", [path]).land(zone)[0].already_landed


def test_batches_are_written_atomically_with_the_documented_schema(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_text('{"a": 1}\n')
    zone = LandingZone(tmp_path / "landing")
    (batch,) = file_source("email", [path]).land(zone)
    assert pq.read_schema(batch.path).equals(LANDING_SCHEMA)
    assert not list(zone.root.rglob("*.tmp"))
    for source in SOURCES:  # readers see every source's schema before its first batch
        assert pq.read_schema(zone.root / source / "_schema.parquet").equals(LANDING_SCHEMA)


def test_csv_rows_become_objects_and_a_short_row_keeps_its_fields_with_a_reason() -> None:
    data = b'Id,LastName,MailingStreet\n003A,Doe,"Hauptstr. 5, Hinterhaus"\n003B,Short\n'
    records = split_csv(data)
    good, short = records.payloads.to_pylist()
    assert json.loads(good) == {"Id": "003A", "LastName": "Doe", "MailingStreet": "Hauptstr. 5, Hinterhaus"}
    assert json.loads(short) == ["003B", "Short"]
    assert records.parse_errors.to_pylist() == [None, "CSV row has 2 fields, header has 3"]


def test_json_documents_arrays_and_api_responses() -> None:
    assert split_json(b'[{"a": 1}, {"b": 2}]').payloads.to_pylist() == ['{"a":1}', '{"b":2}']
    response = b'{"totalSize": 2, "done": true, "records": [{"Id": "1"}, {"Id": "2"}]}'
    assert split_json(response).payloads.to_pylist() == ['{"Id":"1"}', '{"Id":"2"}']
    broken = split_json(b'[{"a": 1},')
    assert broken.payloads.to_pylist() == ['[{"a": 1},']
    assert broken.parse_errors.to_pylist()[0].startswith("file is not valid JSON")


def test_ndjson_splitting_handles_crlf_blank_lines_a_missing_final_newline_and_bad_utf8() -> None:
    assert len(split_ndjson(b"\n \n\r\n")) == 0
    assert split_ndjson(b'{"a": 1}\r\n\n{"b": 2}').payloads.to_pylist() == ['{"a": 1}', '{"b": 2}']
    records = split_ndjson(b'{"a": 1}\n{"b": "\xff"}\n')
    assert records.payloads.to_pylist() == ['{"a": 1}', '{"b": "\ufffd"}']
    errors = records.parse_errors.to_pylist()
    assert errors[0] is None and errors[1].startswith("line is not valid UTF-8")


def test_bad_input_is_refused_with_one_clear_line(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path / "landing")
    with pytest.raises(SourceError, match="unknown source 'crm'"):
        file_source("crm", [tmp_path])
    with pytest.raises(SourceError, match="does not exist"):
        file_source("web", [tmp_path / "missing.ndjson"]).land(zone)
    bad = tmp_path / "contacts.xlsx"
    bad.write_bytes(b"PK")
    with pytest.raises(SourceError, match=r"cannot land contacts.xlsx: expected a \.csv / \.json"):
        file_source("salesforce", [bad]).land(zone)
    with pytest.raises(SourceError, match="none of the source folders"):
        land_folder(zone, tmp_path)


def test_land_folder_lands_every_source_folder(tmp_path: Path) -> None:
    for source in ("web", "whatsapp"):
        (tmp_path / "gen" / source).mkdir(parents=True)
        (tmp_path / "gen" / source / "part-00000.ndjson").write_text('{"x": 1}\n{"x": 2}\n')
    (tmp_path / "gen" / "web" / "notes.txt").write_text("not data")
    zone = LandingZone(tmp_path / "landing")
    batches = land_folder(zone, tmp_path / "gen")
    assert sorted((b.source, b.records) for b in batches) == [("web", 2), ("whatsapp", 2)]
