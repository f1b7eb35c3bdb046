"""Shared fixtures: the demo catalogue, built once per test run (it is deterministic) and
shared by the xdist workers, and a spy on every socket the downloader dials."""

from __future__ import annotations

import os
import socket

import pytest
import urllib3.util.connection
from filelock import FileLock

from demo import DemoCatalogue, build_demo_catalogue

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def demo_catalogue(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> DemoCatalogue:
    if worker_id == "master":  # not under xdist
        return build_demo_catalogue(tmp_path_factory.mktemp("demo_catalogue"))
    # The workers' base temps share a parent: the first worker builds (~45 s), the others wait
    # for it and reuse the complete folder (build_demo_catalogue returns it as it is).
    root = tmp_path_factory.getbasetemp().parent / "demo_catalogue"
    with FileLock(f"{root}.lock"):
        return build_demo_catalogue(root)


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


# The files that take minutes (a full pipeline build, training, services), longest first. Under
# xdist (--dist loadfile) a worker takes a whole file at a time in collection order: these start
# at once and the short files fill the gaps, instead of one long file running alone at the end.
LONGEST_FILES = (
    "tests/e2e/test_full_demo.py",
    "tests/e2e/test_refresh.py",
    "tests/deploy/test_s3_data_dir.py",
    "tests/deploy/test_celery_executor.py",
    "tests/e2e/test_lineage.py",
    "tests/training/test_distributed.py",
    "tests/assets/test_curation_pipeline.py",
    "tests/deploy/test_postgres_instance.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # one process: the collected order, as always
        return
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}

    def order(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return rank.get(path, len(LONGEST_FILES))

    items.sort(key=order)  # stable: within a file, and among the rest, the collected order
