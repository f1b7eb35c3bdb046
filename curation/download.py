"""Robust, concurrent image download: untrusted URLs in, verified content-addressed images out.

Every URL of the catalogue is untrusted input: it may point at the cloud metadata service, at a
server that drips one byte a second, at a gzip bomb or at an HTML error page served as
`image/jpeg`. `fetch_image` never raises for any of that; it returns a result whose `status`
(schemas.tables IMAGE_STATUS_*) and `reason` (`"<code>: <detail>"`, codes below) say what went
wrong, so the curation ledger can account for every row.

http(s) goes through urllib3 directly (not fsspec) because only there can we pin the vetted IP,
follow redirects ourselves (re-checking each hop), and stream with a byte cap and a deadline.
Other schemes (file, s3, gcs, memory, ...) go through fsspec when the policy allows them.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import ipaddress
import itertools
import json
import os
import random
import re
import socket
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, TypeGuard
from urllib.parse import urljoin, urlsplit

import fsspec
import polars as pl
import urllib3
from PIL import Image, ImageFile
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from curation import image_store
from schemas.tables import (
    IMAGE_FETCH_SCHEMA,
    IMAGE_STATUS_BAD_IMAGE,
    IMAGE_STATUS_DOWNLOAD_FAILED,
    IMAGE_STATUS_OK,
    empty_frame,
)

# Reason codes: the stable part of `reason` before ':' (reports and tests group by it).
# -> status download_failed: the bytes never arrived, or policy refused to fetch them.
REASON_BAD_URL = "bad_url"  # empty or unparseable URL
REASON_SCHEME = "scheme"  # scheme not in policy.allowed_schemes (or redirect to non-http)
REASON_SSRF = "ssrf"  # host resolves to a private/loopback/metadata/... address
REASON_DNS = "dns"  # host name did not resolve
REASON_CONNECTION = "connection"  # refused, reset, protocol error
REASON_TLS = "tls"  # certificate or handshake failure (not retried: it will not fix itself)
REASON_TIMEOUT = "timeout"  # connect or read timeout
REASON_DEADLINE = "deadline"  # the per-URL total deadline ran out
REASON_HTTP_STATUS = "http_status"  # non-200 final status
REASON_REDIRECTS = "redirects"  # more than policy.max_redirects hops
REASON_TOO_LARGE = "too_large"  # body (declared, wire or decoded) over policy.max_bytes
REASON_CONTENT_ENCODING = "content_encoding"  # compression we cannot decode with a cap
REASON_NOT_FOUND = "not_found"  # fsspec path does not exist
REASON_PERMISSION = "permission"  # fsspec path not readable
REASON_IO = "io"  # other fsspec/OS read error
# -> status bad_image: bytes arrived but are not an allowed, intact, sanely sized image.
REASON_NOT_IMAGE = "not_image"  # sniffed as html/json/pdf/unknown/...
REASON_FORMAT = "format"  # a real image format outside the allow-list
REASON_TRUNCATED = "truncated"  # decoder ran out of data
REASON_CORRUPT = "corrupt"  # decoder rejected the data for another reason
REASON_DECOMPRESSION_BOMB = "decompression_bomb"  # width*height over the pixel cap

# Allowed formats (sniffed name -> file extension in the image store).
FORMAT_EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}

_HTTP_SCHEMES = frozenset({"http", "https"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# Checked in order; the first match names the problem in the reason.
_ADDRESS_PROBLEMS = (
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_unspecified", "unspecified"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
)


@lru_cache(maxsize=64)
def _parse_networks(cidrs: tuple[str, ...]) -> tuple[ipaddress._BaseNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


@dataclass(frozen=True)
class DownloadPolicy:
    """Every knob of the downloader; tests shrink the times and sizes."""

    # Reaching a healthy CDN takes well under a second; 5 s tolerates a slow handshake.
    connect_timeout_s: float = 5.0
    # Max silence between two socket reads (also capped by what is left of the deadline).
    read_timeout_s: float = 10.0
    # Total wall time per URL over all attempts, redirects and body reads: a server dripping
    # bytes cannot hold a worker longer than this.
    deadline_s: float = 30.0
    # Transient failures (connection errors, timeouts, 429, 5xx) get this many tries in all.
    max_attempts: int = 4
    # Exponential backoff with full jitter: wait U(0, min(max, base * 2**(attempt-1))). A 0.25 s
    # base (AWS's standard retry mode uses 0.1 s) caps a permanent 5xx's 4 tries at 1.75 s of
    # waiting, 3.5 s with 0.5 s, which set the tail of a whole batch (bench/RESULTS.md, download);
    # a 429 or 503 that needs longer says so in Retry-After, which is honoured.
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    # Product images redirect once or twice (CDN, http->https); more is a loop or a trick.
    max_redirects: int = 5
    # Largest body accepted (on the wire and after decompression): product photos are < 5 MiB.
    max_bytes: int = 20 * 1024 * 1024
    # Largest width*height decoded; checked before decoding, independent of Pillow's own limit.
    max_pixels: int = 40_000_000
    # Schemes a catalogue URL may use; add "file"/"s3"/... only for trusted catalogues.
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    # Lets URLs reach loopback/private/metadata hosts: local test servers, intranet catalogues.
    allow_private_hosts: bool = False
    # Narrower than allow_private_hosts: only these CIDRs (e.g. a test server on 127.0.0.1/32).
    # The cloud metadata address stays blocked even when covered here.
    allowed_private_networks: tuple[str, ...] = ()
    # Honest identification: some CDNs reject the default python-urllib3 agent.
    user_agent: str = "catalogue-vlm-image-fetcher/0.1"
    # Read granularity: the deadline and the byte cap are checked between chunks.
    chunk_size: int = 64 * 1024

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "allowed_schemes", frozenset(s.lower() for s in self.allowed_schemes)
        )
        object.__setattr__(self, "allowed_private_networks", tuple(self.allowed_private_networks))
        _parse_networks(self.allowed_private_networks)  # fail at construction, not per URL
        if self.max_attempts < 1 or self.deadline_s <= 0 or self.max_bytes < 1:
            raise ValueError("max_attempts, deadline_s and max_bytes must be positive")


DEFAULT_POLICY = DownloadPolicy()


@dataclass(frozen=True)
class ImageFetchResult:
    """One row of IMAGE_FETCH_SCHEMA."""

    url: str | None
    status: str
    reason: str | None
    sha256: str | None
    path: str | None
    format: str | None
    width: int | None
    height: int | None
    bytes: int | None
    attempts: int
    elapsed_s: float

    @property
    def reason_code(self) -> str | None:
        return reason_code(self.reason)


@dataclass(frozen=True)
class FetchStats:
    """`ok + failed + bad_image` equals the number of rows (reused rows count as ok)."""

    attempted: int
    reused: int
    ok: int
    failed: int
    bad_image: int
    reasons: dict[str, int] = field(default_factory=dict)  # reason code -> rows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FetchError(Exception):
    """A download failure with its reason code; `retryable` drives the retry loop."""

    def __init__(
        self, code: str, detail: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.reason = f"{code}: {detail}"
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1


class BadImageError(ValueError):
    """Bytes that are not an allowed, intact, sanely sized image."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.reason = f"{code}: {detail}"


