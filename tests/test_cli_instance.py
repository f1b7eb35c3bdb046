"""The CLI gives a bare DAGSTER_HOME the profile `make instance` would, and leaves an
operator's dagster.yaml alone."""

from __future__ import annotations

import pytest

from dagster_project.cli import DEPLOY_DIR, ensure_instance_config, main


def test_a_bare_home_gets_the_local_profile(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    ensure_instance_config()
    written = (tmp_path / "home" / "dagster.yaml").read_text()
    assert written == (DEPLOY_DIR / "dagster.local.yaml").read_text()
    assert "DefaultRunCoordinator" in written  # submitted runs start without a daemon


def test_pg_url_picks_the_team_profile_and_an_existing_file_stays(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://nobody@127.0.0.1/none")
    ensure_instance_config()
    assert "QueuedRunCoordinator" in (tmp_path / "dagster.yaml").read_text()
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    ensure_instance_config()
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_make_instance_runs_the_same_choice(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    assert main(["instance"]) == 0
    written = (tmp_path / "home" / "dagster.yaml").read_text()
    assert written == (DEPLOY_DIR / "dagster.local.yaml").read_text()
