"""The connector assets: materializing one lands the files dropped in its inbox, once, and moves them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from connectors.landing import LandingZone


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CDP_LANDING_PATH", str(tmp_path / "landing"))
    monkeypatch.setenv("CDP_INBOX_PATH", str(tmp_path / "inbox"))
    return tmp_path


def test_landing_asset_lands_the_inbox_and_reports_counts(home: Path) -> None:
    from orchestration.defs.ingest import build_landing_asset

    inbox = home / "inbox" / "email"
    inbox.mkdir(parents=True)
    (inbox / "webhook-1.json").write_text('[{"sg_event_id": "a"}, {"sg_event_id": "b"}]')
    (inbox / "readme.txt").write_text("not an export")
    asset = build_landing_asset("email")

    result = dg.materialize([asset])
    metadata = result.asset_materializations_for_node(asset.op.name)[0].metadata
    assert metadata["new_batches"].value == 1 and metadata["new_records"].value == 2
    assert (inbox / "landed" / "webhook-1.json").exists() and not (inbox / "webhook-1.json").exists()
    assert (inbox / "readme.txt").exists()  # not a format of this source: left where it was
    assert LandingZone(home / "landing").landed_counts()["email"] == {"batches": 1, "records": 2}

    # The same export dropped again is the same batch: nothing new lands.
    (inbox / "webhook-1-copy.json").write_text('[{"sg_event_id": "a"}, {"sg_event_id": "b"}]')
    again = dg.materialize([asset]).asset_materializations_for_node(asset.op.name)[0].metadata
    assert again["new_batches"].value == 0 and again["records_total"].value == 2