def reason_code(reason: str | None) -> str | None:
    return None if reason is None else reason.split(":", 1)[0].strip()


# --------------------------------------------------------------------------- image bytes


def sniff_format(data: bytes) -> str:
    """Name the content from its magic bytes; headers and extensions are not evidence."""
    head = data[:64]
    magic = (
        (b"\xff\xd8\xff", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"BM", "BMP"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"\x00\x00\x01\x00", "ICO"),
        (b"8BPS", "PSD"),
        (b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
        (b"%PDF", "pdf"),
        (b"\x1f\x8b", "gzip"),
        (b"PK\x03\x04", "zip"),
    )
    if not head:
        return "empty"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    for prefix, name in magic:
        if head.startswith(prefix):
            return name
    return _sniff_text(data[:512])


def _sniff_text(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<body" in text:
        return "html"
    if b"<svg" in text:
        return "SVG"
    if text.startswith(b"<?xml"):
        return "xml"
    if text.startswith((b"{", b"[")):
        return "json"
    return "unknown"


def inspect_image_bytes(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an allowed, fully decodable image, else BadImageError.

    Reusable by any module that handles untrusted image bytes (dedupe, variants).
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With it set Pillow pads truncated images with grey instead of failing: refuse to run
        # rather than let broken images into the dataset.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    kind = sniff_format(data)
    if kind not in FORMAT_EXTENSIONS:
        if kind.isupper():  # a real image format, just not one we accept
            raise BadImageError(REASON_FORMAT, f"{kind} not allowed")
        raise BadImageError(REASON_NOT_IMAGE, kind)
    if kind == "webp" and len(data) < 8 + int.from_bytes(data[4:8], "little"):
        # Pillow's WebP decoder reports a cut file only as "could not create decoder object".
        raise BadImageError(REASON_TRUNCATED, "webp shorter than its RIFF header says")
    pil_format = _PIL_FORMATS[kind]
    try:
        with Image.open(io.BytesIO(data), formats=[pil_format]) as img:
            width, height = img.size
            _check_pixels(width, height, max_pixels)
            img.verify()  # structural checks (e.g. PNG chunk CRCs) without decoding
        # verify() leaves the image unusable; only a full decode proves every byte is there.
        with Image.open(io.BytesIO(data), formats=[pil_format]) as img:
            img.load()
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (MAX_IMAGE_PIXELS) fired first; it is a bomb all the same.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        detail = f"{found.group(1)} pixels" if found else "refused by Pillow"
        raise BadImageError(REASON_DECOMPRESSION_BOMB, f"{detail} > cap {max_pixels}") from exc
    except Exception as exc:  # any decoder error on hostile bytes is a bad image, not a crash
        raise _decoder_error(exc) from exc
    return kind, width, height


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise BadImageError(REASON_CORRUPT, f"size {width}x{height}")
    if width * height > max_pixels:
        raise BadImageError(
            REASON_DECOMPRESSION_BOMB, f"{width * height} pixels > cap {max_pixels}"
        )


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _decoder_error(exc: Exception) -> BadImageError:
    # Pillow names the buffer by its memory address ("<_io.BytesIO object at 0x7f…>"): the
    # reason feeds the data version, so it must read the same on every run.
    message = _OBJECT_REPR.sub("<image bytes>", str(exc)) or type(exc).__name__
    if isinstance(exc, EOFError) or "truncat" in message.lower():
        return BadImageError(REASON_TRUNCATED, message[:120])
    return BadImageError(REASON_CORRUPT, message[:120])


# --------------------------------------------------------------------------- URL policy


def _scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    return scheme or "file"  # a bare path is a local file


def _check_scheme(url: str, policy: DownloadPolicy, *, redirect: bool = False) -> str:
    scheme = _scheme_of(url)
    # A redirect may only lead to http(s): a server must not be able to point us at file://.
    if scheme not in policy.allowed_schemes or (redirect and scheme not in _HTTP_SCHEMES):
        raise FetchError(REASON_SCHEME, f"{scheme} not allowed")
    return scheme


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress._BaseAddress:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4), which is where packets
    end up: `64:ff9b::a9fe:a9fe` is the metadata service to a NAT64 gateway, and
    `is_global` alone calls it public."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour or ip


def address_problem(address: str, policy: DownloadPolicy) -> str | None:
    """Why the policy forbids connecting to this IP address, or None when it may."""
    ip = _embedded_ipv4(ipaddress.ip_address(address.split("%", 1)[0]))
    if policy.allow_private_hosts:
        return None
    if ip in _METADATA_ADDRESSES:
        return "cloud metadata"
    if any(ip in net for net in _parse_networks(policy.allowed_private_networks)):
        return None
    for attribute, label in _ADDRESS_PROBLEMS:
        if getattr(ip, attribute):
            return label
    return None if ip.is_global else "not globally routable"


def _vet_host(host: str, port: int, policy: DownloadPolicy) -> str:
    """Resolve once, refuse if ANY address is forbidden, return the address to connect to.

    Connecting to the returned address (not the name again) closes the DNS-rebinding gap.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        retryable = exc.errno == socket.EAI_AGAIN
        raise FetchError(REASON_DNS, f"{host} did not resolve", retryable=retryable) from exc
    except UnicodeError as exc:
        raise FetchError(REASON_BAD_URL, f"bad host {host!r}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchError(REASON_DNS, f"{host} did not resolve")
    for address in addresses:
        problem = address_problem(address, policy)
        if problem:
            raise FetchError(REASON_SSRF, f"{address} is {problem}")
    return addresses[0]


# --------------------------------------------------------------------------- transport


class _Deadline:
    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.end = time.monotonic() + budget_s

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self) -> float:
        """Seconds left; raises once the budget is spent."""
        left = self.remaining()
        if left <= 0:
            raise FetchError(REASON_DEADLINE, f"exceeded {self.budget_s:g}s")
        return left


class _Watchdog:
    """Cuts the connection when the URL's deadline passes, whatever the reader is blocked in.

    Socket timeouts bound each recv, not the total: a server that drips one byte of its status
    line or headers every second never trips them, and http.client reads headers inside
    urlopen where no deadline check can run. Shutting the socket down from another thread
    makes the blocked recv return at once; the caller then reports `deadline`.
    """

    def __init__(self, deadline: _Deadline) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.fired = False
        self.done = False
        self._due = deadline.end

    def __enter__(self) -> _Watchdog:
        _CLOCK.schedule(self._due, self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Under the lock: once the request is over, a late firing must not touch anything.
        with self._lock:
            self.done = True
            self._sockets.clear()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                _shutdown(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)


class _WatchdogClock:
    """The one thread that fires every watchdog of the process when its deadline passes.

    A threading.Timer per request cost a thread start (~0.25 ms of GIL hand-offs) per URL and
    redirect hop, a visible share of the per-image CPU; a heap served by one thread costs a push.
    Finished watchdogs are not removed, just skipped when they come up (`done`).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watchdog]] = []
        self._seq = itertools.count()  # ties on the due time never compare watchdogs
        self._thread: threading.Thread | None = None

    def schedule(self, due: float, watchdog: _Watchdog) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), watchdog))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="fetch-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is watchdog:
                self._cond.notify()  # due before what the thread is waiting for

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                wait_s = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait_s is None or wait_s > 0:
                    self._cond.wait(wait_s)
                    continue
                watchdog = heapq.heappop(self._heap)[2]
            watchdog.fire()  # outside the clock's lock: shutdown() may take a moment


