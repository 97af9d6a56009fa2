"""The serving snapshot and its in-memory index on a small handmade gold warehouse: publish (tables, documents,
missing tables, retention), lookups by id and identifier, a retired id answering with its survivor, a shared
identifier, cursor paging of segment members and events, and the documents' schema (strict msgspec decode)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import msgspec
import pytest

from serving.index import AmbiguousIdentifierError, BadCursorError, ServingIndex, SnapshotHolder
from serving.profiles.schemas import ProfileDocument, ProfileEventsPage
from serving.segments.schemas import SegmentList, SegmentMembersPage
from serving.snapshot import SnapshotError, current_snapshot, prune, publish, publish_snapshot, read_meta

GOLD_DDL = """
create schema if not exists gold;
create or replace table gold.profiles as
select
    printf('prf_%04d', i) as profile_id, printf('003CRM%012d', i) as crm_contact_id,
    'First' || i as first_name, 'Last' || i as last_name, printf('person%d@example.org', i) as email,
    printf('+4915100%06d', i) as phone, date '2000-01-01' + i::integer as birth_date, 'Berlin' as city,
    '10115' as postal_code,
    'Germany' as country, case when i % 2 = 0 then 'salesforce' else 'web' end as contact_source,
    'MBA' as program_interest, 'Inquiry' as application_stage, 'Not Enrolled' as enrollment_status,
    'inquiry' as lifecycle_stage, 'implied' as email_consent, 'unknown' as whatsapp_consent,
    i::bigint as web_events, 0::bigint as app_events, 1::bigint as crm_versions, 0::bigint as email_events,
    0::bigint as whatsapp_messages, i::bigint as page_views, 0::bigint as brochure_downloads,
    1::bigint as form_submits, 0::bigint as app_sessions, 0::bigint as lessons_completed,
    0::bigint as quizzes_submitted, null::double as avg_quiz_score, 0::bigint as email_opens,
    0::bigint as email_clicks, 0::bigint as email_bounces, 3::bigint as identifier_count, 1::bigint as crm_contacts,
    0.9::double as identity_confidence, false as is_probabilistic_merge, false as has_shared_identifier,
    timestamp '2025-01-01' + to_days(i::integer) as first_seen_at,
    timestamp '2025-06-01' + to_days(i::integer) as last_seen_at,
    timestamp '2025-06-01' as last_web_at, null::timestamp as last_app_at, timestamp '2026-01-01' as computed_at
from range(1, {people} + 1) as t(i);
create or replace table gold.profile_identifiers as
select profile_id, identifier_type, identifier_value, identifier_type || ':' || identifier_value as identifier_key,
    false as is_shared, source
from (
    select profile_id, 'email' as identifier_type, email as identifier_value, 'salesforce' as source
    from gold.profiles
    union all select profile_id, 'email', email, 'web' from gold.profiles
    union all select profile_id, 'phone', phone, 'salesforce' from gold.profiles
    union all select profile_id, 'crm_id', crm_contact_id, 'salesforce' from gold.profiles
    union all select profile_id, 'anonymous_id', 'anon_' || profile_id, 'web' from gold.profiles
);
create or replace table gold.profile_merges (retired_profile_id varchar, surviving_profile_id varchar,
    merge_kind varchar, founding_identifier_type varchar, first_published_at timestamp, retired_at timestamp);
insert into gold.profile_merges values ('prf_retired', 'prf_0002', 'deterministic', 'anonymous_id',
    timestamp '2025-01-01', timestamp '2025-02-01');
create or replace table gold.consent_current as
select profile_id, channel, case when channel = 'email' then 'implied' else 'unknown' end as status,
    case when channel = 'email' then 'legitimate_interest' else 'none' end as legal_basis,
    channel = 'email' as can_contact, timestamp '2025-03-01' as status_at, 'default' as source,
    timestamp '2026-01-01' as updated_at
from gold.profiles, (values ('email'), ('whatsapp'), ('sms')) as c(channel);
create or replace table gold.engagement_scores as
select profile_id, (i % 100)::double as engagement_score, 'stable' as engagement_trend, 3::bigint as activity_30d,
    2::bigint as activity_prev_30d, 1.0 as web_points, 0.0 as app_points, 0.0 as email_points,
    0.0 as whatsapp_points, timestamp '2025-06-01' as last_engaged_at, timestamp '2025-06-02' as as_of,
    timestamp '2026-01-01' as computed_at
