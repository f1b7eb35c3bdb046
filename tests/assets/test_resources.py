"""Settings come from the environment when a run starts, not when the code location loads."""

from __future__ import annotations

import pytest

from assets.images import download_policy
from assets.resources import download_settings_from_env, pipeline_settings_from_env


def test_download_settings_are_read_when_a_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_IMAGE_FORMATS", "jpeg")
    monkeypatch.setenv("PIPELINE_ALLOW_PRIVATE_HOSTS", "0")
    downloads = download_settings_from_env()
    monkeypatch.setenv("PIPELINE_IMAGE_FORMATS", "jpeg,tiff")
    monkeypatch.setenv("PIPELINE_ALLOW_PRIVATE_HOSTS", "1")
    monkeypatch.setenv("PIPELINE_DOWNLOAD_WORKERS", "3")

    resolved = downloads.process_config_and_initialize()
    policy = download_policy(pipeline_settings_from_env(), resolved)

    assert policy.allowed_formats == frozenset({"jpeg", "tiff"})
    assert policy.allow_private_hosts and resolved.workers == 3


def test_an_empty_format_list_means_the_default_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_IMAGE_FORMATS", "")
    monkeypatch.setenv("PIPELINE_ALLOW_PRIVATE_HOSTS", "0")
    resolved = download_settings_from_env().process_config_and_initialize()
    policy = download_policy(pipeline_settings_from_env(), resolved)
    assert "avif" in policy.allowed_formats and "tiff" not in policy.allowed_formats
    assert not policy.allow_private_hosts
