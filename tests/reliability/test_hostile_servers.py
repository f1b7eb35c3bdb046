"""Hostile image servers: every URL ends in bounded time and memory, with the right ledger reason.

The fault server (tests/curation/fault_server.py) plays the attacker on 127.0.0.1; DNS is faked by
patching `socket.getaddrinfo`, the resolver curation.download calls, so names can point at
loopback, private and metadata addresses without any network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import polars as pl
import pytest

from curation.catalogue import prepare_raw_catalogue
from curation.download import DownloadPolicy, fetch_image, fetch_images
from curation.ledger import build_curation_ledger
from curation.validation import validate_catalogue
from schemas.tables import (
    DUPLICATE_CLUSTERS_SCHEMA,
    IMAGE_STATUS_DOWNLOAD_FAILED,
    OUTCOME_DOWNLOAD_FAILED,
    PRODUCT_IMAGES_SCHEMA,
    empty_frame,
)
from tests.curation.fault_server import FaultServer, gzip_bomb_bytes, gzip_endless_parts

pytestmark = pytest.mark.timeout(60)

DEADLINE_S = 2.0
SLACK_S = 1.0  # scheduling noise on a loaded 2-core CI box
POLICY = DownloadPolicy(
    connect_timeout_s=1.0,
    read_timeout_s=1.0,
    deadline_s=DEADLINE_S,
    max_attempts=2,
    backoff_base_s=0.01,
    backoff_max_s=0.02,
    max_bytes=256 * 1024,
    allowed_private_networks=("127.0.0.1/32",),  # the fault server, nothing else
)
ROW = {
    "category1_code": "WOMAN",
    "category2_code": "SCARVES",
    "category3_code": "SILK",
    "product_code": "1",
    "title": "Scarf",
    "full_price": "10",
    "price": "10",
    "full_price_eur": "9",
    "price_eur": "9",
}

# route -> (reason code, why this is hostile)
HOSTILE_ROUTES: dict[str, str] = {
    "/drip-headers": "deadline",  # slowloris: a header byte every 0.2 s, forever
    "/drip-status": "deadline",  # slowloris before the status line
    "/drip": "deadline",  # body byte every 0.5 s under a large Content-Length
    "/endless-chunked": "too_large",  # chunked body that never ends, at full speed
    "/endless-chunked-slow": "deadline",  # small chunks, each within the read timeout
    "/gzip-bomb": "too_large",  # 64 MiB of zeros in ~64 KiB, Content-Encoding: gzip
    "/gzip-bomb-endless": "too_large",  # a gzip stream that inflates forever
    "/deflate-bomb": "too_large",
    "/stacked-encodings": "content_encoding",  # gzip, gzip: refused, not decoded twice
    "/brotli-claimed": "content_encoding",
    "/chunk-size-overflow": "connection",  # a 2**64-byte chunk header
    "/chain/10000": "redirects",  # a 10k-hop redirect chain
    "/loop": "redirects",
}


@pytest.fixture
def server() -> Iterator[FaultServer]:
    gzip_bomb_bytes(), gzip_endless_parts()  # built once, before any deadline is running
    with FaultServer() as running:
        yield running


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], None]:
    """Install name -> addresses answers; other names go to the real resolver (IP literals)."""
    real = socket.getaddrinfo

    def install(answers: dict[str, list[str]]) -> None:
        def resolve(host: str, port: object, *args: object, **kwargs: object) -> list:
            if host not in answers:
                return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
            family = {True: socket.AF_INET6, False: socket.AF_INET}
            return [
                (family[":" in a], socket.SOCK_STREAM, 6, "", (a, port or 80))
                for a in answers[host]
            ]

        monkeypatch.setattr(socket, "getaddrinfo", resolve)

    return install


def stored_files(root: Path) -> list[Path]:
    return [p for p in (root / "images").rglob("*") if p.is_file()] if root.exists() else []


def ledger_for(urls: list[str], images: pl.DataFrame) -> pl.DataFrame:
    """The curation ledger for one catalogue row per URL (no clusters: nothing downloads)."""
    raw = prepare_raw_catalogue(
        pl.DataFrame([{**ROW, "product_code": str(i), "imageurl": u} for i, u in enumerate(urls)])
    )
    validated, rejected = validate_catalogue(raw)
    assert rejected.is_empty()
    joined = validated.select("row_id", pl.col("imageurl").alias("url")).join(
        images, on="url", how="left"
    )
    # Nothing downloads, so nothing is normalised: those columns stay empty.
    missing = [pl.lit(None, dtype).alias(c) for c, dtype in PRODUCT_IMAGES_SCHEMA.items()
               if c not in joined.columns]  # fmt: skip
    product_images = joined.with_columns(missing).select(list(PRODUCT_IMAGES_SCHEMA))
    return build_curation_ledger(
        raw, rejected, product_images, empty_frame(DUPLICATE_CLUSTERS_SCHEMA)
    )


# --------------------------------------------------------------------------- one URL at a time


@pytest.mark.parametrize(("route", "code"), HOSTILE_ROUTES.items())
def test_each_hostile_route_ends_in_bounded_time_with_its_reason(
    server: FaultServer, tmp_path: Path, route: str, code: str
) -> None:
    started = time.monotonic()
    result = fetch_image(server.url(route), str(tmp_path), POLICY)
    elapsed = time.monotonic() - started
    assert (result.status, result.reason_code) == (IMAGE_STATUS_DOWNLOAD_FAILED, code), result
    assert elapsed < DEADLINE_S + SLACK_S, f"{route} held a worker {elapsed:.1f}s"
    assert result.sha256 is None and stored_files(tmp_path) == []


def test_redirect_chain_stops_after_max_redirects_requests(server: FaultServer, tmp_path: Path):
    fetch_image(server.url("/chain/10000"), str(tmp_path), POLICY)
    assert len(server.state.requests) == POLICY.max_redirects + 1


def test_a_batch_of_hostile_urls_ends_in_bounded_time_with_ledger_reasons(
    server: FaultServer, tmp_path: Path
) -> None:
    """All routes x 3 copies at once: workers are never pinned past the per-URL deadline."""
    urls = [server.url(f"{route}?copy={n}") for route in HOSTILE_ROUTES for n in range(3)]
    started = time.monotonic()
    images, stats = fetch_images(urls, str(tmp_path), POLICY, workers=len(urls))
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE_S + 2 * SLACK_S
    assert stats.failed == len(urls) and stats.ok == 0, stats
    ledger = ledger_for(urls, images)
    assert ledger.height == len(urls)
    assert (ledger["outcome"] == OUTCOME_DOWNLOAD_FAILED).all()
    expected = [HOSTILE_ROUTES[u.split(str(server.port), 1)[1].split("?")[0]] for u in urls]
    got = [reason.split(":", 1)[0] for reason in ledger.sort("row_index")["reason"]]
    # 39 workers and the attacker server share one interpreter on a loaded 2-core box: any
    # response can come late, so a time-based reason is as correct as the route's own one (the
    # per-route test above pins the exact reason on a quiet connection). What must never happen
    # is a wrong non-time reason, e.g. a bomb decoded to a "bad image" or a chain followed on.
    time_based = {"timeout", "deadline"}
    pairs = list(zip(got, expected, strict=True))
    assert all(g == e or g in time_based for g, e in pairs), pairs
    assert stored_files(tmp_path) == []


# --------------------------------------------------------------------------- DNS and SSRF

HOSTILE_NAMES: dict[str, list[str]] = {
    "loopback.evil.test": ["127.0.0.2"],
    "v6-loopback.evil.test": ["::1"],
    "mapped.evil.test": ["::ffff:127.0.0.1"],
    "private.evil.test": ["10.0.0.7"],
    "rfc1918.evil.test": ["192.168.1.1"],
    "cgnat.evil.test": ["100.64.0.1"],
    "zero.evil.test": ["0.0.0.0"],
    "link-local.evil.test": ["169.254.10.10"],
    "metadata.google.internal": ["169.254.169.254"],
    "aws-v6-metadata.evil.test": ["fd00:ec2::254"],
    "nat64-metadata.evil.test": ["64:ff9b::a9fe:a9fe"],
    "6to4-loopback.evil.test": ["2002:7f00:1::1"],
    "mixed.evil.test": ["93.184.216.34", "10.0.0.1"],  # one bad answer taints the name
}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_resolving_to_internal_addresses_are_never_dialled(
    tmp_path: Path, fake_dns, dialled: list[str], name: str
) -> None:
    fake_dns(HOSTILE_NAMES)
    policy = replace(POLICY, allowed_private_networks=())
    result = fetch_image(f"http://{name}/image.jpg", str(tmp_path), policy)
    assert result.reason_code == "ssrf", result
    assert dialled == []


def test_metadata_stays_blocked_inside_an_allowed_private_network(
    tmp_path: Path, fake_dns, dialled: list[str]
) -> None:
    fake_dns(HOSTILE_NAMES)
    policy = replace(POLICY, allowed_private_networks=("169.254.0.0/16", "fd00::/8"))
    for name in ("metadata.google.internal", "aws-v6-metadata.evil.test"):
        assert fetch_image(f"http://{name}/", str(tmp_path), policy).reason_code == "ssrf"
    assert dialled == []


def test_redirect_to_an_internal_name_is_refused_after_the_first_hop(
    server: FaultServer, tmp_path: Path, fake_dns, dialled: list[str]
) -> None:
    fake_dns(HOSTILE_NAMES)
    target = quote("http://metadata.google.internal/computeMetadata/v1/", safe="")
    result = fetch_image(server.url(f"/redirect-to?u={target}"), str(tmp_path), POLICY)
    assert result.reason_code == "ssrf"
    assert set(dialled) == {"127.0.0.1"} and len(server.state.requests) == 1


def test_dns_rebinding_cannot_swap_the_dialled_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialled: list[str]
) -> None:
    """Public on the check, loopback on the connect: we dial the checked address, never the
    name again (so a second lookup cannot sneak 127.0.0.1 in)."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"], ["127.0.0.1"]])
    real = socket.getaddrinfo

    def flipping(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host != "rebind.evil.test":
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 80)) for a in next(answers)]

    monkeypatch.setattr(socket, "getaddrinfo", flipping)
    policy = replace(POLICY, allowed_private_networks=())
    result = fetch_image("http://rebind.evil.test/x.jpg", str(tmp_path), policy)
    # Attempt 1 dialled the vetted public address (refused: no network here); attempt 2
    # looked the name up again, got loopback and refused it before dialling.
    assert dialled == ["93.184.216.34"]
    assert result.reason_code == "ssrf" and result.attempts == 2


