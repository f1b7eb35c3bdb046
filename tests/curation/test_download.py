"""The downloader against a local fault server: one test per way a real image host misbehaves.

Deadlines are ~2 s here, so every fault must resolve in a bounded time; the per-test timeout
mark turns a hung worker into a failure instead of a stuck suite.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
import pytest
from PIL import Image, ImageFile

from curation import download
from curation.download import (
    BadImageError,
    DownloadPolicy,
    batch,
    fetch_image,
    fetch_images,
    inspect_image_bytes,
    transport,
)
from curation.download.url_index import recorded_rows
from curation.images import store as image_store
from curation.images.sniff import DEFAULT_ALLOWED_FORMATS, accept_header
from schemas.tables import (
    IMAGE_FETCH_SCHEMA,
    IMAGE_STATUS_BAD_IMAGE,
    IMAGE_STATUS_DOWNLOAD_FAILED,
    IMAGE_STATUS_OK,
)
from tests.curation.fault_server import (
    SLOW_DELAY_S,
    FaultServer,
    bomb_png_bytes,
    fast_policy,
    gzip_bomb_bytes,
    jpeg_bytes,
    png_bytes,
)

pytestmark = pytest.mark.timeout(30)

FAST = fast_policy(max_bytes=256 * 1024)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    bomb_png_bytes()  # built once, before any deadline is running (seconds on a loaded box)
    with FaultServer() as running:
        yield running


def fetch(url: str, root: Path | str, policy: DownloadPolicy = FAST) -> download.ImageFetchResult:
    started = time.monotonic()
    result = fetch_image(url, str(root), policy)
    # Whatever the fault, a worker is released within the deadline (plus scheduling slack).
    assert time.monotonic() - started < policy.deadline_s + 1.5
    return result


def assert_failed(result: download.ImageFetchResult, status: str, code: str) -> None:
    assert (result.status, result.reason_code) == (status, code), result.reason
    assert result.sha256 is None and result.path is None


def stored_files(root: Path) -> list[Path]:
    """Files in the content store (the root also holds the per-URL success index)."""
    return sorted(p for p in (root / "images").rglob("*") if p.is_file())


# --------------------------------------------------------------------------- success


def test_ok_jpeg_is_stored_content_addressed(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/ok.jpg"), tmp_path)
    digest = hashlib.sha256(jpeg_bytes()).hexdigest()
    assert result.status == IMAGE_STATUS_OK and result.reason is None
    assert (result.format, result.width, result.height) == ("jpeg", 128, 96)
    assert (result.sha256, result.bytes, result.attempts) == (digest, len(jpeg_bytes()), 1)
    assert result.path == f"{tmp_path}/images/{digest[:2]}/{digest}.jpg"
    assert Path(result.path).read_bytes() == jpeg_bytes()


def test_ok_png_gets_png_extension(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/ok.png"), tmp_path)
    assert (result.status, result.format, result.width, result.height) == ("ok", "png", 64, 48)
    assert result.path is not None and result.path.endswith(".png")


def test_vetted_ip_is_dialled_with_original_host_header(
    server: FaultServer, tmp_path: Path, fake_dns: None, dialled: list[str]
) -> None:
    result = fetch(f"http://images.example.test:{server.port}/ok.jpg", tmp_path)
    assert result.status == IMAGE_STATUS_OK
    assert dialled == ["127.0.0.1"]
    assert server.state.requests == [("/ok.jpg", f"images.example.test:{server.port}")]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under example.test resolve to the fault server's 127.0.0.1."""
    real = socket.getaddrinfo

    def resolve(host: str, *args: object, **kwargs: object) -> list:
        return real("127.0.0.1" if host.endswith(".example.test") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_https_dials_vetted_ip_but_verifies_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_dns: None, dialled: list[str]
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=images.example.test"]
        + ["-addext", "subjectAltName=DNS:images.example.test"],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FaultServer(tls=context) as tls_server:
        path = f":{tls_server.port}/ok.jpg"
        untrusted = fetch(f"https://images.example.test{path}", tmp_path / "a")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust our self-signed CA from now on
        trusted = fetch(f"https://images.example.test{path}", tmp_path / "b")
        wrong_name = fetch(f"https://other.example.test{path}", tmp_path / "c")
    assert untrusted.reason_code == "tls" and untrusted.attempts == 1
    assert trusted.status == IMAGE_STATUS_OK
    assert wrong_name.reason_code == "tls" and "other.example.test" in (wrong_name.reason or "")
    assert set(dialled) == {"127.0.0.1"}


def test_relative_redirect_is_followed(server: FaultServer, tmp_path: Path) -> None:
    assert fetch(server.url("/redirect-ok"), tmp_path).status == IMAGE_STATUS_OK


# --------------------------------------------------------------------------- HTTP status


@pytest.mark.parametrize("status", [404, 403, 410])
def test_client_errors_are_not_retried(server: FaultServer, tmp_path: Path, status: int) -> None:
    result = fetch(server.url(f"/status/{status}"), tmp_path)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "http_status")
    assert result.reason == f"http_status: {status}"
    assert result.attempts == 1 and server.hits(f"/status/{status}") == 1


