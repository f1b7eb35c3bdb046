"""Shared fixtures: the demo catalogue, built once per session (it is deterministic), and a
spy on every socket the downloader dials."""

from __future__ import annotations

import os
import socket

import pytest
import urllib3.util.connection

from demo import DemoCatalogue, build_demo_catalogue

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def demo_catalogue(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalogue:
    return build_demo_catalogue(tmp_path_factory.mktemp("demo_catalogue"))


@pytest.fixture(scope="session")
def demo_manifest(demo_catalogue: DemoCatalogue) -> dict:
    return demo_catalogue.manifest()


@pytest.fixture
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address urllib3 opens a socket to, which proves refused targets were never
    contacted; anything but the local fault server is refused (no network in tests)."""
    hosts: list[str] = []
    real = urllib3.util.connection.create_connection

    def spy(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        hosts.append(address[0])
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError("test: no network beyond the fault server")
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(urllib3.util.connection, "create_connection", spy)
    return hosts
