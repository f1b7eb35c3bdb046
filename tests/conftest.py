"""Shared fixtures: the demo catalogue is built once per session (it is deterministic)."""

from __future__ import annotations

import os

import pytest

from demo import DemoCatalogue, build_demo_catalogue

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def demo_catalogue(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalogue:
    return build_demo_catalogue(tmp_path_factory.mktemp("demo_catalogue"))


@pytest.fixture(scope="session")
def demo_manifest(demo_catalogue: DemoCatalogue) -> dict:
    return demo_catalogue.manifest()
