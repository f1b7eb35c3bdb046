"""Keep-alive connections, shared per vetted (scheme, host, address, port) within one batch.

A TCP (and TLS) handshake per image cost more client CPU than the request itself. Connections
are keyed by the address the SSRF check vetted, never the name, so a pooled socket only ever
leads where a fresh dial would; the check itself still runs for every URL and redirect hop
before any pooled connection is looked at. The key keeps the host too: TLS verified the
certificate against it, and HTTP/1.1 requests on one connection should name one Host.

A server may close an idle keep-alive connection at any time, even while our request is on
the wire; an idempotent GET that dies on a reused socket before any response byte arrives is
sent once more on a fresh connection (`stale_connection`), as browsers and urllib3 do.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import urllib3
from urllib3.exceptions import ProtocolError

# (scheme, host, vetted address, port)
PoolKey = tuple[str, str, str, int]
Watch = Callable[[socket.socket | None], None]

# Servers close idle keep-alive connections after 5-75 s (nginx 75 s, Apache 5 s); dropping ours
# first keeps the stale-socket race rare.
IDLE_TIMEOUT_S = 4.0


def _no_watch(sock: socket.socket | None) -> None:
    pass


class _WatchedConnectionMixin:
    """Registers the raw socket (covers the TLS handshake) and the final one with the watchdog
    of whichever request holds the connection now (`watch`, set at every checkout)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch: Watch = _no_watch
        self.idle_since = 0.0

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self.watch(sock)
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.watch(self.sock)  # type: ignore[attr-defined]


class WatchedHTTPConnection(_WatchedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class WatchedHTTPSConnection(_WatchedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


Connection = WatchedHTTPConnection | WatchedHTTPSConnection


def new_connection(key: PoolKey) -> Connection:
    """An unconnected connection that dials the vetted address, with TLS still checking the
    host name: SNI and the certificate are for the name, not the IP we dial."""
    scheme, host, address, port = key
    if scheme == "https":
        return WatchedHTTPSConnection(
            address,
            port,
            cert_reqs="CERT_REQUIRED",
            server_hostname=host,
            assert_hostname=host,
        )
    return WatchedHTTPConnection(address, port)


def is_stale_connection_error(exc: BaseException) -> bool:
    """The kind of failure a server closing an idle keep-alive socket under us produces."""
    if isinstance(exc, ProtocolError) and exc.args and isinstance(exc.args[-1], BaseException):
        exc = exc.args[-1]
    return isinstance(
        exc,
        http.client.RemoteDisconnected
        | ConnectionResetError
        | BrokenPipeError
        | ConnectionAbortedError,
    )


class ConnectionPools:
    """Idle keep-alive connections by key, newest first; at most `max_idle` kept in all.

    `acquire` hands out an idle connection (checked still open) or a new unconnected one;
    `release` takes back one whose response was read to the end. Anything else is closed by
    its user. One lock guards the idle lists; connecting and I/O happen outside it.
    """

    def __init__(self, max_idle: int = 64, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self._lock = threading.Lock()
        self._idle: OrderedDict[PoolKey, list[Connection]] = OrderedDict()
        self._count = 0
        self._closed = False
        self.max_idle = max(0, max_idle)
        self.idle_timeout_s = idle_timeout_s
        self.opened = 0  # new connections handed out: what reuse saves

    def acquire(
        self, key: PoolKey, watch: Watch, *, fresh: bool = False
    ) -> tuple[Connection, bool]:
        """(connection, reused): an idle one for `key` unless `fresh`, else a new one."""
        conn = None if fresh else self._take_idle(key)
        reused = conn is not None
        if conn is None:
            conn = new_connection(key)
            with self._lock:
                self.opened += 1
        conn.watch = watch
        watch(conn.sock)  # a reused socket belongs to this request's deadline now
        return conn, reused

    def _take_idle(self, key: PoolKey) -> Connection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
                self._count -= 1
                if not idle:
                    del self._idle[key]
            # is_connected polls the socket: a server's FIN or stray bytes mean do not reuse.
            fresh_enough = time.monotonic() - conn.idle_since < self.idle_timeout_s
            if fresh_enough and conn.is_connected:
                return conn
            conn.close()

    def release(self, key: PoolKey, conn: Connection) -> None:
        """Keep a connection whose last response was read to its end, or close it."""
        conn.watch = _no_watch
        if conn.is_closed:  # the server said Connection: close (or HTTP/1.0)
            return
        conn.idle_since = time.monotonic()
        evicted: list[Connection] = []
        with self._lock:
            if self._closed or self.max_idle == 0:
                evicted.append(conn)
            else:
                self._idle.setdefault(key, []).append(conn)
                self._idle.move_to_end(key)
                self._count += 1
                while self._count > self.max_idle:  # oldest key's oldest connection goes
                    oldest_key, oldest = next(iter(self._idle.items()))
                    evicted.append(oldest.pop(0))
                    self._count -= 1
                    if not oldest:
                        del self._idle[oldest_key]
        for stale in evicted:
            stale.close()

    def idle_count(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
            self._count = 0
        for conn in idle:
            conn.close()

    def __enter__(self) -> ConnectionPools:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
