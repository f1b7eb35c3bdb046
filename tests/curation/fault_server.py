"""A misbehaving image server on 127.0.0.1 for downloader tests (stdlib only, no network).

Each route reproduces one fault a real catalogue's image hosts show. Every slow route waits on
the server's stop event, so teardown ends its threads at once; all loops are bounded.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ssl
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from PIL import Image

from curation.download import DownloadPolicy

SLOW_DELAY_S = 0.5  # /slow.jpg: per-request latency for the concurrency test
DRIP_INTERVAL_S = 0.5  # /drip: one byte every this many seconds
HANG_MAX_S = 30.0  # /hang: upper bound even if nobody stops the server
OVERSIZE_BYTES = 1024 * 1024  # /oversize and /lying-length bodies
GZIP_BOMB_DECODED_BYTES = 64 * 1024 * 1024  # /gzip-bomb inflates to this
BOMB_SIDE = 20_000  # /bomb.png is BOMB_SIDE x BOMB_SIDE pixels (400 MP)
HEADER_DRIP_INTERVAL_S = 0.2  # /drip-headers: one header byte every this many seconds
ENDLESS_CHUNK_BYTES = 64 * 1024  # /endless-chunked: chunk size, sent as fast as TCP allows


def fast_policy(**overrides: Any) -> DownloadPolicy:
    """A policy for talking to this server: only its own address is reachable (10/8,
    169.254/16 & co stay blocked), and times and backoff are shrunk so faults resolve fast."""
    knobs: dict[str, Any] = {
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        "deadline_s": 2.0,
        "max_attempts": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "allowed_private_networks": ("127.0.0.1/32",),
    }
    return DownloadPolicy(**{**knobs, **overrides})


@functools.cache
def jpeg_bytes() -> bytes:
    """A noisy JPEG, so cutting it in half really loses scan data."""
    img = Image.effect_noise((128, 96), 64).convert("RGB")
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@functools.cache
def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((64, 48)).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def bmp_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="BMP")
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


@functools.cache
def bomb_png_bytes(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit all-black PNG whose header claims side*side pixels; tens of KB on disk."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


@functools.cache
def gzip_bomb_bytes() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\x00" * (1024 * 1024)
    parts = [compressor.compress(block) for _ in range(GZIP_BOMB_DECODED_BYTES // len(block))]
    return b"".join(parts) + compressor.flush()


@functools.cache
def gzip_endless_parts() -> tuple[bytes, bytes]:
    """(gzip header + first segment, repeatable segment): each segment inflates to 1 MiB of
    zeros. Full flushes make segments independent of history, so streaming the same ~1 KiB
    forever is a valid, never-ending gzip stream (a bomb with no size at all)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\x00" * (1024 * 1024)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first, segment


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    served = 0  # requests read on this connection (one handler per connection)

    def setup(self) -> None:
        super().setup()
        self.server.fault.connected()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass  # keep test output clean

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        fault = self.server.fault
        path = self.path.split("?", 1)[0]
        hits = fault.record(self.path, self.headers.get("Host", ""))
        fault.last_accept = self.headers.get("Accept")
        self.served += 1
        route = ROUTES.get(path)
        if path == "/drop" or (path == "/drop-if-reused" and self.served > 1):
            # Hang up without an answer: what a server timing out an idle keep-alive
            # connection looks like to a client whose request was already on the wire.
            self.close_connection = True
        elif route is None and path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"status page", "text/plain")
        elif route is None and path.startswith("/chain/"):
            left = int(path.rsplit("/", 1)[1])
            self._redirect(f"/chain/{left - 1}" if left > 0 else "/ok.jpg")
        elif route is None and path == "/product":
            _product(self, parse_qs(self.path.partition("?")[2]))
        elif route is None and path == "/redirect-to":
            # /redirect-to?u=<url-encoded target>: any Location a hostile server might send.
            self._redirect(parse_qs(self.path.split("?", 1)[1])["u"][0])
        elif route is None:
            self._send(404, b"no such route", "text/plain")
        else:
            # The client hanging up early is what several tests check, not a server error.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                route(self, hits)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "image/jpeg",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", {"Location": location})