from (select profile_id, row_number() over (order by profile_id) as i from gold.profiles);
create or replace table gold.segment_results as
select 'even_people' as segment, profile_id, null::double as score, timestamp '2026-01-01' as as_of
from gold.profiles where right(profile_id, 1) in ('0', '2', '4', '6', '8')
union all
select 'scored_people', profile_id, 0.5, timestamp '2026-01-01' from gold.profiles where right(profile_id, 1) = '3';
create or replace table gold.segment_memberships as
select md5(segment || profile_id) as membership_id, profile_id, segment, timestamp '2025-12-01' as entered_at,
    null::timestamp as exited_at, score as entry_score, timestamp '2025-12-01' as updated_at
from gold.segment_results
union all
select 'gone', 'prf_0001', 'even_people', timestamp '2025-01-01', timestamp '2025-02-01', null, timestamp '2025-02-01';
create or replace table gold.segment_definitions as
select * from (values
    ('even_people', 'Even people', 'Profiles whose id ends in an even digit', 'batch', 'growth', 'salesforce,email'),
    ('scored_people', 'Scored', 'Profiles ending in 3', 'scored', 'admissions', 'api'),
    ('empty_one', 'Empty', 'Nobody', 'realtime', 'admissions', '')
) as d(segment, name, description, kind, owner, destinations),
lateral (select count(*) as members from gold.segment_results as r where r.segment = d.segment);
create or replace table gold.profile_events as
select p.profile_id, p.profile_id || '-ev' || n as event_id, 'web' as source, 'page_view' as event_type,
    timestamp '2025-05-01' + to_hours(n::integer) as occurred_at, null::timestamp as received_at,
    ('{{"page_path": "/p' || n || '", "first_name": "Secret", "program": null}}')::json as properties,
    'batch:' || n as record_key
from gold.profiles as p, range(0, {events}) as e(n);
"""


def make_gold_warehouse(path: Path, people: int = 20, events: int = 3) -> Path:
    """A warehouse holding only gold tables shaped like the dbt models' (the columns the snapshot reads)."""
    with duckdb.connect(str(path)) as con:
        con.execute(GOLD_DDL.format(people=people, events=events))
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ServingIndex]:
    root = tmp_path_factory.mktemp("serving")
    warehouse = make_gold_warehouse(root / "warehouse.duckdb", people=25, events=55)
    path = publish(warehouse, root / "serving")
    return root, ServingIndex(path)


def test_publish_swaps_current_and_describes_itself(published: tuple[Path, ServingIndex]) -> None:
    root, index = published
    assert current_snapshot(root / "serving") == index.path
    assert (root / "serving" / "CURRENT").read_text().strip() == index.path.name
    meta = read_meta(index.path)
    assert meta["rows"]["profiles"] == 25 and meta["rows"]["segment_memberships"] == 12 + 3  # open ones only
    assert meta["rows"]["recent_events"] == 25 * 50  # at most 50 per profile
    assert meta["skipped"] == []
    assert index.describe()["profiles"] == 25


def test_every_document_matches_the_schema(published: tuple[Path, ServingIndex]) -> None:
    _, index = published
    with duckdb.connect(str(index.path), read_only=True) as con:
        ids = [r[0] for r in con.execute("select profile_id from profiles").fetchall()]
    for profile_id in ids:
        document = msgspec.json.decode(index.profile(profile_id), type=ProfileDocument, strict=True)
        assert document.profile_id == profile_id
    doc = msgspec.json.decode(index.profile("prf_0004"), type=ProfileDocument)
    assert doc.traits["email"].value == "person4@example.org" and doc.traits["email"].source == "salesforce"
    assert doc.traits["program_interest"].source == "salesforce"
    assert doc.traits["page_views"].source == "web" and doc.traits["page_views"].value == 4
    assert doc.traits["email_consent"].value == "implied" and doc.traits["email_consent"].source == "default"
    assert "avg_quiz_score" not in doc.traits  # null traits are left out
    assert set(doc.consent) == {"email", "whatsapp", "sms"} and doc.consent["email"].can_contact is True
    assert [s.name for s in doc.segments] == ["even_people"] and doc.segments[0].entered_at == "2025-12-01T00:00:00Z"
    assert {(i.type, i.value) for i in doc.identifiers} >= {("email", "person4@example.org"), ("crm_id",
                                                                                           "003CRM000000000004")}
    assert len(doc.identifiers) == 4  # one per identifier, not per source
    assert doc.engagement is not None and doc.engagement.trend == "stable"


def test_lookup_by_identifier_and_unknown(published: tuple[Path, ServingIndex]) -> None:
    _, index = published
    assert json.loads(index.lookup("email:person7@example.org"))["profile_id"] == "prf_0007"
    assert json.loads(index.lookup("phone:+4915100000007"))["profile_id"] == "prf_0007"
    assert index.lookup("email:person7@example.com") is None
    assert index.profile("prf_9999") is None