REDIRECT_TARGETS: dict[str, str] = {
    "file:///etc/passwd": "scheme",
    "FILE:///etc/passwd": "scheme",
    "file://localhost/etc/shadow": "scheme",
    "ftp://example.com/x.jpg": "scheme",
    "gopher://127.0.0.1:6379/_INFO": "scheme",
    "dict://127.0.0.1:11211/stats": "scheme",
    "data:image/png;base64,iVBORw0KGgo=": "scheme",
    "javascript:alert(1)": "scheme",
    "s3://bucket/key.jpg": "scheme",
    "memory://leak.jpg": "scheme",
    "//169.254.169.254/latest/meta-data/": "ssrf",  # scheme-relative
    "http://[::ffff:169.254.169.254]/": "ssrf",
    "http://2130706434:1/": "ssrf",  # 127.0.0.2 as one decimal number
    "http://0x7f.0.0.2:1/": "ssrf",  # 127.0.0.2 in hex/short form
    "http://10.0.0.1/": "ssrf",
}


@pytest.mark.parametrize(("target", "code"), REDIRECT_TARGETS.items())
def test_redirects_to_other_schemes_and_internal_hosts_are_refused(
    server: FaultServer, tmp_path: Path, dialled: list[str], target: str, code: str
) -> None:
    # Even an operator who allows file/s3/memory for the catalogue's own URLs does not let a
    # server's redirect reach them.
    policy = replace(
        POLICY,
        allowed_schemes=frozenset({"http", "https", "file", "s3", "memory"}),
        allowed_private_networks=("127.0.0.1/32",),
    )
    result = fetch_image(
        server.url(f"/redirect-to?u={quote(target, safe='')}"), str(tmp_path), policy
    )
    assert result.reason_code == code, result
    assert set(dialled) == {"127.0.0.1"} and len(server.state.requests) == 1
    assert stored_files(tmp_path) == []


