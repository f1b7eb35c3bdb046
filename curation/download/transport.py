"""One attempt at one URL: bytes in, or a FetchError saying why not.

http(s) dials through urllib3's connection objects directly (not fsspec, not urllib3's pools)
because only there can we pin the vetted IP, follow redirects ourselves (re-checking each hop),
stream with a byte cap and a deadline, and hand a kept-alive socket to each request's watchdog
(`connections`). The request and response on that socket go through `http1` (httptools'
parser), not http.client's.
Other schemes (file, s3, gcs, memory, ...) go through fsspec when the policy allows them.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import fsspec
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.ssl_match_hostname import CertificateError

from curation.download.connections import (
    Connection,
    ConnectionPools,
    PoolKey,
    is_stale_connection_error,
)
from curation.download.http1 import Response, ResponseError, encode_request, send_get
from curation.download.policy import HTTP_SCHEMES, DownloadPolicy, check_scheme, vet_host
from curation.download.reasons import (
    REASON_BAD_URL,
    REASON_CONNECTION,
    REASON_CONTENT_ENCODING,
    REASON_DEADLINE,
    REASON_HTTP_STATUS,
    REASON_IO,
    REASON_NOT_FOUND,
    REASON_PERMISSION,
    REASON_REDIRECTS,
    REASON_TIMEOUT,
    REASON_TLS,
    REASON_TOO_LARGE,
    FetchError,
)
from curation.images.sniff import accept_header

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Redirect and error bodies up to this size are read so their connection stays open.
_DRAIN_MAX_BYTES = 16 * 1024


class Deadline:
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
    line or headers every second never trips them, and the TLS handshake and the response head
    are read where no deadline check can run. Shutting the socket down from another thread
    makes the blocked recv return at once; the caller then reports `deadline`.
    """

    def __init__(self, deadline: Deadline) -> None:
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
    deadline: Deadline,
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


def _transport_error(exc: Exception, deadline: Deadline) -> FetchError:
    if isinstance(exc, FetchError):
        return exc
    if deadline.remaining() <= 0:  # the watchdog cut the socket: whatever broke, time ran out
        return FetchError(REASON_DEADLINE, f"exceeded {deadline.budget_s:g}s")
    if isinstance(exc, NewConnectionError):  # subclass of ConnectTimeoutError: test first
        detail = str(exc).rsplit(":", 1)[-1].strip()[:120]
        return FetchError(REASON_CONNECTION, detail or "failed", retryable=True)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        kind = "connect" if isinstance(exc, ConnectTimeoutError) else "read"
        if deadline.remaining() < 0.05:  # the timeout was the deadline's cap that fired
            return FetchError(REASON_DEADLINE, f"exceeded {deadline.budget_s:g}s")
        return FetchError(REASON_TIMEOUT, kind, retryable=True)
    if isinstance(exc, SSLError | ssl.SSLError | CertificateError):  # before ValueError
        return FetchError(REASON_TLS, str(exc)[:120])
    if isinstance(exc, ValueError):
        return FetchError(REASON_BAD_URL, str(exc)[:120])
    if isinstance(exc, ResponseError):
        return FetchError(REASON_CONNECTION, str(exc)[:120], retryable=True)
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


@dataclass
class _Exchange:
    """One request on one connection: the response, and what to do with the connection."""

    key: PoolKey
    conn: Connection
    sock: socket.socket
    response: Response

    def close(self) -> None:
        self.conn.close()


def _send(
    conn: Connection, request: bytes, policy: DownloadPolicy, deadline: Deadline
) -> tuple[Response, socket.socket]:
    if conn.is_closed:
        conn.timeout = min(policy.connect_timeout_s, deadline.check())
        conn.connect()
    sock = conn.sock
    if sock is None:
        raise ConnectionAbortedError("connection closed before the request")
    sock.settimeout(min(policy.read_timeout_s, deadline.check()))
    return send_get(sock, request), sock