@functools.cache
def product_png_bytes(product_id: int) -> bytes:
    """A distinct, deterministic PNG per id: same id, same bytes, same sha256 on every run."""
    img = Image.new("RGB", (48, 32), (product_id % 251, (product_id * 7) % 253, 90))
    img.putpixel((product_id % 48, (product_id // 48) % 32), (255, 255, 255))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _product(h: _Handler, query: dict[str, list[str]]) -> None:
    """/product?id=N&delay=S: product N's image after S seconds (a slow but honest CDN)."""
    delay = float(query.get("delay", ["0"])[0])
    if delay and h.server.fault.stop.wait(min(delay, HANG_MAX_S)):
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        h._send(200, product_png_bytes(int(query["id"][0])), "image/png")


def _ok_jpeg(h: _Handler, hits: int) -> None:
    h._send(200, jpeg_bytes())


def _ok_png(h: _Handler, hits: int) -> None:
    h._send(200, png_bytes(), "image/png")


def _flaky_500(h: _Handler, hits: int) -> None:
    h._send(500, b"oops", "text/plain") if hits == 1 else _ok_jpeg(h, hits)


def _always_500(h: _Handler, hits: int) -> None:
    h._send(500, b"oops", "text/plain")


def _retry_after(h: _Handler, hits: int) -> None:
    if hits == 1:
        h._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
    else:
        _ok_jpeg(h, hits)


def _retry_after_long(h: _Handler, hits: int) -> None:
    h._send(429, b"slow down", "text/plain", {"Retry-After": "60"})


def _slow(h: _Handler, hits: int) -> None:
    h.server.fault.stop.wait(SLOW_DELAY_S)
    _ok_jpeg(h, hits)


def _drip(h: _Handler, hits: int) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    _trickle(h, b"\xff" * int(HANG_MAX_S / DRIP_INTERVAL_S), DRIP_INTERVAL_S)


def _trickle(h: _Handler, data: bytes, interval_s: float) -> None:
    """Send `data` one byte per `interval_s`, until it ends or the server stops."""
    for byte in data:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        if h.server.fault.stop.wait(interval_s):
            return


def _hang(h: _Handler, hits: int) -> None:
    h.server.fault.stop.wait(HANG_MAX_S)


def _truncated(h: _Handler, hits: int) -> None:
    data = jpeg_bytes()
    h._send(200, data[: len(data) // 2])


def _html_as_jpeg(h: _Handler, hits: int) -> None:
    h._send(200, b"<!DOCTYPE html><html><body>Not found</body></html>", "image/jpeg")


def _bmp(h: _Handler, hits: int) -> None:
    h._send(200, bmp_bytes(), "image/bmp")


def _bomb(h: _Handler, hits: int) -> None:
    h._send(200, bomb_png_bytes(), "image/png")


def _jpeg_head(h: _Handler, content_length: int | None) -> None:
    """A 200 JPEG response's head, whatever the body that follows really holds."""
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    if content_length is not None:
        h.send_header("Content-Length", str(content_length))
    h.end_headers()


def _oversize(h: _Handler, hits: int) -> None:
    # HTTP/1.0 with no Content-Length: the body runs until the connection closes.
    _jpeg_head(h, None)
    h.wfile.write(jpeg_bytes()[:4] + b"\x00" * OVERSIZE_BYTES)


def _lying_length(h: _Handler, hits: int) -> None:
    _jpeg_head(h, 100)
    h.wfile.write(jpeg_bytes()[:100] + b"\x00" * OVERSIZE_BYTES)


def _huge_length(h: _Handler, hits: int) -> None:
    _jpeg_head(h, 10 * 1024**4)
    h.wfile.write(jpeg_bytes()[:10])


def _gzip_bomb(h: _Handler, hits: int) -> None:
    h._send(200, gzip_bomb_bytes(), "image/jpeg", {"Content-Encoding": "gzip"})


def _drip_headers(h: _Handler, hits: int) -> None:
    """Slowloris on the header phase: the status line, then one header byte at a time."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Slow: ")
    _trickle(h, b"a" * int(HANG_MAX_S / HEADER_DRIP_INTERVAL_S), HEADER_DRIP_INTERVAL_S)


def _drip_status(h: _Handler, hits: int) -> None:
    """Slowloris before the first line: the status line itself arrives one byte at a time."""
    status = (b"HTTP/1.1 200 OK" * 100)[: int(HANG_MAX_S / HEADER_DRIP_INTERVAL_S)]
    _trickle(h, status, HEADER_DRIP_INTERVAL_S)


def _start_chunked(h: _Handler, headers: dict[str, str] | None = None) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n")
    for name, value in (headers or {}).items():
        h.wfile.write(f"{name}: {value}\r\n".encode())
    h.wfile.write(b"Transfer-Encoding: chunked\r\n\r\n")


def _write_chunk(h: _Handler, data: bytes) -> None:
    h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _stream_chunks(h: _Handler, chunk: bytes, pause_s: float = 0.0) -> None:
    """The same chunk until the client hangs up or the server stops (HANG_MAX_S at most)."""
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    stop, started = h.server.fault.stop, time.monotonic()
    while not stop.is_set() and time.monotonic() - started < HANG_MAX_S:
        h.wfile.write(framed)
        if pause_s:
            stop.wait(pause_s)


def _endless_chunked(h: _Handler, hits: int) -> None:
    _start_chunked(h)
    _write_chunk(h, jpeg_bytes()[:4])  # looks like a JPEG that never ends
    _stream_chunks(h, b"\x00" * ENDLESS_CHUNK_BYTES)


def _endless_chunked_slow(h: _Handler, hits: int) -> None:
    """Small chunks, each well inside the read timeout: only the total deadline stops it."""
    _start_chunked(h)
    _write_chunk(h, jpeg_bytes()[:4])
    _stream_chunks(h, b"\x00" * 16, pause_s=0.1)


def _gzip_bomb_endless(h: _Handler, hits: int) -> None:
    first, segment = gzip_endless_parts()
    _start_chunked(h, {"Content-Encoding": "gzip"})
    _write_chunk(h, first)
    _stream_chunks(h, segment * 64)


def _chunk_size_overflow(h: _Handler, hits: int) -> None:
    """A chunk-size line no one could honour (2**64-1 bytes), then a trickle of data."""
    _start_chunked(h)
    h.wfile.write(b"ffffffffffffffff\r\n" + jpeg_bytes()[:100])


def _stacked_encodings(h: _Handler, hits: int) -> None:
    """gzip(gzip(jpeg)) declared as `gzip, gzip`: a layered encoding we refuse, not peel."""
    twice = zlib.compress(zlib.compress(jpeg_bytes(), wbits=31), wbits=31)
    h._send(200, twice, "image/jpeg", {"Content-Encoding": "gzip, gzip"})


def _brotli_claimed(h: _Handler, hits: int) -> None:
    h._send(200, b"\x1b\x00" * 100, "image/jpeg", {"Content-Encoding": "br"})


def _deflate_bomb(h: _Handler, hits: int) -> None:
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(b"\x00" * 1024 * 1024) for _ in range(16))
    h._send(200, data + compressor.flush(), "image/jpeg", {"Content-Encoding": "deflate"})


def _loop(h: _Handler, hits: int) -> None:
    h._redirect("/loop")


def _redirect_to(location: str) -> Callable[[_Handler, int], None]:
    return lambda h, hits: h._redirect(location)


ROUTES: dict[str, Callable[[_Handler, int], None]] = {
    "/ok.jpg": _ok_jpeg,
    "/ok.png": _ok_png,
    "/drop-if-reused": _ok_jpeg,  # on a fresh connection; a reused one is hung up on
    "/flaky-500": _flaky_500,
    "/always-500": _always_500,
    "/retry-after": _retry_after,
    "/retry-after-long": _retry_after_long,
    "/slow.jpg": _slow,
    "/drip": _drip,
    "/hang": _hang,
    "/truncated.jpg": _truncated,
    "/html-as-jpeg": _html_as_jpeg,
    "/image.bmp": _bmp,
    "/bomb.png": _bomb,
    "/oversize": _oversize,
    "/lying-length": _lying_length,
    "/huge-length": _huge_length,
    "/gzip-bomb": _gzip_bomb,
    "/loop": _loop,
    "/drip-headers": _drip_headers,
    "/drip-status": _drip_status,
    "/endless-chunked": _endless_chunked,
    "/endless-chunked-slow": _endless_chunked_slow,
    "/gzip-bomb-endless": _gzip_bomb_endless,
    "/deflate-bomb": _deflate_bomb,
    "/chunk-size-overflow": _chunk_size_overflow,
    "/stacked-encodings": _stacked_encodings,
    "/brotli-claimed": _brotli_claimed,
    "/redirect-ok": _redirect_to("/ok.jpg"),
    "/redirect-metadata": _redirect_to("http://169.254.169.254/latest/meta-data/"),
    "/redirect-private": _redirect_to("http://10.0.0.1/image.jpg"),
    "/redirect-file": _redirect_to("file:///etc/passwd"),
}


class FaultState:
    """What the server saw: hits per full path (query included) and the Host headers."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []
        self.connections = 0  # TCP connections accepted
        self.last_accept: str | None = None  # the Accept header of the latest request

    def connected(self) -> None:
        with self._lock:
            self.connections += 1

    def record(self, path: str, host: str) -> int:
        with self._lock:
            self.hits[path] += 1
            self.requests.append((path, host))
            return self.hits[path]


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"  # keeps the connection open between requests


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fault: FaultState


class FaultServer:
    """`with FaultServer() as server: server.url("/drip")` — a fresh server per test.

    With `tls` (a server-side SSLContext) it speaks https on the same routes; with `keep_alive`
    HTTP/1.1, keeping connections open (only routes that send a Content-Length keep them).
    """

    def __init__(self, tls: ssl.SSLContext | None = None, *, keep_alive: bool = False) -> None:
        self.state = FaultState()
        handler = _KeepAliveHandler if keep_alive else _Handler
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.fault = self.state
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return self.state.hits[path]

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.state.stop.set()  # releases /hang, /drip and /slow.jpg handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