# --------------------------------------------------------------------------- bounded memory

_RSS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from curation.download import DownloadPolicy, fetch_image, fetch_images

    urls, warm = json.loads(sys.argv[1]), sys.argv[2]
    policy = DownloadPolicy(
        connect_timeout_s=1.0, read_timeout_s=1.0, deadline_s=3.0, max_attempts=1,
        max_bytes=2 * 1024 * 1024, allowed_private_networks=("127.0.0.1/32",),
    )
    fetch_image(warm, sys.argv[3], policy)  # imports, Pillow decoders, thread pool warm
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    frame, stats = fetch_images(urls, sys.argv[3], policy, workers=8)
    print(json.dumps({
        "before_kib": before,
        "after_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "elapsed_s": time.monotonic() - started,
        "reasons": stats.reasons,
        "ok": stats.ok,
    }))
    """
)
# Every route here would take gigabytes if read unbounded (endless streams at wire speed for the
# whole deadline, a 400-megapixel PNG decoded); the caps keep each worker to ~max_bytes.
MEMORY_ROUTES = (
    "/endless-chunked",
    "/gzip-bomb-endless",
    "/gzip-bomb",
    "/deflate-bomb",
    "/bomb.png",
)
MAX_RSS_GROWTH_MIB = 96


def test_peak_memory_stays_bounded_under_bombs_and_endless_bodies(
    server: FaultServer, tmp_path: Path
) -> None:
    urls = [server.url(f"{route}?n={n}") for route in MEMORY_ROUTES for n in range(4)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    completed = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, json.dumps(urls), server.url("/ok.jpg"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=45,
        env=env,
        check=True,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    growth_mib = (report["after_kib"] - report["before_kib"]) / 1024
    assert growth_mib < MAX_RSS_GROWTH_MIB, report
    assert report["ok"] == 0 and report["elapsed_s"] < 3.0 + 2 * SLACK_S, report
    # A bomb the shared test server serves slower than the read timeout is refused as a
    # timeout instead: just as correct; what matters here is that none was held in memory.
    refused = {"too_large", "decompression_bomb", "timeout", "deadline"}
    assert set(report["reasons"]) <= refused and report["reasons"]["too_large"] >= 8, report