_CLOCK = _WatchdogClock()
# A forked child has no clock thread, and the lock may have been held at the fork.
os.register_at_fork(after_in_child=_CLOCK.reset)


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter tears down TLS state that the
    # reading thread is still using. A socket already closed (fd -1) just raises OSError.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedConnectionMixin:
    """Registers the raw socket (covers the TLS handshake) and the final one with a watchdog."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self._watchdog.watch(sock)
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._watchdog.watch(self.sock)  # type: ignore[attr-defined]


class _WatchedHTTPConnection(_WatchedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _CappedDecoder:
    """Streaming gzip/deflate decoding that stops as soon as the output passes the cap."""

    def __init__(self, wbits: int, cap: int) -> None:
        self._inflater = zlib.decompressobj(wbits)
        self._cap = cap
        self._produced = 0

    def feed(self, data: bytes) -> bytes:
        try:
            # max_length >= 1 always (0 would mean unlimited): we raise once produced > cap.
            out = self._inflater.decompress(data, self._cap + 1 - self._produced)
        except zlib.error as exc:
            raise FetchError(REASON_CONTENT_ENCODING, f"undecodable body ({exc})") from exc
        self._produced += len(out)
        if self._produced > self._cap:
            raise FetchError(REASON_TOO_LARGE, f"> {self._cap} bytes decoded")
        return out


def _decoder_for(encoding: str | None, cap: int) -> _CappedDecoder | None:
    value = (encoding or "identity").strip().lower()
    if value in ("", "identity"):
        return None
    if value in ("gzip", "x-gzip"):
        return _CappedDecoder(16 + zlib.MAX_WBITS, cap)
    if value == "deflate":
        return _CappedDecoder(32 + zlib.MAX_WBITS, cap)  # zlib-wrapped or gzip, auto-detected
    raise FetchError(REASON_CONTENT_ENCODING, f"{value} not supported")


def _read_capped(
    read: Callable[[int], bytes],
    policy: DownloadPolicy,
    deadline: _Deadline,
    decoder: _CappedDecoder | None = None,
    before_read: Callable[[float], None] | None = None,
) -> bytes:
    """Read to EOF, aborting the moment the body passes the cap or the deadline passes."""
    chunks: list[bytes] = []
    wire_total = body_total = 0
    while True:
        left = deadline.check()
        if before_read is not None:
            before_read(left)
        chunk = read(policy.chunk_size)
        if not chunk:
            break
        wire_total += len(chunk)
        if decoder is not None:
            chunk = decoder.feed(chunk)
        body_total += len(chunk)
        if max(wire_total, body_total) > policy.max_bytes:
            raise FetchError(REASON_TOO_LARGE, f"> {policy.max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_error(exc: Exception, deadline: _Deadline) -> FetchError:
    if isinstance(exc, FetchError):
        return exc
    if deadline.remaining() <= 0:  # the watchdog cut the socket: whatever broke, time ran out
        return FetchError(REASON_DEADLINE, f"exceeded {deadline.budget_s:g}s")
    if isinstance(exc, NewConnectionError):  # subclass of ConnectTimeoutError: test first
        detail = str(exc).rsplit(":", 1)[-1].strip()[:120]
        return FetchError(REASON_CONNECTION, detail or "failed", retryable=True)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        kind = "connect" if isinstance(exc, ConnectTimeoutError) else "read"
        if deadline.remaining() < 0.05:  # the timeout was the deadline's cap that fired
            return FetchError(REASON_DEADLINE, f"exceeded {deadline.budget_s:g}s")
        return FetchError(REASON_TIMEOUT, kind, retryable=True)
    if isinstance(exc, SSLError):
        return FetchError(REASON_TLS, str(exc)[:120])
    if isinstance(exc, ValueError):
        return FetchError(REASON_BAD_URL, str(exc)[:120])
    return FetchError(REASON_CONNECTION, f"{type(exc).__name__}: {exc}"[:120], retryable=True)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _pool_for(
    scheme: str, host: str, address: str, port: int, watchdog: _Watchdog
) -> urllib3.HTTPConnectionPool:
    """A one-connection pool dialling the vetted address, with TLS still checking `host`."""
    if scheme == "https":
        return _WatchedHTTPSPool(
            address,
            port,
            maxsize=1,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            server_hostname=host,  # SNI
            assert_hostname=host,  # certificate must match the name, not the IP we dialled
            watchdog=watchdog,
        )
    return _WatchedHTTPPool(address, port, maxsize=1, retries=False, watchdog=watchdog)


def _http_get(
    url: str, policy: DownloadPolicy, deadline: _Deadline, watchdog: _Watchdog
) -> tuple[urllib3.BaseHTTPResponse, urllib3.HTTPConnectionPool]:
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise FetchError(REASON_BAD_URL, "no host")
    default_port = 443 if parts.scheme.lower() == "https" else 80
    port = parts.port or default_port
    address = _vet_host(host, port, policy)
    left = deadline.check()
    name = f"[{host}]" if ":" in host else host
    headers = {
        "Host": name if port == default_port else f"{name}:{port}",
        "User-Agent": policy.user_agent,
        "Accept": "image/webp,image/png,image/jpeg,image/gif;q=0.9,*/*;q=0.1",
        "Accept-Encoding": "identity",  # compressed images gain nothing; bombs gain a lot
    }
    timeout = urllib3.Timeout(
        connect=min(policy.connect_timeout_s, left), read=min(policy.read_timeout_s, left)
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    pool = _pool_for(parts.scheme.lower(), host, address, port, watchdog)
    try:
        response = pool.urlopen(
            "GET",
            target,
            headers=headers,
            redirect=False,
            retries=False,
            timeout=timeout,
            preload_content=False,
            decode_content=False,
            assert_same_host=False,
        )
    except Exception as exc:
        pool.close()
        raise _transport_error(exc, deadline) from exc
    return response, pool


def _read_response(
    response: urllib3.BaseHTTPResponse, policy: DownloadPolicy, deadline: _Deadline
) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(REASON_TOO_LARGE, f"content-length {int(declared)} > {policy.max_bytes}")
    decoder = _decoder_for(response.headers.get("Content-Encoding"), policy.max_bytes)
    sock = getattr(response.connection, "sock", None)

    def shrink_timeout(left: float) -> None:
        # The read timeout set at request time may outlast the deadline by now.
        if sock is not None:
            sock.settimeout(max(0.01, min(policy.read_timeout_s, left)))

    def read(amount: int) -> bytes:
        # read1: one socket read per call, so a dripping server cannot keep us inside a read
        # that waits for a full chunk.
        return response.read1(amount, decode_content=False)

    try:
        body = _read_capped(read, policy, deadline, decoder, shrink_timeout)
    except FetchError:
        raise
    except (HTTPError, OSError) as exc:
        raise _transport_error(exc, deadline) from exc
    # A watchdog shutdown reads as a clean EOF on a body without a length: not a short image.
    deadline.check()
    return body


def _status_error(response: urllib3.BaseHTTPResponse) -> FetchError:
    status = response.status
    retryable = status == 429 or 500 <= status <= 599
    retry_after = _parse_retry_after(response.headers.get("Retry-After")) if retryable else None
    return FetchError(REASON_HTTP_STATUS, str(status), retryable=retryable, retry_after=retry_after)


def _fetch_http(url: str, policy: DownloadPolicy, deadline: _Deadline) -> bytes:
    current = url
    for hop in range(policy.max_redirects + 1):
        if hop:
            _check_scheme(current, policy, redirect=True)
        with _Watchdog(deadline) as watchdog:
            response, pool = _http_get(current, policy, deadline, watchdog)
            try:
                if response.status in _REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchError(REASON_HTTP_STATUS, f"{response.status} without Location")
                    current = urljoin(current, location.strip()).split("#", 1)[0]
                    continue
                if response.status != 200:
                    raise _status_error(response)
                return _read_response(response, policy, deadline)
            finally:
                response.close()
                pool.close()
    raise FetchError(REASON_REDIRECTS, f"too many (> {policy.max_redirects})")


def _fetch_fsspec(url: str, policy: DownloadPolicy, deadline: _Deadline) -> bytes:
    try:
        fs, path = fsspec.core.url_to_fs(url)
        with fs.open(path, "rb") as handle:
            return _read_capped(handle.read, policy, deadline)
    except FetchError:
        raise
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise FetchError(REASON_NOT_FOUND, url[:200]) from exc
    except PermissionError as exc:
        raise FetchError(REASON_PERMISSION, url[:200]) from exc
    except (ValueError, ImportError) as exc:  # unknown protocol, missing backend, bad path
        raise FetchError(REASON_BAD_URL, str(exc)[:120]) from exc
    except OSError as exc:
        raise FetchError(REASON_IO, f"{type(exc).__name__}: {exc}"[:120], retryable=True) from exc


def _fetch_once(url: str, policy: DownloadPolicy, deadline: _Deadline) -> bytes:
    try:
        scheme = _check_scheme(url, policy)
        if scheme in _HTTP_SCHEMES:
            return _fetch_http(url, policy, deadline)
        return _fetch_fsspec(url, policy, deadline)
    except FetchError:
        raise
    except (ValueError, UnicodeError) as exc:  # urlsplit/urljoin/urllib3 on malformed URLs
        raise FetchError(REASON_BAD_URL, str(exc)[:120]) from exc


def _backoff_s(attempt: int, policy: DownloadPolicy) -> float:
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
    return random.uniform(0.0, ceiling)  # full jitter: retries of many workers spread out


def _retry_delay(
    exc: FetchError, attempt: int, policy: DownloadPolicy, deadline: _Deadline
) -> float | None:
    """Seconds to wait before the next attempt, or None when `exc` is the URL's final answer.

    One rule for both callers: `_download` sleeps the delay, a batch schedules it.
    """
    exc.attempts = attempt
    if not exc.retryable or attempt >= policy.max_attempts:
        return None
    delay = exc.retry_after if exc.retry_after is not None else _backoff_s(attempt, policy)
    if delay >= deadline.remaining():
        return None  # waiting would only trade this error for a deadline error
    return delay


def _download(url: str, policy: DownloadPolicy, deadline: _Deadline) -> tuple[bytes, int]:
    """The body and the number of attempts it took; FetchError carries attempts on failure.

    Sleeps between attempts: for a single URL the calling thread has nothing else to do.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return _fetch_once(url, policy, deadline), attempt
        except FetchError as exc:
            delay = _retry_delay(exc, attempt, policy, deadline)
            if delay is None:
                raise
            time.sleep(delay)


