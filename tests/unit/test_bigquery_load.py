"""The BigQuery load path's configuration and failure messages (the loading itself: tests/bigquery/)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from connectors.bigquery_load import BigQueryLoadError, BigQuerySettings, load_landing
from connectors.landing import LandingZone


def test_settings_come_from_the_environment_and_need_a_project() -> None:
    with pytest.raises(BigQueryLoadError, match="CDP_BIGQUERY_PROJECT is not set"):
        BigQuerySettings.from_env({})
    settings = BigQuerySettings.from_env({"CDP_BIGQUERY_PROJECT": "p", "CDP_BIGQUERY_LOCATION": "US",
                                          "CDP_BIGQUERY_API_ENDPOINT": "http://127.0.0.1:9050"})
    assert (settings.project, settings.location, settings.landing_dataset, settings.api_endpoint) == \
        ("p", "US", "landing", "http://127.0.0.1:9050")


def test_a_missing_key_file_is_named() -> None:
    with pytest.raises(BigQueryLoadError, match="is not a file"):
        BigQuerySettings(project="p", keyfile="/nonexistent/key.json").client()


def test_an_unreachable_bigquery_fails_in_seconds_with_where_it_looked(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = BigQuerySettings(project="p", api_endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(BigQueryLoadError, match=f"cannot create or reach p.landing at http://127.0.0.1:{port}"):
        load_landing(LandingZone(tmp_path), settings, progress=lambda _: None)
