"""The serving snapshot: what the API reads, published from gold as a new DuckDB file and swapped atomically.

`publish(warehouse_path, serving_dir)` copies the gold tables the API needs (read-only) into
`serving_dir/snapshots/snapshot-<utc>-<rand>.duckdb`, adds what the API serves ready-made (one JSON document per
profile, the latest events per profile, the identifier fingerprints of the lookup index), fsyncs the file, and
then points `serving_dir/CURRENT` at it (temp file + fsync + os.replace). A reader sees the old snapshot or the
new one, never half of one. The API (serving/index.py) notices CURRENT change and loads the new file in the
background; it never opens the warehouse, so it keeps answering while dbt holds the warehouse.

Tables missing in the warehouse (a warehouse built before the segment or consent models) are published empty
and named in `snapshot_meta.skipped`. The previous two snapshots are kept (a reader that just loaded one never
finds it deleted under it), older ones are deleted.

With CDP_TARGET=bigquery the gold tables come from BigQuery (`_pull_bigquery`, the only BigQuery code here),
and everything after the pull (documents, indexes, swap) is the same local DuckDB work.

The right to be forgotten reaches the snapshots through `SnapshotStore` (registered as the `serving_snapshot`
store of orchestration/privacy/stores.py): the current snapshot is rewritten without the subject's rows as a new
snapshot and swapped in, the older files are deleted.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

SNAPSHOT_GLOB = "snapshot-*.duckdb"
KEEP_PREVIOUS = 2
RECENT_EVENTS_PER_PROFILE = 50


@dataclass(frozen=True)
class SourceTable:
    """A gold table copied into the snapshot: the columns the API needs and their types (used to publish an empty
    table when an old warehouse lacks it)."""

    name: str
    source: str  # schema.table in the warehouse
    columns: tuple[tuple[str, str], ...]
    where: str | None = None
    required: bool = False


def _cols(spec: str) -> tuple[tuple[str, str], ...]:
    return tuple((c.split()[0], c.split()[1]) for c in spec.split(","))


SOURCE_TABLES = (
    SourceTable("profiles", "gold.profiles", _cols(
        "profile_id varchar, crm_contact_id varchar, first_name varchar, last_name varchar, email varchar,"
        "phone varchar, birth_date date, city varchar, postal_code varchar, country varchar, contact_source varchar,"
        "program_interest varchar, application_stage varchar, enrollment_status varchar, lifecycle_stage varchar,"
        "web_events bigint, app_events bigint, crm_versions bigint, email_events bigint, whatsapp_messages bigint,"
        "page_views bigint, brochure_downloads bigint, form_submits bigint, app_sessions bigint,"
        "lessons_completed bigint, quizzes_submitted bigint, avg_quiz_score double, email_opens bigint,"
        "email_clicks bigint, email_bounces bigint, identifier_count bigint, crm_contacts bigint,"
        "identity_confidence double, is_probabilistic_merge boolean, has_shared_identifier boolean,"
        "first_seen_at timestamp, last_seen_at timestamp, last_web_at timestamp, last_app_at timestamp,"
        "computed_at timestamp"), required=True),
    # one row per (source, identifier) in gold: the snapshot keeps the identifier once per profile
    SourceTable("profile_identifiers", "gold.profile_identifiers", _cols(
        "profile_id varchar, identifier_type varchar, identifier_value varchar, identifier_key varchar,"
        "is_shared boolean"), required=True),
    SourceTable("profile_merges", "gold.profile_merges", _cols(
        "retired_profile_id varchar, surviving_profile_id varchar, merge_kind varchar, retired_at timestamp")),
    SourceTable("consent_current", "gold.consent_current", _cols(
        "profile_id varchar, channel varchar, status varchar, legal_basis varchar, can_contact boolean,"
        "status_at timestamp, source varchar, updated_at timestamp")),
    SourceTable("engagement_scores", "gold.engagement_scores", _cols(
        "profile_id varchar, engagement_score double, engagement_trend varchar, activity_30d bigint,"
        "activity_prev_30d bigint, web_points double, app_points double, email_points double,"
        "whatsapp_points double, last_engaged_at timestamp, as_of timestamp, computed_at timestamp")),
    SourceTable("segment_results", "gold.segment_results", _cols("segment varchar, profile_id varchar, score double")),
    SourceTable("segment_definitions", "gold.segment_definitions", _cols(
        "segment varchar, name varchar, description varchar, kind varchar, owner varchar, destinations varchar,"
        "members bigint")),
    SourceTable("segment_memberships", "gold.segment_memberships", _cols(
        "profile_id varchar, segment varchar, entered_at timestamp, entry_score double"), where="exited_at is null"),
)

# Event properties worth showing a channel; names, message bodies, addresses and tokens stay in the warehouse.
EVENT_PROPERTIES = (
    "page_path", "page_title", "program", "utm_source", "utm_medium", "utm_campaign", "form_id", "brochure_id",
    "platform", "app_version", "course", "lesson_id", "quiz_id", "quiz_score", "duration_seconds", "login_method",
    "campaign_id", "campaign_name", "categories", "url", "bounce_type", "message_type", "intent",
    "application_stage", "enrollment_status", "program_interest",
)
RECENT_EVENTS_COLUMNS = _cols(
    "profile_id varchar, event_id varchar, occurred_at timestamp, source varchar, event_type varchar,"
    "properties json")


def _recent_events_sql(relation: str, dialect: str = "duckdb") -> str:
    """The latest events per profile from gold.profile_events (silver.events with the profile of each event)."""
    if dialect == "bigquery":
        props = ", ".join(f"'{name}', json_query(properties, '$.{name}')" for name in EVENT_PROPERTIES)
        return f"""
            select profile_id, event_id, occurred_at, source, event_type,
                to_json_string(json_strip_nulls(json_object({props}))) as properties
            from {relation}
            where profile_id is not null
            qualify row_number() over (partition by profile_id order by occurred_at desc, event_id)
                <= {RECENT_EVENTS_PER_PROFILE}
        """
    entries = ", ".join(f"{{'k': '{name}', 'v': properties -> '$.{name}'}}" for name in EVENT_PROPERTIES)
    return f"""
        select profile_id, event_id, occurred_at, source, event_type,
            to_json(map_from_entries(list_filter([{entries}],
                lambda e: e.v is not null and json_type(e.v) <> 'NULL')))::json as properties
        from {relation}
        where profile_id is not null
        qualify row_number() over (partition by profile_id order by occurred_at desc, event_id)
            <= {RECENT_EVENTS_PER_PROFILE}
    """


# --- where the traits of a profile document come from -------------------------------------------------------------

CONTACT_TRAITS = ("first_name", "last_name", "email", "phone", "birth_date", "city", "postal_code", "country")
CRM_TRAITS = ("crm_contact_id", "program_interest", "application_stage", "enrollment_status", "crm_versions")
BEHAVIOUR_TRAITS = {
    "web": ("web_events", "page_views", "brochure_downloads", "form_submits", "last_web_at"),
    "app": ("app_events", "app_sessions", "lessons_completed", "quizzes_submitted", "avg_quiz_score", "last_app_at"),
    "email": ("email_events", "email_opens", "email_clicks", "email_bounces"),
    "whatsapp": ("whatsapp_messages",),
    "events": ("first_seen_at", "last_seen_at"),
}
CONSENT_TRAITS = ("email", "whatsapp")  # <channel>_consent traits, with the source of consent_current's decision


def _iso(expr: str) -> str:
    return f"strftime({expr}, '%Y-%m-%dT%H:%M:%SZ')"


def _trait(name: str, value: str, source: str, computed_at: str) -> str:
    value_json = f"to_json({_iso(value)})" if name.endswith("_at") else f"to_json({value})"
    return (f"{{'k': '{name}', 'v': {{'value': {value_json}, 'source': {source}, "
            f"'computed_at': {_iso(computed_at)}}}}}")


def _traits_sql() -> str:
    entries = [_trait(n, f"p.{n}", "p.contact_source", "p.computed_at") for n in CONTACT_TRAITS]
    entries += [_trait(n, f"p.{n}", "'salesforce'", "p.computed_at") for n in CRM_TRAITS]
    entries.append(_trait("lifecycle_stage", "p.lifecycle_stage", "'cdp'", "p.computed_at"))
    for source, names in BEHAVIOUR_TRAITS.items():
        entries += [_trait(n, f"p.{n}", f"'{source}'", "p.computed_at") for n in names]
    for channel in CONSENT_TRAITS:
        entries.append(_trait(f"{channel}_consent", f"c_{channel}.status", f"c_{channel}.source",
                              f"c_{channel}.updated_at"))
    return (f"map_from_entries(list_filter([{', '.join(entries)}], "
            "lambda e: e.v.value is not null and e.v.value::varchar <> 'null'))")


def _documents_sql() -> str:
    """One JSON document per profile (the shape of serving/profiles/schemas.py ProfileDocument), built in DuckDB
    from the snapshot's own tables: fast at 1M profiles, and rebuilt the same way after an erasure."""
    consent_joins = "\n".join(
        f"left join consent_current as c_{ch} on c_{ch}.profile_id = p.profile_id and c_{ch}.channel = '{ch}'"
        for ch in CONSENT_TRAITS
    )
    return f"""
        create table profile_documents as
        with identifiers as (
            select profile_id,
                list({{'type': identifier_type, 'value': identifier_value}}
                     order by identifier_type, identifier_value) as identifiers
            from (select distinct profile_id, identifier_type, identifier_value from profile_identifiers)
            group by profile_id
        ),
        segments as (
            select r.profile_id,
                list({{'name': r.segment, 'entered_at': {_iso('m.entered_at')},
                      'score': coalesce(r.score, m.entry_score)}} order by r.segment) as segments
            from segment_results as r
            left join segment_memberships as m on m.profile_id = r.profile_id and m.segment = r.segment
            group by r.profile_id
        ),
        consent as (
            select profile_id,
                map_from_entries(list({{'k': channel, 'v': {{'status': status, 'legal_basis': legal_basis,
                    'can_contact': can_contact, 'source': source, 'status_at': {_iso('status_at')}}}}}
                    order by channel)) as consent
            from consent_current
            group by profile_id
        )
        select
            (row_number() over (order by p.profile_id) - 1)::integer as doc_row,
            p.profile_id,
            to_json({{
                'profile_id': p.profile_id,
                'lifecycle_stage': p.lifecycle_stage,
                'computed_at': {_iso('p.computed_at')},
                'traits': {_traits_sql()},
                'identifiers': coalesce(i.identifiers, []),
                'segments': coalesce(s.segments, []),
                'consent': coalesce(c.consent, map()),
                'engagement': case when e.profile_id is not null then {{
                    'score': e.engagement_score, 'trend': e.engagement_trend, 'activity_30d': e.activity_30d,
                    'activity_prev_30d': e.activity_prev_30d, 'web_points': e.web_points,
                    'app_points': e.app_points, 'email_points': e.email_points,
                    'whatsapp_points': e.whatsapp_points, 'last_engaged_at': {_iso('e.last_engaged_at')},
                    'as_of': {_iso('e.as_of')}, 'computed_at': {_iso('e.computed_at')}
                }} end,
                'identity': {{
                    'confidence': p.identity_confidence, 'is_probabilistic_merge': p.is_probabilistic_merge,
                    'has_shared_identifier': p.has_shared_identifier, 'identifier_count': p.identifier_count,
                    'crm_contacts': p.crm_contacts
                }}
            }})::varchar as document
        from profiles as p
        left join identifiers as i on i.profile_id = p.profile_id
        left join segments as s on s.profile_id = p.profile_id
        left join consent as c on c.profile_id = p.profile_id
        left join engagement_scores as e on e.profile_id = p.profile_id
        {consent_joins}
        order by p.profile_id
    """