# --------------------------------------------------------------------------- public API


def _result(
    url: str | None, status: str, reason: str | None, started: float, **fields: Any
) -> ImageFetchResult:
    values: dict[str, Any] = dict.fromkeys(("sha256", "path", "format", "width", "height"))
    values.update(bytes=None, attempts=0)
    values.update(fields)
    elapsed = round(time.monotonic() - started, 4)
    return ImageFetchResult(url=url, status=status, reason=reason, elapsed_s=elapsed, **values)


def _is_usable(url: str | None) -> TypeGuard[str]:
    return isinstance(url, str) and bool(url.strip())


def _empty(url: str | None, started: float) -> ImageFetchResult:
    return _result(url, IMAGE_STATUS_DOWNLOAD_FAILED, f"{REASON_BAD_URL}: empty", started)


def _failed(url: str | None, exc: FetchError, started: float) -> ImageFetchResult:
    failed = IMAGE_STATUS_DOWNLOAD_FAILED
    return _result(url, failed, exc.reason, started, attempts=exc.attempts)


def _verified(
    url: str, data: bytes, attempts: int, started: float, store_root: str, policy: DownloadPolicy
) -> ImageFetchResult:
    """Check the downloaded bytes and store them if they are an allowed image."""
    try:
        kind, width, height = inspect_image_bytes(data, policy.max_pixels)
    except BadImageError as exc:
        bad = IMAGE_STATUS_BAD_IMAGE
        return _result(url, bad, exc.reason, started, bytes=len(data), attempts=attempts)
    path = image_store.store_image_bytes(store_root, data, FORMAT_EXTENSIONS[kind])
    return _result(
        url,
        IMAGE_STATUS_OK,
        None,
        started,
        sha256=image_store.sha256_hex(data),
        path=path,
        format=kind,
        width=width,
        height=height,
        bytes=len(data),
        attempts=attempts,
    )


