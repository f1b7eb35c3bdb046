"""One HTTP/1.1 GET on an open socket: the request written in one send, the response parsed by
httptools (llhttp, Node's parser, in C).

http.client parsed each response's headers through the email package, about half of the
client CPU per image. Here the parser runs in C and calls back only for the few headers and
body chunks; the socket, its timeouts and the watchdog stay with the caller (`transport`).
"""

from __future__ import annotations

import http.client
import re
import socket
from dataclasses import dataclass, field

import httptools

# Response heads past this are hostile (http.client refused > 100 header lines).
MAX_HEAD_BYTES = 64 * 1024
_RECV_BYTES = 64 * 1024
# What http.client refused in a request target or header value: control characters, spaces.
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class ResponseError(Exception):
    """The server's bytes are not an HTTP/1.1 response we can read (malformed, too long)."""


def encode_request(target: str, headers: dict[str, str]) -> bytes:
    """The GET request's bytes; ValueError/UnicodeError for a target or header that would
    smuggle a second line or is not ASCII."""
    if _UNSAFE.search(target):
        raise ValueError(f"unsafe characters in request target {target[:80]!r}")
    lines = [f"GET {target} HTTP/1.1"]
    for name, value in headers.items():
        if _UNSAFE.search(value.replace(" ", "")):
            raise ValueError(f"unsafe characters in header {name}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass
class _Parsed:
    """httptools' callbacks land here."""

    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    head_done: bool = False
    complete: bool = False
    keep_alive: bool = False
    past_the_end: bool = False  # bytes after the response: it is ours, the rest is not
    parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        self.past_the_end = self.complete

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        if self.complete:
            return
        # Asked here: after the callback the parser is reset for the next message.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


class Response:
    """A response whose head has arrived; the body is read with `read1` as it comes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._parsed = _Parsed()
        self._parser = httptools.HttpResponseParser(self._parsed)
        self._parsed.parser = self._parser
        self._head_bytes = 0
        self._eof = False
        self._read_head()
        self.status: int = self._parser.get_status_code()
        self.headers = self._parsed.headers
        # No length and not chunked: the body runs to the connection's end (HTTP/1.0 style).
        self._until_eof = "content-length" not in self.headers and "chunked" not in (
            self.headers.get("transfer-encoding", "").lower()
        )

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry the next request: the body was read to its end
        and neither side asked to close."""
        parsed = self._parsed
        return parsed.complete and parsed.keep_alive and not (self._eof or parsed.past_the_end)

    @property
    def content_length(self) -> int | None:
        """The declared body length, None when absent or not a plain number."""
        declared = self.headers.get("content-length", "").strip()
        return int(declared) if declared.isdigit() else None

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._parsed.complete:
                # Bytes past the declared length (a lying Content-Length): the body ended
                # where the server said; the connection is not reused.
                self._parsed.past_the_end = True
                return
            raise ResponseError(f"malformed response ({exc})"[:120]) from exc

    def _read_head(self) -> None:
        while not self._parsed.head_done:
            data = self._sock.recv(_RECV_BYTES)
            if not data:
                if self._head_bytes == 0:  # what a server closing an idle socket looks like
                    raise http.client.RemoteDisconnected("closed before any response byte")
                raise ResponseError("connection closed inside the response head")
            self._head_bytes += len(data)
            self._feed(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self._parsed.head_done:
                raise ResponseError(f"response head over {MAX_HEAD_BYTES} bytes")

    def read1(self, amount: int = _RECV_BYTES) -> bytes:
        """The next body bytes (at most one socket read), b"" once the body has ended."""
        parsed = self._parsed
        while not parsed.body:
            if parsed.complete or self._eof:
                return b""
            data = self._sock.recv(max(amount, 1))
            if not data:
                self._eof = True
                if not self._until_eof:
                    raise ResponseError("connection closed before the body's end")
                return b""
            self._feed(data)
        return parsed.body.pop(0)


def send_get(sock: socket.socket, request: bytes) -> Response:
    """Write `request` and read the response head."""
    sock.sendall(request)
    return Response(sock)