# Tables derived from the copied ones (documents, lookup fingerprints, meta): rebuilt, never copied or filtered.
DERIVED_TABLES = ("profile_documents", "profile_documents_z", "document_dictionary", "lookup_keys", "snapshot_meta")
DICTIONARY_SAMPLE = 12  # documents whose text primes the compression dictionary


def _deflater(dictionary: bytes) -> Any:
    return zlib.compressobj(6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, dictionary)


def _compress_all(base: Any, documents: list[str]) -> list[bytes]:
    out = []
    for document in documents:
        deflater = base.copy()
        out.append(deflater.compress(document.encode()) + deflater.flush())
    return out


def _compress_documents(con: duckdb.DuckDBPyConnection) -> None:
    """profile_documents_z: each document deflated with a preset dictionary made of a few documents (documents
    repeat their keys and sources, so ~3.8 KB become ~250 bytes; a document alone compresses only to ~900). The API
    keeps only these bytes in memory and inflates one per request (~7 us). zlib releases the GIL while it
    deflates, so a few threads use every core."""
    sample = con.execute(
        f"select document from profile_documents order by doc_row limit {DICTIONARY_SAMPLE}").fetchall()
    dictionary = "".join(row[0] for row in sample).encode()[-32768:]
    con.execute("create table document_dictionary (dictionary blob)")
    con.execute("insert into document_dictionary values (?)", [dictionary])
    base = _deflater(dictionary)
    threads = max(1, min(4, os.cpu_count() or 1))
    blobs: list[bytes] = []
    reader = con.sql("select document from profile_documents order by doc_row").to_arrow_reader(100_000)
    with ThreadPoolExecutor(threads) as pool:
        for batch in reader:
            documents = batch.column(0).to_pylist()
            step = max(1, -(-len(documents) // threads))
            parts = [documents[i:i + step] for i in range(0, len(documents), step)]
            for part in pool.map(lambda chunk: _compress_all(base, chunk), parts):
                blobs.extend(part)
    compressed = pa.table({"doc_row": pa.array(range(len(blobs)), pa.int32()),
                           "document_z": pa.array(blobs, pa.binary())})
    con.register("compressed_documents", compressed)
    con.execute("create table profile_documents_z as select * from compressed_documents order by doc_row")
    con.unregister("compressed_documents")


def _derive(con: duckdb.DuckDBPyConnection, meta: dict[str, Any]) -> dict[str, int]:
    """Documents, lookup keys, indexes and snapshot_meta over the copied tables; returns rows per table."""
    con.execute(_documents_sql())
    _compress_documents(con)
    # 128-bit fingerprints (md5 halves) of every lookup key -> document row: serving/index.py keeps two sorted
    # uint64 arrays instead of millions of Python strings. Keys held by several profiles (a shared identifier)
    # are kept with every row; the index answers those with 409.
    con.execute("""
        create table lookup_keys as
        with docs as (
            select profile_id, doc_row from profile_documents
        ),
        keys as (
            select 'profile_id:' || profile_id as lookup_key, profile_id from docs
            union
            select identifier_key, profile_id from profile_identifiers
        )
        select md5_number_upper(k.lookup_key) as key_hi, md5_number_lower(k.lookup_key) as key_lo, d.doc_row
        from keys as k
        inner join docs as d on d.profile_id = k.profile_id
        order by key_hi, key_lo, doc_row
    """)
    con.execute("create index recent_events_profile on recent_events (profile_id)")  # the events endpoint
    rows = {name: con.execute(f'select count(*) from "{name}"').fetchall()[0][0]
            for name in [*(t.name for t in SOURCE_TABLES), "recent_events", "profile_documents", "lookup_keys"]}
    meta = {**meta, "rows": rows}
    con.execute("create table snapshot_meta (key varchar, value json)")
    con.executemany("insert into snapshot_meta values (?, ?)",
                    [[key, json.dumps(value, default=str)] for key, value in meta.items()])
    return rows


def _create_empty(con: duckdb.DuckDBPyConnection, name: str, columns: tuple[tuple[str, str], ...]) -> None:
    con.execute(f'create table "{name}" ({", ".join(f"{c} {t}" for c, t in columns)})')


def _pull_duckdb(con: duckdb.DuckDBPyConnection, warehouse_path: Path) -> list[str]:
    """Copy the gold tables from the DuckDB warehouse (attached read-only); returns the tables it lacked."""
    # attached read-only: a writer (dbt) would block this, which is why the Dagster asset holds the run lock
    con.execute(f"attach '{str(warehouse_path).replace(chr(39), chr(39) * 2)}' as wh (read_only)")
    present = {r[0] for r in con.execute(
        "select table_schema || '.' || table_name from information_schema.tables where table_catalog = 'wh'"
    ).fetchall()}
    skipped = []
    for table in SOURCE_TABLES:
        if table.source not in present:
            if table.required:
                raise SnapshotError(f"the warehouse has no {table.source}: run the pipeline (cdp run) first")
            skipped.append(table.source)
            _create_empty(con, table.name, table.columns)
            continue
        columns = ", ".join(c for c, _ in table.columns)
        where = f" where {table.where}" if table.where else ""
        distinct = "distinct " if table.name == "profile_identifiers" else ""
        con.execute(f'create table "{table.name}" as select {distinct}{columns} from wh.{table.source}{where}')
    if "gold.profile_events" in present:
        con.execute(f"create table recent_events as {_recent_events_sql('wh.gold.profile_events')} "
                    "order by profile_id, occurred_at desc, event_id")
    else:
        skipped.append("gold.profile_events")
        _create_empty(con, "recent_events", RECENT_EVENTS_COLUMNS)
    con.execute("detach wh")
    return skipped


def _pull_bigquery(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Copy the gold tables from BigQuery into the snapshot: the same tables and columns as _pull_duckdb, read
    with google-cloud-bigquery into Arrow (the project, location and credentials of the dbt `bigquery` target in
    profiles.yml, from the same environment variables: connectors/bigquery_load.py). Tested against the BigQuery
    emulator (tests/bigquery/)."""
    from connectors.bigquery_load import BigQueryLoadError, BigQuerySettings

    try:
        settings = BigQuerySettings.from_env()
    except BigQueryLoadError as error:
        raise SnapshotError(str(error)) from error
    project = settings.project
    client = settings.client()
    present = {f"{t.dataset_id}.{t.table_id}" for dataset in ("gold",)
               for t in client.list_tables(f"{project}.{dataset}")}

    def load(name: str, sql: str) -> None:
        arrow = client.query(sql).to_arrow(create_bqstorage_client=False)
        con.register("pulled", arrow)
        con.execute(f'create table "{name}" as select * from pulled')
        con.unregister("pulled")

    skipped = []
    for table in SOURCE_TABLES:
        if table.source not in present:
            if table.required:
                raise SnapshotError(f"BigQuery has no {project}.{table.source}: run the pipeline first")
            skipped.append(table.source)
            _create_empty(con, table.name, table.columns)
            continue
        columns = ", ".join(c for c, _ in table.columns)
        where = f" where {table.where}" if table.where else ""
        distinct = "distinct " if table.name == "profile_identifiers" else ""
        load(table.name, f"select {distinct}{columns} from `{project}.{table.source}`{where}")
    if "gold.profile_events" in present:
        load("recent_events_raw", _recent_events_sql(f"`{project}.gold.profile_events`", dialect="bigquery"))
        con.execute("create table recent_events as select profile_id, event_id, occurred_at, source, event_type, "
                    "properties::json as properties from recent_events_raw "
                    "order by profile_id, occurred_at desc, event_id")
        con.execute("drop table recent_events_raw")
    else:
        skipped.append("gold.profile_events")
        _create_empty(con, "recent_events", RECENT_EVENTS_COLUMNS)
    return skipped


class SnapshotError(RuntimeError):
    """The snapshot cannot be published (no gold yet) or read."""


@dataclass(frozen=True)
class Published:
    path: Path
    rows: dict[str, int]
    skipped: list[str]
    seconds: float


def snapshots_dir(serving_dir: Path) -> Path:
    return Path(serving_dir) / "snapshots"


def current_snapshot(serving_dir: Path) -> Path | None:
    """The snapshot CURRENT names, or None before the first publish."""
    try:
        name = (Path(serving_dir) / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None
    return snapshots_dir(serving_dir) / name if name else None


def _new_name() -> str:
    return f"snapshot-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}.duckdb"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(serving_dir: Path, fill: Callable[[duckdb.DuckDBPyConnection], dict[str, Any]]) -> tuple[Path, dict]:
    """Build a new snapshot file under a temporary name with `fill` (copy the tables, returns meta), derive the
    rest, fsync it, rename it into place and swap CURRENT to it."""
    directory = snapshots_dir(serving_dir)
    directory.mkdir(parents=True, exist_ok=True)
    name = _new_name()
    building = directory / f".building-{name}"
    con = duckdb.connect(str(building))
    try:
        meta = fill(con)
        meta["rows"] = _derive(con, meta)
        con.execute("checkpoint")  # everything in the file, no WAL beside it
    except BaseException:
        con.close()
        building.unlink(missing_ok=True)
        Path(str(building) + ".wal").unlink(missing_ok=True)
        raise
    con.close()
    _fsync(building)
    final = directory / name
    os.replace(building, final)
    _fsync(directory)
    swap_current(serving_dir, final)
    return final, meta


def swap_current(serving_dir: Path, snapshot: Path) -> None:
    """Point CURRENT at `snapshot` atomically (temp file, fsync, rename, fsync of the directory)."""
    serving_dir = Path(serving_dir)
    tmp = serving_dir / f".CURRENT.{os.getpid()}.{secrets.token_hex(3)}"
    with open(tmp, "w") as handle:
        handle.write(snapshot.name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, serving_dir / "CURRENT")
    _fsync(serving_dir)


def prune(serving_dir: Path, keep_previous: int = KEEP_PREVIOUS) -> list[Path]:
    """Delete snapshots older than the current one and the `keep_previous` before it; never the current one.
    Leftovers of a publish that died (.building-*) go once they are an hour old."""
    directory = snapshots_dir(serving_dir)
    current = current_snapshot(serving_dir)
    files = sorted(directory.glob(SNAPSHOT_GLOB))  # names start with the UTC time: sorted = oldest first
    keep = set(files[-(keep_previous + 1):]) | ({current} if current else set())
    removed = []
    for path in files:
        if path not in keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    for path in directory.glob(".building-*"):
        if time.time() - path.stat().st_mtime > 3600:
            path.unlink(missing_ok=True)
    return removed


def publish(warehouse_path: Path, serving_dir: Path, *, target: str | None = None) -> Path:
    """Publish a new serving snapshot from the warehouse's gold tables and make it current; returns its path."""
    return publish_snapshot(warehouse_path, serving_dir, target=target).path


def publish_snapshot(warehouse_path: Path, serving_dir: Path, *, target: str | None = None) -> Published:
    """`publish`, with the rows per table, the tables skipped and the seconds it took."""
    started = time.monotonic()
    target = target or os.environ.get("CDP_TARGET", "duckdb")
    warehouse_path = Path(warehouse_path)
    if target == "duckdb" and not warehouse_path.exists():
        raise SnapshotError(f"no warehouse at {warehouse_path}: run the pipeline (cdp run) first")

    def fill(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        skipped = _pull_bigquery(con) if target == "bigquery" else _pull_duckdb(con, warehouse_path)
        source = f"bigquery:{os.environ.get('CDP_BIGQUERY_PROJECT', '')}" if target == "bigquery" \
            else str(warehouse_path)
        return {"published_at": datetime.now(UTC).isoformat(timespec="seconds"), "warehouse": source,
                "target": target, "skipped": skipped}

    path, meta = _build(Path(serving_dir), fill)
    prune(Path(serving_dir))
    return Published(path, meta["rows"], meta["skipped"], time.monotonic() - started)


def read_meta(snapshot: Path) -> dict[str, Any]:
    with duckdb.connect(str(snapshot), read_only=True) as con:
        rows = con.execute("select key, value from snapshot_meta").fetchall()
    return {key: json.loads(value) for key, value in rows}


# --- the right to be forgotten ----------------------------------------------------------------------------------

class SnapshotStore:
    """The `serving_snapshot` store of the erasure job (orchestration/privacy/stores.py).

    erase: the current snapshot is copied, table by table, into a new snapshot without the rows that name the
    subject (a profile id, identifier key or event id in a column, or an identifier inside a text or JSON column:
    the warehouse store's predicate), its documents and lookup keys are rebuilt from what is left, and it is
    swapped in; the running API reloads it within a second. Every other snapshot file is deleted rather than
    edited (copying into a fresh file also leaves no deleted bytes behind in DuckDB's blocks).
    sweep: every snapshot file, every table, counted with the same predicate."""

    name = "serving_snapshot"

    def __init__(self, serving_dir: Path) -> None:
        self.serving_dir = Path(serving_dir)

    @classmethod
    def from_settings(cls, settings: Any = None) -> SnapshotStore:
        from serving.settings import ServingSettings

        return cls(ServingSettings.from_env().serving_dir)

    def _files(self) -> list[Path]:
        directory = snapshots_dir(self.serving_dir)
        if not directory.is_dir():
            return []
        return sorted([*directory.glob(SNAPSHOT_GLOB), *directory.glob(".building-*.duckdb")])

    @staticmethod
    def _matches(con: duckdb.DuckDBPyConnection, catalog: str, subject: Any) -> dict[str, tuple[int, str | None]]:
        """table -> (rows naming the subject, the predicate) for every base table of `catalog`."""
        from orchestration.privacy.stores import WarehouseStore

        tables = con.execute(
            """
            select t.table_name,
                list((c.column_name, c.data_type) order by c.ordinal_position)
                    filter (where c.data_type in ('VARCHAR', 'JSON'))
            from information_schema.tables as t
            inner join information_schema.columns as c using (table_catalog, table_schema, table_name)
            where t.table_catalog = ? and t.table_type = 'BASE TABLE'
            group by all order by 1
            """, [catalog]).fetchall()
        found = {}
        for table, columns in tables:
            where = WarehouseStore.predicate([tuple(c) for c in columns or []], subject)
            rows = 0
            if where is not None:
                rows = con.execute(f'select count(*) from "{catalog}"."{table}" where {where}').fetchall()[0][0]
            found[table] = (rows, where)
        return found

    def sweep(self, subject: Any, progress: Callable[[str], None]) -> dict[str, int]:
        findings: dict[str, int] = {}
        files = self._files()
        for path in files:
            with duckdb.connect(str(path), read_only=True) as con:
                catalog = con.execute("select current_database()").fetchall()[0][0]
                for table, (rows, _) in self._matches(con, catalog, subject).items():
                    if rows:
                        findings[f"{path.name}:{table}"] = rows
        progress(f"serving snapshot sweep: {len(files)} snapshot files searched, "
                 f"{sum(findings.values()):,} rows found")
        return findings

    def erase(self, subject: Any, progress: Callable[[str], None]) -> Any:
        from orchestration.privacy.stores import Erasure

        erasure = Erasure()
        current = current_snapshot(self.serving_dir)
        if current is None or not current.exists():
            erasure.status = "not configured" if not self._files() else "erased"
            for path in self._files():  # snapshots without a CURRENT: nothing serves them
                path.unlink(missing_ok=True)
            return erasure
        removed: dict[str, int] = {}

        def fill(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
            con.execute(f"attach '{current}' as src (read_only)")
            matches = self._matches(con, "src", subject)
            for table, (rows, where) in matches.items():
                if table in DERIVED_TABLES:
                    continue
                keep = f" where not coalesce({where}, false)" if where else ""
                con.execute(f'create table "{table}" as select * from src."{table}"{keep}')
                if rows:
                    removed[table] = rows
            meta = {key: json.loads(value) for key, value in
                    con.execute("select key, value from src.snapshot_meta where key <> 'rows'").fetchall()}
            con.execute("detach src")
            meta["rewritten_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            meta["rewritten_from"] = current.name
            return meta

        new, _ = _build(self.serving_dir, fill)
        for table, rows in removed.items():
            erasure.detail[f"{table}"] = rows
            erasure.rows += rows
        progress(f"serving snapshot: {erasure.rows:,} rows left out of {new.name}, swapped in")
        for path in self._files():
            if path != new:
                path.unlink(missing_ok=True)
                erasure.detail.setdefault("older snapshot files deleted", 0)
                erasure.detail["older snapshot files deleted"] += 1
        return erasure


def register() -> None:
    """Plug the snapshot store into the erasure job's stores (replaces the hook of the same name)."""
    from orchestration.privacy.stores import register_store

    register_store("serving_snapshot", SnapshotStore.from_settings)