def fetch_image(
    url: str | None, store_root: str, policy: DownloadPolicy = DEFAULT_POLICY
) -> ImageFetchResult:
    """Download, verify and store one image. Never raises for a bad URL, server or bytes.

    Storage errors (full disk, missing bucket) do raise: they are the operator's problem and
    must fail the run rather than mark every row as a bad download.
    """
    started = time.monotonic()
    if not _is_usable(url):
        return _empty(url, started)
    deadline = _Deadline(policy.deadline_s)
    try:
        data, attempts = _download(url.strip(), policy, deadline)
    except FetchError as exc:
        return _failed(url, exc, started)
    return _verified(url, data, attempts, started, store_root, policy)


def _reuse_candidates(previous: pl.DataFrame | None) -> list[dict[str, Any]]:
    if previous is None or previous.height == 0:
        return []
    rows = (
        previous.select(list(IMAGE_FETCH_SCHEMA))
        .filter((pl.col("status") == IMAGE_STATUS_OK) & pl.col("sha256").is_not_null())
        .filter(pl.col("format").is_in(list(FORMAT_EXTENSIONS)))
        .unique(subset="url", keep="first", maintain_order=True)
    )
    return rows.to_dicts()


def _still_stored(row: dict[str, Any], store_root: str) -> dict[str, Any] | None:
    """The previous row, pointed at the current store, if its image is still there."""
    try:
        path = image_store.image_path_for(
            store_root, row["sha256"], FORMAT_EXTENSIONS[row["format"]]
        )
    except ValueError:
        return None
    return {**row, "path": path} if image_store.exists(path) else None