def test_500_then_200_is_retried(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/flaky-500"), tmp_path)
    assert (result.status, result.attempts) == (IMAGE_STATUS_OK, 2)


def test_persistent_500_gives_up_after_max_attempts(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/always-500"), tmp_path)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "http_status")
    assert result.attempts == FAST.max_attempts == server.hits("/always-500")


def test_429_honours_retry_after(server: FaultServer, tmp_path: Path) -> None:
    policy = replace(FAST, deadline_s=4.0)
    result = fetch(server.url("/retry-after"), tmp_path, policy)
    assert (result.status, result.attempts) == (IMAGE_STATUS_OK, 2)
    assert result.elapsed_s >= 0.9  # waited the server's 1 s, not the 0.05 s backoff


def test_retry_after_beyond_deadline_fails_fast(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/retry-after-long"), tmp_path)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "http_status")
    assert result.reason == "http_status: 429" and result.elapsed_s < 1.0


# --------------------------------------------------------------------------- time


def test_slow_drip_is_cut_at_the_deadline(server: FaultServer, tmp_path: Path) -> None:
    policy = replace(FAST, deadline_s=1.5)
    result = fetch(server.url("/drip"), tmp_path, policy)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "deadline")
    assert 1.4 <= result.elapsed_s < 2.5


def test_hanging_server_times_out_and_is_retried(server: FaultServer, tmp_path: Path) -> None:
    policy = replace(FAST, read_timeout_s=0.3, deadline_s=5.0, max_attempts=2)
    result = fetch(server.url("/hang"), tmp_path, policy)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "timeout")
    assert result.reason == "timeout: read" and result.attempts == 2
    assert result.elapsed_s < 2.0


def test_hang_longer_than_deadline_reports_deadline(server: FaultServer, tmp_path: Path) -> None:
    policy = replace(FAST, read_timeout_s=10.0, deadline_s=1.0)
    result = fetch(server.url("/hang"), tmp_path, policy)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "deadline")
    assert result.elapsed_s < 1.8


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = fetch(f"http://127.0.0.1:{port}/x.jpg", tmp_path)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "connection")
    assert result.attempts == FAST.max_attempts


# --------------------------------------------------------------------------- size


def test_body_without_length_is_capped(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/oversize"), tmp_path)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "too_large")
    assert result.attempts == 1


def test_huge_declared_length_is_refused_before_reading(
    server: FaultServer, tmp_path: Path
) -> None:
    result = fetch(server.url("/huge-length"), tmp_path)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "too_large")
    assert "content-length" in (result.reason or "") and result.elapsed_s < 0.5


def test_lying_small_length_reads_only_what_was_declared(
    server: FaultServer, tmp_path: Path
) -> None:
    result = fetch(server.url("/lying-length"), tmp_path)
    assert result.status == IMAGE_STATUS_BAD_IMAGE and result.bytes == 100
    assert stored_files(tmp_path) == []