def _http_get(
    url: str,
    policy: DownloadPolicy,
    deadline: Deadline,
    watchdog: _Watchdog,
    pools: ConnectionPools,
) -> _Exchange:
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise FetchError(REASON_BAD_URL, "no host")
    scheme = parts.scheme.lower()
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    # Vetted for every URL and hop, pooled or not: the pool is keyed by the vetted address.
    key = (scheme, host, vet_host(host, port, policy), port)
    name = f"[{host}]" if ":" in host else host
    headers = {
        "Host": name if port == default_port else f"{name}:{port}",
        "User-Agent": policy.user_agent,
        "Accept": accept_header(policy.allowed_formats),
        "Accept-Encoding": "identity",  # compressed images gain nothing; bombs gain a lot
    }
    request = encode_request(
        (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers
    )
    fresh = False
    while True:
        conn, reused = pools.acquire(key, watchdog.watch, fresh=fresh)
        try:
            response, sock = _send(conn, request, policy, deadline)
        except Exception as exc:
            conn.close()
            if reused and not watchdog.fired and is_stale_connection_error(exc):
                fresh = True  # the server closed an idle socket under us: once, anew
                continue
            raise _transport_error(exc, deadline) from exc
        return _Exchange(key, conn, sock, response)


def _read_response(exchange: _Exchange, policy: DownloadPolicy, deadline: Deadline) -> bytes:
    response, sock = exchange.response, exchange.sock
    declared = response.content_length
    if declared is not None and declared > policy.max_bytes:
        raise FetchError(REASON_TOO_LARGE, f"content-length {declared} > {policy.max_bytes}")
    decoder = _decoder_for(response.headers.get("content-encoding"), policy.max_bytes)

    def shrink_timeout(left: float) -> None:
        # The read timeout set at request time may outlast the deadline by now.
        if sock.fileno() != -1:
            sock.settimeout(max(0.01, min(policy.read_timeout_s, left)))

    try:
        # read1: one socket read per call, so a dripping server cannot keep us inside a read
        # that waits for a full chunk.
        body = _read_capped(response.read1, policy, deadline, decoder, shrink_timeout)
    except FetchError:
        raise
    except (ResponseError, OSError) as exc:
        raise _transport_error(exc, deadline) from exc
    # A watchdog shutdown reads as a clean EOF on a body without a length: not a short image.
    deadline.check()
    return body


def _status_error(response: Response) -> FetchError:
    status = response.status
    retryable = status == 429 or 500 <= status <= 599
    retry_after = _parse_retry_after(response.headers.get("retry-after")) if retryable else None
    return FetchError(REASON_HTTP_STATUS, str(status), retryable=retryable, retry_after=retry_after)


def _redirect_location(response: Response) -> str | None:
    """Where a redirect points, None for a 200, else the status as a FetchError."""
    if response.status in _REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise FetchError(REASON_HTTP_STATUS, f"{response.status} without Location")
        return location.strip()
    if response.status != 200:
        raise _status_error(response)
    return None


def _fetch_http(
    url: str, policy: DownloadPolicy, deadline: Deadline, pools: ConnectionPools
) -> bytes:
    current = url
    for hop in range(policy.max_redirects + 1):
        if hop:
            check_scheme(current, policy, redirect=True)
        body: bytes | None = None
        status_error: FetchError | None = None
        with _Watchdog(deadline) as watchdog:
            exchange = _http_get(current, policy, deadline, watchdog, pools)
            try:
                try:
                    location = _redirect_location(exchange.response)
                except FetchError as exc:  # a status that is neither 200 nor a redirect
                    status_error, location = exc, None
                if location is None and status_error is None:
                    body = _read_response(exchange, policy, deadline)
                else:
                    _drain(exchange.response, deadline)
            except BaseException:
                exchange.close()
                raise
        # Only once this request's watchdog is done can it no longer cut the socket under the
        # connection's next user.
        if not watchdog.fired and exchange.response.keep_alive:
            pools.release(exchange.key, exchange.conn)
        else:
            exchange.close()
        if status_error is not None:
            raise status_error
        if body is not None:
            return body
        current = urljoin(current, location).split("#", 1)[0]
    raise FetchError(REASON_REDIRECTS, f"too many (> {policy.max_redirects})")


def _drain(response: Response, deadline: Deadline) -> None:
    """Read a short redirect or error body to its end, so its connection can carry the next
    request instead of costing a new handshake; a long or unsized one is left (and closed)."""
    declared = response.content_length
    if declared is None or declared > _DRAIN_MAX_BYTES:
        return
    with contextlib.suppress(ResponseError, OSError):
        while deadline.remaining() > 0 and response.read1(_DRAIN_MAX_BYTES):
            pass


def _fetch_fsspec(url: str, policy: DownloadPolicy, deadline: Deadline) -> bytes:
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


def fetch_once(
    url: str, policy: DownloadPolicy, deadline: Deadline, pools: ConnectionPools | None = None
) -> bytes:
    """One attempt at `url`; http(s) reuses `pools`' keep-alive connections (none if None)."""
    try:
        scheme = check_scheme(url, policy)
        if scheme not in HTTP_SCHEMES:
            return _fetch_fsspec(url, policy, deadline)
        if pools is not None:
            return _fetch_http(url, policy, deadline, pools)
        with ConnectionPools(max_idle=0) as own:
            return _fetch_http(url, policy, deadline, own)
    except FetchError:
        raise
    except (ValueError, UnicodeError) as exc:  # urlsplit/urljoin/urllib3 on malformed URLs
        raise FetchError(REASON_BAD_URL, str(exc)[:120]) from exc