# Per-URL success records under the store root, written as each image lands: a run killed
# before its table is saved still leaves proof of what it finished, so the rerun skips those.
URL_INDEX_DIR = "image_index"
_RECORD_FIELDS = ("url", "sha256", "format", "width", "height", "bytes", "attempts", "elapsed_s")


def _url_record_path(store_root: str, url: str) -> str:
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{str(store_root).rstrip('/')}/{URL_INDEX_DIR}/{digest[:2]}/{digest}.json"


def _with_record(result: ImageFetchResult, store_root: str) -> dict[str, Any]:
    """The result as a table row, its success recorded in the URL index first."""
    row = asdict(result)
    if row["status"] == IMAGE_STATUS_OK and isinstance(result.url, str):
        record = json.dumps({name: row[name] for name in _RECORD_FIELDS}).encode()
        image_store.write_bytes_atomic(_url_record_path(store_root, result.url), record)
    return row


@dataclass
class _Job:
    """One URL of a batch between its attempts; one thread at a time holds it."""

    url: str | None
    started: float = 0.0
    deadline: _Deadline | None = None
    attempt: int = 0
    last_error: FetchError | None = None
    ready_at: float = 0.0  # when the next attempt is due


def _attempt(job: _Job, store_root: str, policy: DownloadPolicy) -> dict[str, Any] | None:
    """Make the job's next attempt: its final row, or None to retry it at `job.ready_at`."""
    url = job.url
    if job.deadline is None:
        job.started = time.monotonic()
        # The budget starts at the first attempt, not when the URL joined the batch's queue.
        job.deadline = _Deadline(policy.deadline_s)
    elif job.last_error is not None and job.deadline.remaining() <= 0:
        # Due, but no worker was free before the deadline: the last error stands, as it does
        # when a backoff would outlast the deadline.
        return asdict(_failed(url, job.last_error, job.started))
    if not _is_usable(url):
        return asdict(_empty(url, job.started))
    job.attempt += 1
    try:
        data = _fetch_once(url.strip(), policy, job.deadline)
    except FetchError as exc:
        delay = _retry_delay(exc, job.attempt, policy, job.deadline)
        if delay is None:
            return asdict(_failed(url, exc, job.started))
        job.last_error, job.ready_at = exc, time.monotonic() + delay
        return None
    result = _verified(url, data, job.attempt, job.started, store_root, policy)
    return _with_record(result, store_root)