def test_a_retired_id_answers_with_the_survivor(published: tuple[Path, ServingIndex]) -> None:
    _, index = published
    document = msgspec.json.decode(index.profile("prf_retired"), type=ProfileDocument, strict=True)
    assert document.profile_id == "prf_0002" and document.merged_into == "prf_0002"
    assert document.requested_profile_id == "prf_retired"
    assert json.loads(index.events("prf_retired", 5, None))["merged_into"] == "prf_0002"
    assert "merged_into" not in json.loads(index.profile("prf_0002"))


def test_segment_members_paging_covers_every_member_once(published: tuple[Path, ServingIndex]) -> None:
    _, index = published
    SegmentList_ = msgspec.json.decode(index.segments_body, type=SegmentList, strict=True)
    counts = {s.segment: s.members for s in SegmentList_.segments}
    assert counts == {"even_people": 12, "scored_people": 3, "empty_one": 0}
    seen: list[str] = []
    cursor = None
    while True:
        page = msgspec.json.decode(index.members("even_people", 5, cursor), type=SegmentMembersPage, strict=True)
        seen += [m.profile_id for m in page.members]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 12
    scored = msgspec.json.decode(index.members("scored_people", 10, None), type=SegmentMembersPage)
    assert {m.score for m in scored.members} == {0.5} and scored.next_cursor is None
    assert index.members("nope", 5, None) is None
    with pytest.raises(BadCursorError):
        index.members("even_people", 5, "not-a-cursor!")


def test_events_are_paged_newest_first_without_private_properties(published: tuple[Path, ServingIndex]) -> None:
    _, index = published
    events, cursor = [], None
    while True:
        page = msgspec.json.decode(index.events("prf_0003", 20, cursor), type=ProfileEventsPage, strict=True)
        events += page.events
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(events) == 50 == len({e.event_id for e in events})  # the latest 50 of 55
    assert [e.occurred_at for e in events] == sorted((e.occurred_at for e in events), reverse=True)
    assert events[0].event_id == "prf_0003-ev54"
    assert events[0].properties == {"page_path": "/p54"}  # first_name is not published, nulls are dropped
    assert index.events("prf_9999", 5, None) is None


def test_a_shared_identifier_is_ambiguous(tmp_path: Path) -> None:
    warehouse = make_gold_warehouse(tmp_path / "w.duckdb", people=3, events=1)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("insert into gold.profile_identifiers values ('prf_0001', 'device_id', 'tablet', "
                    "'device_id:tablet', true, 'app'), ('prf_0002', 'device_id', 'tablet', 'device_id:tablet', "
                    "true, 'app')")
    index = ServingIndex(publish(warehouse, tmp_path / "serving"))
    with pytest.raises(AmbiguousIdentifierError) as raised:
        index.lookup("device_id:tablet")
    assert raised.value.profile_ids == ["prf_0001", "prf_0002"]


def test_old_warehouse_missing_tables_and_retention(tmp_path: Path) -> None:
    warehouse = make_gold_warehouse(tmp_path / "w.duckdb", people=4, events=1)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("drop table gold.segment_memberships; drop table gold.consent_current")
    serving = tmp_path / "serving"
    first = publish_snapshot(warehouse, serving)
    assert first.skipped == ["gold.consent_current", "gold.segment_memberships"]
    assert read_meta(first.path)["skipped"] == first.skipped
    index = ServingIndex(first.path)
    assert json.loads(index.profile("prf_0002"))["consent"] == {}
    paths = [first.path] + [publish(warehouse, serving) for _ in range(4)]
    left = sorted((serving / "snapshots").glob("snapshot-*.duckdb"))
    assert left == paths[-3:]  # the current one and the previous two
    assert prune(serving) == []
    with pytest.raises(SnapshotError):
        publish(tmp_path / "missing.duckdb", serving)


def test_holder_swaps_when_current_changes(tmp_path: Path) -> None:
    warehouse = make_gold_warehouse(tmp_path / "w.duckdb", people=3, events=1)
    serving = tmp_path / "serving"
    holder = SnapshotHolder(serving)
    assert holder.refresh() is False and holder.index is None  # nothing published yet
    publish(warehouse, serving)
    assert holder.refresh() is True and holder.index is not None
    old = holder.index
    assert holder.refresh() is False and holder.index is old
    with duckdb.connect(str(warehouse)) as con:
        con.execute("update gold.profiles set first_name = 'Renamed' where profile_id = 'prf_0001'")
    publish(warehouse, serving)
    assert holder.refresh() is True and holder.index is not old
    assert json.loads(holder.index.profile("prf_0001"))["traits"]["first_name"]["value"] == "Renamed"
    assert json.loads(old.profile("prf_0001"))["traits"]["first_name"]["value"] == "First1"  # still usable
