"""The far CDN the download benchmark fetches from: a threaded HTTP/1.1 server on 127.0.0.1
serving N distinct JPEGs, each response delayed by a fixed latency, with faults planted by URL
(`fault_plan`). `ServerProcess` runs it in a process of its own, pinned to its own CPUs."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection

from PIL import Image

FAULT_KINDS = ("flaky_500", "always_500", "not_found", "hang_once")
# The server process stops itself after this long even if the parent never says so.
MAX_SERVER_LIFETIME_S = 900.0


def make_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n distinct small JPEGs (noise over a random tint), so content addressing stores n files."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tint = Image.new("RGB", (160, 120), tuple(rng.randrange(256) for _ in range(3)))
        noise = Image.effect_noise((160, 120), 40).convert("RGB")
        buffer = io.BytesIO()
        Image.blend(tint, noise, 0.5).save(buffer, format="JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def fault_plan(n: int, rate: float, seed: int = 0) -> list[str]:
    """'ok' or a fault kind per image; each kind gets an equal share of `rate`."""
    rng = random.Random(seed)
    n_each = round(n * rate / len(FAULT_KINDS))
    plan = ["ok"] * n
    for i, index in enumerate(rng.sample(range(n), n_each * len(FAULT_KINDS))):
        plan[index] = FAULT_KINDS[i // n_each]
    return plan


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Keep-alive, as every CDN speaks: a client that reuses connections may.
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as CDNs set it (nginx's tcp_nodelay is on by default): with Nagle on, the
    # body written after the headers waits for the client's delayed ACK, ~40 ms per response
    # on a kept-alive connection, a stall no real CDN adds.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def handle(self) -> None:
        # A new connection costs its client a round trip before the first request (the TCP
        # handshake) on a real network, which loopback does not: it is modelled here, once
        # per connection, so a client that opens a connection per image pays for it.
        if self.server.stop.wait(self.server.handshake_s):
            return
        # A client closing a kept-alive connection between requests is no server error.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        srv = self.server
        try:
            index = int(self.path.split("?")[0].removeprefix("/img/").removesuffix(".jpg"))
            kind = srv.plan[index]
        except (ValueError, IndexError):
            kind, index = "not_found", -1
        hits = srv.hit(index)
        if srv.stop.wait(srv.latency_s):
            return
        if kind == "hang_once" and hits == 1:
            srv.stop.wait(srv.hang_s)  # bounded: the client's timeout fires long before
            self.close_connection = True
            return
        if kind == "not_found":
            self._send(404, b"not found", "text/plain")
        elif kind == "always_500" or (kind == "flaky_500" and hits == 1):
            self._send(500, b"oops", "text/plain")
        else:
            self._send(200, srv.images[index], "image/jpeg")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that gave up is not the server's problem


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops SYNs under 32 concurrent clients


class ImageServer:
    """`with ImageServer(images, plan, latency_s=0.05) as server:` on 127.0.0.1, ephemeral port.

    `latency_s` delays every response; `handshake_s` delays a new connection's first one more.
    """

    def __init__(
        self,
        images: list[bytes],
        plan: list[str],
        latency_s: float,
        hang_s: float,
        port: int = 0,
        handshake_s: float = 0.0,
    ) -> None:
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        srv = self._httpd
        srv.images, srv.plan, srv.latency_s, srv.hang_s = images, plan, latency_s, hang_s  # type: ignore[attr-defined]
        srv.handshake_s = handshake_s  # type: ignore[attr-defined]
        srv.stop = threading.Event()  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self.hits: Counter[int] = Counter()
        srv.hit = self._hit  # type: ignore[attr-defined]
        self.port = int(srv.server_address[1])
        self._thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)

    def _hit(self, index: int) -> int:
        with self._lock:
            self.hits[index] += 1
            return self.hits[index]

    def urls(self) -> list[str]:
        n = len(self._httpd.plan)  # type: ignore[attr-defined]
        return [f"http://127.0.0.1:{self.port}/img/{i}.jpg" for i in range(n)]

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.stop.set()  # type: ignore[attr-defined]
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _serve(
    images: list[bytes],
    plan: list[str],
    latency_s: float,
    cpus: set[int],
    conn: Connection,
    port: int = 0,
    handshake_s: float = 0.0,
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    lifetime = MAX_SERVER_LIFETIME_S
    with ImageServer(images, plan, latency_s, lifetime, port, handshake_s) as server:
        conn.send(server.port)
        conn.poll(MAX_SERVER_LIFETIME_S)  # any message (or the parent dying) means stop


class ServerProcess:
    """The server in its own process: in-process, its threads would compete with the clients
    for the GIL, which a real CDN does not. A fresh process per client resets the fault plan."""

    def __init__(
        self,
        images: list[bytes],
        plan: list[str],
        latency_s: float,
        cpus: set[int],
        port: int = 0,  # 0: any free one; a fixed one gives a second server the same URLs
        handshake_s: float = 0.0,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(images, plan, latency_s, cpus, child, port, handshake_s),
            daemon=True,
        )
        self._n = len(plan)
        self.port = 0

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}/img/{i}.jpg" for i in range(self._n)]

    def __enter__(self) -> ServerProcess:
        self._process.start()
        if not self._conn.poll(60):
            self._process.kill()
            raise RuntimeError("bench image server did not start")
        self.port = self._conn.recv()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._conn.send("stop")
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()  # our own child, by handle
            self._process.join(timeout=5)