def _fetch_scheduled(
    urls: list[str | None],
    store_root: str,
    policy: DownloadPolicy,
    pool: ThreadPoolExecutor,
    workers: int,
) -> dict[str | None, dict[str, Any]]:
    """Fetch `urls` with at most `workers` attempts in flight, and no worker ever asleep.

    A backoff slept inside a worker held it for seconds per permanently failing URL, so a few
    of those set the tail of a batch. Here an attempt that may be retried goes on a heap of
    (due time, job); a free worker takes a due retry before a fresh URL, so a due retry waits
    at most for one attempt to end (should its deadline pass meanwhile, its last error stands).
    """
    fresh = deque(_Job(url) for url in urls)
    waiting: list[tuple[float, int, _Job]] = []
    order = itertools.count()  # ties on the due time never compare jobs
    running: dict[Future[dict[str, Any] | None], _Job] = {}
    rows: dict[str | None, dict[str, Any]] = {}
    while fresh or waiting or running:
        now = time.monotonic()
        while len(running) < workers and (fresh or (waiting and waiting[0][0] <= now)):
            due = waiting and waiting[0][0] <= now
            job = heapq.heappop(waiting)[2] if due else fresh.popleft()
            running[pool.submit(_attempt, job, store_root, policy)] = job
        # Wake for the next retry only if a worker is free to take it; else for a completion.
        free = len(running) < workers and bool(waiting)
        timeout = max(0.0, waiting[0][0] - now) if free else None
        if not running:
            time.sleep(timeout or 0.0)  # wait() on no futures returns at once
            continue
        done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            job = running.pop(future)
            row = future.result()  # storage errors propagate and fail the batch
            if row is None:
                heapq.heappush(waiting, (job.ready_at, next(order), job))
            else:
                rows[job.url] = row
    return rows