def test_gzip_bomb_is_capped_without_inflating(server: FaultServer, tmp_path: Path) -> None:
    fetch(server.url("/ok.jpg"), tmp_path / "warmup")  # imports/caches outside the measurement
    gzip_bomb_bytes()  # built on first use in ~1.5 s: longer than the read timeout
    tracemalloc.start()
    try:
        result = fetch(server.url("/gzip-bomb"), tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "too_large")
    assert peak < 8 * FAST.max_bytes  # the 64 MiB payload was never materialised


# --------------------------------------------------------------------------- bytes


def test_truncated_jpeg_is_bad_image(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/truncated.jpg"), tmp_path)
    assert_failed(result, IMAGE_STATUS_BAD_IMAGE, "truncated")
    assert result.bytes == len(jpeg_bytes()) // 2 and stored_files(tmp_path) == []


def test_html_served_as_jpeg_is_not_an_image(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/html-as-jpeg"), tmp_path)
    assert_failed(result, IMAGE_STATUS_BAD_IMAGE, "not_image")
    assert result.reason == "not_image: html"


def test_bmp_is_outside_the_allow_list(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/image.bmp"), tmp_path)
    assert_failed(result, IMAGE_STATUS_BAD_IMAGE, "format")
    assert result.reason == "format: BMP not allowed"


def test_decompression_bomb_png_is_refused(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/bomb.png"), tmp_path)
    assert_failed(result, IMAGE_STATUS_BAD_IMAGE, "decompression_bomb")
    assert "400000000 pixels" in (result.reason or "")


def test_pixel_cap_applies_below_pillows_own_limit(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/ok.png"), tmp_path, replace(FAST, max_pixels=1000))
    assert result.reason == "decompression_bomb: 3072 pixels > cap 1000"


def test_inspect_image_bytes_is_reusable() -> None:
    assert inspect_image_bytes(png_bytes(), 10_000) == ("png", 64, 48)
    with pytest.raises(BadImageError) as caught:
        inspect_image_bytes(b"%PDF-1.7 ...", 10_000)
    assert caught.value.code == "not_image"


@pytest.mark.parametrize("pil_format", ["JPEG", "PNG", "GIF", "WEBP", "AVIF"])
def test_inspect_accepts_allowed_formats_and_catches_truncation(pil_format: str) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((40, 30), 50).convert("RGB").save(buffer, format=pil_format)
    data = buffer.getvalue()
    assert inspect_image_bytes(data, 10_000) == (pil_format.lower(), 40, 30)
    with pytest.raises(BadImageError) as caught:
        inspect_image_bytes(data[: len(data) // 2], 10_000)
    assert caught.value.code == "truncated"


@pytest.mark.parametrize("kept", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_a_cut_jpeg_fails_though_it_is_decoded_at_reduced_scale(kept: float, mode: str) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((800, 600), 50).convert(mode).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    assert inspect_image_bytes(data, 10**6) == ("jpeg", 800, 600)
    with pytest.raises(BadImageError) as caught:
        inspect_image_bytes(data[: int(len(data) * kept)], 10**6)
    assert caught.value.code == "truncated"


def test_camera_mpo_is_accepted_and_named() -> None:
    buffer = io.BytesIO()
    frame = Image.effect_noise((40, 30), 50).convert("RGB")
    frame.save(buffer, format="MPO", save_all=True, append_images=[frame])
    assert inspect_image_bytes(buffer.getvalue(), 10_000) == ("mpo", 40, 30)


def test_the_format_allow_list_is_configurable_and_the_accept_header_follows_it() -> None:
    buffer = io.BytesIO()
    Image.effect_noise((40, 30), 50).convert("RGB").save(buffer, format="TIFF")
    tiff = buffer.getvalue()
    with pytest.raises(BadImageError) as caught:
        inspect_image_bytes(tiff, 10_000)
    assert caught.value.reason == "format: TIFF not allowed"
    policy = DownloadPolicy(allowed_formats=DEFAULT_ALLOWED_FORMATS | {"tiff"})
    assert inspect_image_bytes(tiff, 10_000, policy.allowed_formats) == ("tiff", 40, 30)
    assert "image/tiff" in accept_header(policy.allowed_formats)
    default = accept_header(DownloadPolicy().allowed_formats)
    assert "image/avif" in default and "image/tiff" not in default and "image/bmp" not in default
    with pytest.raises(BadImageError, match="AVIF not allowed"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="AVIF")
        inspect_image_bytes(buffer.getvalue(), 10_000, {"jpeg"})
    with pytest.raises(ValueError, match="unknown image formats"):
        DownloadPolicy(allowed_formats=frozenset({"svg"}))


def test_the_accept_header_is_sent(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/ok.jpg"), tmp_path)
    assert result.status == IMAGE_STATUS_OK
    assert server.state.last_accept == accept_header(FAST.allowed_formats)


def test_inspect_refuses_to_run_with_truncated_loading_enabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError):
        inspect_image_bytes(jpeg_bytes(), 10_000)


# --------------------------------------------------------------------------- SSRF and schemes


def test_loopback_is_refused_by_default(
    server: FaultServer, tmp_path: Path, dialled: list[str]
) -> None:
    policy = replace(FAST, allowed_private_networks=())
    for url in (server.url("/ok.jpg"), f"http://localhost:{server.port}/ok.jpg"):
        result = fetch(url, tmp_path, policy)
        assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "ssrf")
        assert "loopback" in (result.reason or "")
    assert dialled == [] and server.state.requests == []


def test_allow_private_hosts_opens_everything(server: FaultServer, tmp_path: Path) -> None:
    policy = replace(FAST, allowed_private_networks=(), allow_private_hosts=True)
    assert fetch(server.url("/ok.jpg"), tmp_path, policy).status == IMAGE_STATUS_OK


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("/redirect-metadata", "ssrf: 169.254.169.254 is cloud metadata"),
        ("/redirect-private", "ssrf: 10.0.0.1 is private"),
    ],
)
def test_redirect_targets_are_rechecked(
    server: FaultServer, tmp_path: Path, dialled: list[str], route: str, expected: str
) -> None:
    result = fetch(server.url(route), tmp_path)
    assert result.reason == expected and result.status == IMAGE_STATUS_DOWNLOAD_FAILED
    assert set(dialled) == {"127.0.0.1"}  # the forbidden target was never contacted


def test_metadata_stays_blocked_even_inside_allowed_networks(tmp_path: Path) -> None:
    policy = replace(FAST, allowed_private_networks=("169.254.0.0/16",))
    result = fetch("http://169.254.169.254/latest/meta-data/", tmp_path, policy)
    assert result.reason == "ssrf: 169.254.169.254 is cloud metadata"


def test_any_private_address_in_dns_answer_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialled: list[str]
) -> None:
    def mixed(host: str, port: int, *args: object, **kwargs: object) -> list:
        addresses = ("93.184.216.34", "10.1.2.3")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    result = fetch("http://rebind.example.test/x.jpg", tmp_path)
    assert result.reason == "ssrf: 10.1.2.3 is private" and dialled == []


def test_redirect_to_file_scheme_is_refused_even_when_file_is_allowed(
    server: FaultServer, tmp_path: Path
) -> None:
    policy = replace(FAST, allowed_schemes=frozenset({"http", "file"}))
    result = fetch(server.url("/redirect-file"), tmp_path, policy)
    assert result.reason == "scheme: file not allowed"


def test_redirect_loop_stops_at_max_redirects(server: FaultServer, tmp_path: Path) -> None:
    result = fetch(server.url("/loop"), tmp_path)
    assert result.reason == f"redirects: too many (> {FAST.max_redirects})"
    assert result.attempts == 1 and server.hits("/loop") == FAST.max_redirects + 1


def test_redirect_chain_at_the_limit_succeeds(server: FaultServer, tmp_path: Path) -> None:
    policy = replace(FAST, max_redirects=3)
    assert fetch(server.url("/chain/2"), tmp_path, policy).status == IMAGE_STATUS_OK  # 3 hops
    assert fetch(server.url("/chain/3"), tmp_path, policy).reason_code == "redirects"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/a.jpg", "scheme: ftp not allowed"),
        ("file:///etc/hostname", "scheme: file not allowed"),
        ("/etc/hostname", "scheme: file not allowed"),
        ("", "bad_url: empty"),
        (None, "bad_url: empty"),
        ("http://", "bad_url: no host"),
    ],
)
def test_disallowed_or_malformed_urls_never_raise(
    tmp_path: Path, url: str | None, reason: str
) -> None:
    result = fetch_image(url, str(tmp_path), FAST)
    assert (result.status, result.reason) == (IMAGE_STATUS_DOWNLOAD_FAILED, reason)


def test_garbage_urls_become_results(tmp_path: Path) -> None:
    for url in ("http://[::1", "http://exa mple.com:99999/x", "https://\x00/"):
        result = fetch_image(url, str(tmp_path), FAST)
        assert result.status == IMAGE_STATUS_DOWNLOAD_FAILED and result.reason_code


# --------------------------------------------------------------------------- fsspec sources/stores


def test_file_url_into_memory_store(tmp_path: Path) -> None:
    source = tmp_path / "product.jpg"
    source.write_bytes(jpeg_bytes())
    root = f"memory://store-{uuid.uuid4().hex}"
    policy = replace(FAST, allowed_schemes=frozenset({"file"}))
    result = fetch(source.as_uri(), root, policy)
    assert result.status == IMAGE_STATUS_OK and result.path is not None
    assert result.path.startswith(f"{root}/images/")
    fs = fsspec.filesystem("memory")
    assert fs.cat_file(result.path) == jpeg_bytes()
    assert [p for p in fs.find(root) if ".tmp-" in p] == []


def test_missing_file_is_not_found_and_not_retried(tmp_path: Path) -> None:
    policy = replace(FAST, allowed_schemes=frozenset({"file"}))
    result = fetch((tmp_path / "missing.jpg").as_uri(), tmp_path, policy)
    assert_failed(result, IMAGE_STATUS_DOWNLOAD_FAILED, "not_found")
    assert result.attempts == 1


def test_memory_source_is_capped(tmp_path: Path) -> None:
    url = f"memory://src-{uuid.uuid4().hex}/big.jpg"
    fsspec.filesystem("memory").pipe_file(url, b"\xff\xd8\xff" + b"\x00" * FAST.max_bytes)
    policy = replace(FAST, allowed_schemes=frozenset({"memory"}))
    assert fetch(url, tmp_path, policy).reason_code == "too_large"


# --------------------------------------------------------------------------- storage


def test_same_bytes_are_stored_once(tmp_path: Path) -> None:
    first = image_store.store_image_bytes(str(tmp_path), jpeg_bytes(), "jpg")
    mtime = os.stat(first).st_mtime_ns
    second = image_store.store_image_bytes(str(tmp_path), jpeg_bytes(), "jpg")
    assert first == second and os.stat(first).st_mtime_ns == mtime  # not rewritten
    assert stored_files(tmp_path) == [Path(first)]
    assert image_store.exists(first) and not image_store.exists(first + ".nope")


def test_a_relative_store_root_follows_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        monkeypatch.chdir(folder)
        path = image_store.store_image_bytes("store", jpeg_bytes(), "jpg")
        assert not Path(path).is_absolute() and (folder / path).read_bytes() == jpeg_bytes()


def test_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        image_store.store_image_bytes(str(tmp_path), png_bytes(), "png")
    assert stored_files(tmp_path) == []


def test_image_path_rejects_non_digests() -> None:
    with pytest.raises(ValueError):
        image_store.image_path_for("/data", "../../etc/passwd", "jpg")


# --------------------------------------------------------------------------- batch


def test_batch_dedupes_keeps_order_and_schema(server: FaultServer, tmp_path: Path) -> None:
    jpg, png, missing = server.url("/ok.jpg"), server.url("/ok.png"), server.url("/status/404")
    same_bytes = server.url("/ok.jpg?copy=1")
    frame, stats = fetch_images([png, jpg, png, missing, same_bytes, jpg], str(tmp_path), FAST)
    assert frame.schema == pl.Schema(IMAGE_FETCH_SCHEMA)
    assert frame.get_column("url").to_list() == [png, jpg, missing, same_bytes]
    assert server.hits("/ok.png") == 1 and server.hits("/ok.jpg") == 1
    assert (stats.attempted, stats.reused, stats.ok, stats.failed, stats.bad_image) == (
        4,
        0,
        3,
        1,
        0,
    )
    assert stats.reasons == {"http_status": 1}
    # Two URLs serving identical bytes share one stored file; no temporaries are left behind.
    assert frame.item(1, "path") == frame.item(3, "path")
    assert len(stored_files(tmp_path)) == 2
    assert not [p for p in stored_files(tmp_path) if p.name.startswith(".tmp-")]


def test_second_run_reuses_successes_and_retries_failures(
    server: FaultServer, tmp_path: Path
) -> None:
    urls = [server.url("/ok.jpg"), server.url("/ok.png"), server.url("/status/500")]
    first, stats1 = fetch_images(urls, str(tmp_path), FAST)
    assert (stats1.attempted, stats1.reused, stats1.ok) == (3, 0, 2)

    second, stats2 = fetch_images(urls, str(tmp_path), FAST, previous=first)
    assert (stats2.attempted, stats2.reused, stats2.ok, stats2.failed) == (1, 2, 2, 1)
    assert server.hits("/ok.jpg") == 1 and server.hits("/status/500") == 2 * FAST.max_attempts
    assert second.head(2).equals(first.head(2))

    Path(first.item(0, "path")).unlink()  # a lost file is fetched again
    _, stats3 = fetch_images(urls[:2], str(tmp_path), FAST, previous=second)
    assert (stats3.attempted, stats3.reused) == (1, 1) and server.hits("/ok.jpg") == 2


def test_the_url_index_is_written_one_batch_at_a_time_and_resumes_a_run(
    server: FaultServer, tmp_path: Path
) -> None:
    policy = replace(FAST, index_batch_size=3, index_flush_s=3600.0)
    urls = [server.url(f"/ok.jpg?n={n}") for n in range(7)] + [server.url("/status/404")]
    fetch_images(urls, str(tmp_path), policy, workers=2)
    files = sorted((tmp_path / download.URL_INDEX_DIR).iterdir())  # names sort by time
    assert [len(f.read_bytes().splitlines()) for f in files] == [3, 3, 1]  # failures unrecorded
    server.state.hits.clear()
    # No previous table (a killed run leaves none): the index alone spares the downloads.
    _, stats = fetch_images(urls, str(tmp_path), policy, workers=2)
    assert (stats.reused, stats.attempted, stats.ok) == (7, 1, 7)
    assert dict(server.state.hits) == {"/status/404": 1}


def test_a_storage_error_stops_the_batch_and_keeps_what_finished_recorded(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store = image_store.store_image_bytes
    calls = itertools.count(1)

    def store_until_the_disk_fills(*args: Any, **kwargs: Any) -> str:
        if next(calls) >= 4:
            raise OSError("disk full")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(image_store, "store_image_bytes", store_until_the_disk_fills)
    policy = replace(FAST, index_batch_size=1, index_flush_s=3600.0)
    urls = [server.url(f"/ok.jpg?n={n}") for n in range(20)]
    with pytest.raises(OSError, match="disk full"):
        fetch_images(urls, str(tmp_path), policy, workers=2)
    recorded = recorded_rows(str(tmp_path), urls)
    assert len(recorded) == 3  # the three stored before the disk filled
    # No fresh URL is handed out once an attempt has failed the batch: the other worker
    # ends the attempt it had under way, at most, and four more may fail.
    assert sum(server.state.hits.values()) <= 8


def test_the_url_index_flushes_by_time_and_reads_records_from_before_batching(
    server: FaultServer, tmp_path: Path
) -> None:
    policy = replace(FAST, index_batch_size=100, index_flush_s=0.0)
    urls = [server.url("/ok.jpg"), server.url("/ok.png")]
    fetch_images(urls, str(tmp_path), policy, workers=1)
    index = tmp_path / download.URL_INDEX_DIR
    files = sorted(index.iterdir())
    assert len(files) == 2  # a success waits no longer than index_flush_s for its batch
    # The layout before batching: one `ab/<sha256 of the url>.json` record per URL.
    record = files[0].read_bytes()
    digest = hashlib.sha256(json.loads(record)["url"].encode()).hexdigest()
    (index / digest[:2]).mkdir()
    (index / digest[:2] / f"{digest}.json").write_bytes(record.strip())
    files[0].unlink()
    (index / "junk.jsonl").write_bytes(b"not json\n[1, 2]\n")  # ignored, not fatal
    _, stats = fetch_images(urls, str(tmp_path), policy, workers=1)
    assert (stats.reused, stats.attempted) == (2, 0)


def test_empty_input_gives_typed_empty_frame(tmp_path: Path) -> None:
    frame, stats = fetch_images([], str(tmp_path), FAST)
    assert frame.height == 0 and frame.schema == pl.Schema(IMAGE_FETCH_SCHEMA)
    assert stats.attempted == 0


def test_fetches_run_concurrently(server: FaultServer, tmp_path: Path) -> None:
    urls = [server.url(f"/slow.jpg?i={i}") for i in range(8)]
    started = time.monotonic()
    frame, stats = fetch_images(urls, str(tmp_path), FAST, workers=8)
    elapsed = time.monotonic() - started
    assert stats.ok == 8
    assert elapsed < 2.5  # one after another: 8 x 0.5 s = 4 s
    assert frame.get_column("elapsed_s").min() >= SLOW_DELAY_S * 0.9


# --------------------------------------------------------------------------- retry scheduling


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = replace(FAST, backoff_base_s=0.5, backoff_max_s=3.0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [batch._backoff_s(attempt, policy) for _ in range(200)]
        assert min(delays) >= 0.0 and max(delays) <= ceiling
        assert max(delays) > ceiling / 2  # jittered over the whole range, not a fixed sleep


def test_backing_off_urls_do_not_hold_workers(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, six permanently failing URLs first, each backing off 1.5 s twice: sleeping
    in a worker, the good URLs behind them would wait 3 x 3 s; scheduled, they land at once."""
    backoff_s = 1.5
    delays: list[int] = []

    def fixed_backoff(attempt: int, policy: DownloadPolicy) -> float:
        delays.append(attempt)
        return backoff_s

    monkeypatch.setattr(batch, "_backoff_s", fixed_backoff)
    stored_at: list[float] = []
    real_store = image_store.store_image_bytes

    def spy_store(*args: object, **kwargs: object) -> str:
        path = real_store(*args, **kwargs)  # type: ignore[arg-type]
        stored_at.append(time.monotonic())
        return path

    monkeypatch.setattr(image_store, "store_image_bytes", spy_store)
    failing = [server.url(f"/always-500?i={i}") for i in range(6)]
    good = [server.url(f"/ok.jpg?i={i}") for i in range(6)]
    policy = replace(FAST, deadline_s=8.0, max_attempts=3)
    started = time.monotonic()
    frame, stats = fetch_images(failing + good, str(tmp_path), policy, workers=2)
    elapsed = time.monotonic() - started

    assert (stats.ok, stats.failed) == (6, 6)
    assert len(stored_at) == 6 and max(stored_at) - started < backoff_s  # before any retry
    assert elapsed < 2 * backoff_s + 2.0  # all six back off at once, not two at a time
    bad = frame.filter(pl.col("url").is_in(failing))
    assert bad.get_column("attempts").to_list() == [3] * 6
    assert bad.get_column("reason").unique().to_list() == ["http_status: 500"]
    assert bad.get_column("elapsed_s").min() >= 2 * backoff_s  # the waits are in elapsed_s
    assert all(server.hits(u.split(str(server.port), 1)[1]) == 3 for u in failing)
    assert sorted(delays) == [1] * 6 + [2] * 6  # one backoff per retry, by attempt number


def test_batch_retries_keep_retry_after_and_give_up_rules(
    server: FaultServer, tmp_path: Path
) -> None:
    policy = replace(FAST, deadline_s=4.0)
    urls = [server.url(p) for p in ("/retry-after", "/retry-after-long", "/status/404")]
    frame, _ = fetch_images([*urls, server.url("/flaky-500")], str(tmp_path), policy, workers=2)
    rows = {row["url"].split(str(server.port), 1)[1]: row for row in frame.to_dicts()}
    assert (rows["/retry-after"]["status"], rows["/retry-after"]["attempts"]) == ("ok", 2)
    assert rows["/retry-after"]["elapsed_s"] >= 0.9  # the server's 1 s, not the backoff
    # A Retry-After beyond the deadline, and a 404, end the URL at once.
    assert rows["/retry-after-long"]["reason"] == "http_status: 429"
    assert rows["/retry-after-long"]["attempts"] == 1
    assert rows["/status/404"]["attempts"] == 1 and server.hits("/status/404") == 1
    assert (rows["/flaky-500"]["status"], rows["/flaky-500"]["attempts"]) == ("ok", 2)


def test_a_due_retry_that_outlives_its_deadline_keeps_its_error(tmp_path: Path) -> None:
    started = time.monotonic()
    job = batch._Job("http://127.0.0.1:9/x.jpg", started, transport.Deadline(0.01))
    job.last_error = download.FetchError("http_status", "503", retryable=True)
    job.last_error.attempts = job.attempt = 2
    time.sleep(0.02)
    row = batch._attempt(job, str(tmp_path), FAST)
    assert row is not None and (row["reason"], row["attempts"]) == ("http_status: 503", 2)


def test_opening_the_store_sweeps_orphaned_temporaries_only(tmp_path: Path) -> None:
    """A temporary a killed run left behind goes when the next batch opens the store; a young
    one may belong to a live writer and stays."""
    folder = tmp_path / "images" / "ab"
    folder.mkdir(parents=True)
    orphan, live = folder / ".tmp-orphan.part", folder / ".tmp-live.part"
    for path in (orphan, live):
        path.write_bytes(b"half")
    hour_ago = time.time() - 3600
    os.utime(orphan, (hour_ago, hour_ago))
    fetch_images([], str(tmp_path), FAST)
    assert not orphan.exists() and live.exists()


def test_the_temporary_sweep_survives_a_concurrent_shard_renaming_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards share the store: a temporary listed by one shard's sweep can be renamed into place
    by another shard before the sweep reads its age. The sweep skips it; the download goes on."""
    folder = tmp_path / "images" / "ab"
    folder.mkdir(parents=True)
    stale = folder / ".tmp-0123456789abcdef0123456789abcdef.part"
    stale.write_bytes(b"left by a crashed run")
    os.utime(stale, (0, 0))
    renamed = folder / ".tmp-fedcba9876543210fedcba9876543210.part"  # listed, then gone
    real_glob = image_store.glob.glob
    monkeypatch.setattr(
        image_store.glob, "glob", lambda *a, **k: [*real_glob(*a, **k), str(renamed)]
    )
    assert image_store.remove_stale_temporaries(str(tmp_path), older_than_s=60) == 1
    assert not stale.exists()


def test_a_batch_is_synced_once_before_its_index_file_and_images_skip_the_fsync(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    index_dir = tmp_path / download.URL_INDEX_DIR

    def fake_sync(path: str) -> None:
        assert path == str(tmp_path)
        events.append(f"sync, {len(list(index_dir.glob('*.jsonl')))} index files")

    real_fsync = os.fsync

    def counting_fsync(descriptor: int) -> None:
        events.append("fsync")
        real_fsync(descriptor)

    monkeypatch.setattr("curation.download.url_index.sync_filesystem_of", fake_sync)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    policy = replace(FAST, index_batch_size=3, index_flush_s=3600.0)
    urls = [server.url(f"/ok.jpg?n={n}") for n in range(5)]
    _, stats = fetch_images(urls, str(tmp_path), policy, workers=2)
    # 5 ok downloads, one image stored (same bytes): no fsync for it; each of the 2 index
    # files is preceded by one sync of the store and fsynced itself.
    assert stats.ok == 5
    assert events == ["sync, 0 index files", "fsync", "sync, 1 index files", "fsync"]


def test_a_stored_image_of_the_wrong_size_is_written_again(tmp_path: Path) -> None:
    data = b"\x89PNG not really, but bytes"
    path = Path(image_store.store_image_bytes(str(tmp_path), data, "png", durable=False))
    assert path.read_bytes() == data
    path.write_bytes(b"")  # what a power cut can leave of an unsynced write
    assert Path(image_store.store_image_bytes(str(tmp_path), data, "png")) == path
    assert path.read_bytes() == data
