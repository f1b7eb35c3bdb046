"""Keep-alive reuse in the downloader: one connection per vetted (scheme, host, address, port)
within a batch, a stale socket replayed once on a fresh connection, and every URL still vetted
and deadline-bound on a reused socket. The fault server speaks HTTP/1.1 here."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from curation.download import fetch_images
from curation.download.connections import ConnectionPools, PoolKey
from curation.download.transport import Deadline, fetch_once
from schemas.tables import IMAGE_STATUS_OK
from tests.curation.fault_server import FaultServer, fast_policy

pytestmark = pytest.mark.timeout(30)

POLICY = fast_policy(backoff_max_s=0.02)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(keep_alive=True) as running:
        yield running


def _resolve_to(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Iterator[str]]) -> None:
    """Each lookup of a name in `answers` gets its next address; other names resolve as usual."""
    real = socket.getaddrinfo

    def resolve(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host not in answers:
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers[host]), port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def _always(address: str) -> Iterator[str]:
    while True:
        yield address


def test_a_batch_reuses_one_connection_per_host(
    server: FaultServer, tmp_path: Path, dialled: list[str]
) -> None:
    urls = [server.url(f"/ok.jpg?n={n}") for n in range(6)] + [server.url("/ok.png")]
    frame, stats = fetch_images(urls, str(tmp_path), POLICY, workers=1)
    assert stats.ok == len(urls)
    assert server.state.connections == 1 and len(server.state.requests) == len(urls)
    assert dialled == ["127.0.0.1"]


def test_short_error_and_redirect_answers_keep_their_connection(
    server: FaultServer, tmp_path: Path
) -> None:
    """A 404, a 500 and a redirect hop each read their short body, so one connection serves
    the whole batch instead of a new handshake after each."""
    urls = [server.url(p) for p in ("/status/404", "/redirect-ok", "/status/500", "/ok.png")]
    frame, stats = fetch_images(urls, str(tmp_path), replace(POLICY, max_attempts=1), workers=1)
    assert (stats.ok, stats.failed) == (2, 2)
    assert server.state.connections == 1 and len(server.state.requests) == 5


def test_connections_are_kept_apart_by_host_name(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two names on one address: one connection each, each request naming its own Host."""
    names = ["a.example.test", "b.example.test"]
    _resolve_to(monkeypatch, {name: _always("127.0.0.1") for name in names})
    names *= 3
    urls = [f"http://{name}:{server.port}/ok.jpg?n={n}" for n, name in enumerate(names)]
    _, stats = fetch_images(urls, str(tmp_path), POLICY, workers=1)
    assert stats.ok == len(urls)
    assert server.state.connections == 2
    assert [host for _, host in server.state.requests] == [f"{n}:{server.port}" for n in names]


def test_a_stale_keep_alive_socket_is_replayed_once_on_a_fresh_connection(
    server: FaultServer, tmp_path: Path
) -> None:
    urls = [server.url("/ok.jpg"), server.url("/drop-if-reused")]
    frame, stats = fetch_images(urls, str(tmp_path), POLICY, workers=1)
    assert stats.ok == 2, frame
    # The replay is not a retry: it does not cost the URL one of its attempts.
    assert frame.filter(frame["url"] == urls[1])["attempts"].item() == 1
    assert server.hits("/drop-if-reused") == 2 and server.state.connections == 2


def test_a_fresh_connection_that_drops_is_not_replayed(server: FaultServer, tmp_path: Path) -> None:
    """Replay only follows a reused socket: a server that hangs up on every request gets one
    extra request in all (the first attempt, on the reused socket), not one per attempt."""
    urls = [server.url("/ok.jpg"), server.url("/drop")]
    frame, stats = fetch_images(urls, str(tmp_path), POLICY, workers=1)
    dropped = frame.filter(frame["url"] == urls[1]).row(0, named=True)
    assert dropped["reason"].startswith("connection") and dropped["attempts"] == 3
    assert server.hits("/drop") == POLICY.max_attempts + 1


def test_a_pooled_connection_never_skips_the_ssrf_check(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialled: list[str]
) -> None:
    """The name is vetted again for every URL: once it resolves to a private address, the
    open connection to its earlier, allowed address is not used for it."""
    _resolve_to(monkeypatch, {"cdn.example.test": iter(["127.0.0.1", "10.0.0.1", "10.0.0.1"])})
    urls = [f"http://cdn.example.test:{server.port}/ok.jpg?n={n}" for n in range(2)]
    frame, _ = fetch_images(urls, str(tmp_path), POLICY, workers=1)
    assert frame["status"].to_list() == [IMAGE_STATUS_OK, "download_failed"]
    assert frame["reason"][1].startswith("ssrf")
    assert len(server.state.requests) == 1 and dialled == ["127.0.0.1"]


def test_the_deadline_still_cuts_a_reused_socket(server: FaultServer, tmp_path: Path) -> None:
    """The watchdog of the request that holds a kept-alive socket is the one that cuts it."""
    policy = replace(POLICY, max_attempts=1)
    urls = [server.url("/ok.jpg"), server.url("/drip-headers")]
    started = time.monotonic()
    frame, _ = fetch_images(urls, str(tmp_path), policy, workers=1)
    assert time.monotonic() - started < policy.deadline_s + 1.5
    assert frame["reason"][1].startswith("deadline"), frame
    assert server.state.connections == 1  # the slowloris was served on the reused socket


def test_idle_connections_are_capped_and_closed_with_the_pools(server: FaultServer) -> None:
    deadline = Deadline(5.0)
    with ConnectionPools(max_idle=1) as pools:
        fetch_once(server.url("/ok.jpg"), POLICY, deadline, pools)
        assert pools.idle_count() == 1
        other: PoolKey = ("http", "localhost", "127.0.0.1", server.port)
        conn, reused = pools.acquire(other, lambda sock: None)
        assert not reused
        conn.connect()
        pools.release(other, conn)  # evicts the older idle connection
        assert pools.idle_count() == 1
    assert pools.idle_count() == 0 and conn.is_closed