def _recorded(url: str | None, store_root: str) -> dict[str, Any] | None:
    """The success a previous (possibly killed) run recorded for this URL, if its image is
    still in the store; an unreadable record is ignored and the URL fetched again."""
    if not isinstance(url, str):
        return None
    path = _url_record_path(store_root, url)
    fs, fs_path = fsspec.core.url_to_fs(path)
    try:
        with fs.open(fs_path, "rb") as handle:
            record = json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("url") != url:
        return None
    row = {name: record.get(name) for name in _RECORD_FIELDS}
    if row["format"] not in FORMAT_EXTENSIONS or not isinstance(row["sha256"], str):
        return None
    return _still_stored({**row, "status": IMAGE_STATUS_OK, "reason": None}, store_root)


def fetch_images(
    urls: Iterable[str | None],
    store_root: str,
    policy: DownloadPolicy = DEFAULT_POLICY,
    workers: int = 64,
    previous: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, FetchStats]:
    """Fetch every distinct URL once (order of first appearance), reusing earlier successes.

    A URL whose image is still in the store is not fetched again when `previous` has it as ok
    or when a run (even one killed half-way) recorded it in the URL index; failures are
    retried. Threads, not processes: the work waits on the network.
    """
    distinct = list(dict.fromkeys(urls))
    wanted = set(distinct)
    candidates = [row for row in _reuse_candidates(previous) if row["url"] in wanted]
    rows: dict[str | None, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fetch") as pool:
        checked = pool.map(lambda row: _still_stored(row, store_root), candidates)
        reused = {row["url"]: row for row in checked if row is not None}
        unseen = [url for url in distinct if url not in reused]
        recorded = pool.map(lambda url: _recorded(url, store_root), unseen)
        reused.update((row["url"], row) for row in recorded if row is not None)
        todo = [url for url in distinct if url not in reused]
        rows.update(_fetch_scheduled(todo, store_root, policy, pool, max(1, workers)))
    rows.update(reused)
    ordered = [rows[url] for url in distinct]
    frame = (
        pl.DataFrame(ordered, schema=IMAGE_FETCH_SCHEMA)
        if ordered
        else empty_frame(IMAGE_FETCH_SCHEMA)
    )
    return frame, _stats(frame, attempted=len(todo), reused=len(reused))


def _stats(frame: pl.DataFrame, attempted: int, reused: int) -> FetchStats:
    statuses = Counter(frame.get_column("status").to_list())
    codes = Counter(code for code in map(reason_code, frame.get_column("reason").to_list()) if code)
    return FetchStats(
        attempted=attempted,
        reused=reused,
        ok=statuses[IMAGE_STATUS_OK],
        failed=statuses[IMAGE_STATUS_DOWNLOAD_FAILED],
        bad_image=statuses[IMAGE_STATUS_BAD_IMAGE],
        reasons=dict(sorted(codes.items())),
    )
