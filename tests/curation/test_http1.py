"""The HTTP/1.1 exchange on a socket (curation.download.http1), against canned server bytes."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from curation.download.http1 import (
    MAX_HEAD_BYTES,
    ResponseError,
    encode_request,
    send_get,
)

REQUEST = encode_request("/a.jpg?x=1", {"Host": "example.com", "Accept": "image/*"})


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    client.settimeout(2.0)
    yield client, server
    client.close()
    server.close()


def serve(server: socket.socket, *parts: bytes, close: bool = False) -> threading.Thread:
    """Answer the request with `parts`, one send each, then close if asked."""

    def run() -> None:
        server.recv(65536)
        for part in parts:
            server.sendall(part)
        if close:
            server.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def read_all(client: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    response = send_get(client, REQUEST)
    chunks = []
    while chunk := response.read1(4096):
        chunks.append(chunk)
    return response.status, response.headers, b"".join(chunks), response.keep_alive


def test_the_request_is_one_get_line_and_the_headers() -> None:
    assert REQUEST == (b"GET /a.jpg?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: image/*\r\n\r\n")


@pytest.mark.parametrize("target", ["/a b", "/a\r\nX: y", "/\x00"])
def test_a_target_that_would_smuggle_a_line_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        encode_request(target, {"Host": "h"})


def test_a_non_ascii_target_is_refused() -> None:
    with pytest.raises(UnicodeError):
        encode_request("/café.jpg", {"Host": "h"})


def test_a_length_delimited_body_keeps_the_connection(pair) -> None:
    client, server = pair
    serve(
        server,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: image/jpeg\r\n\r\n",
        b"he",
        b"llo",
    )
    status, headers, body, keep_alive = read_all(client)
    assert (status, body, keep_alive) == (200, b"hello", True)
    assert headers["content-type"] == "image/jpeg"


def test_a_chunked_body_is_decoded(pair) -> None:
    client, server = pair
    serve(
        server,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"2\r\nde\r\n0\r\n\r\n",
    )
    assert read_all(client)[2:] == (b"abcde", True)


def test_a_body_without_length_runs_to_the_end_and_closes(pair) -> None:
    client, server = pair
    serve(server, b"HTTP/1.0 200 OK\r\n\r\nall of it", close=True)
    assert read_all(client)[2:] == (b"all of it", False)


def test_connection_close_is_not_kept(pair) -> None:
    client, server = pair
    serve(server, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
    assert read_all(client)[2:] == (b"x", False)


def test_a_body_cut_before_its_length_is_an_error(pair) -> None:
    client, server = pair
    serve(server, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)
    with pytest.raises(ResponseError, match="before the body's end"):
        read_all(client)


def test_bytes_past_the_declared_length_are_dropped_and_the_connection_not_reused(pair) -> None:
    client, server = pair
    serve(server, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcJUNK\x00\x00")
    assert read_all(client)[2:] == (b"abc", False)


def test_a_second_response_after_the_first_is_not_read_as_ours(pair) -> None:
    client, server = pair
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Evil: 1\r\n\r\nevil"
    serve(server, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" + second)
    _, headers, body, keep_alive = read_all(client)
    assert (body, keep_alive, "x-evil" in headers) == (b"abc", False, False)


def test_repeated_headers_are_joined(pair) -> None:
    client, server = pair
    serve(server, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nVia: a\r\nVia: b\r\n\r\n")
    assert read_all(client)[1]["via"] == "a, b"


def test_a_head_past_the_cap_is_refused(pair) -> None:
    client, server = pair
    filler = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 100) for i in range(MAX_HEAD_BYTES // 100))
    serve(server, b"HTTP/1.1 200 OK\r\n" + filler)
    with pytest.raises(ResponseError, match="head over"):
        send_get(client, REQUEST)


def test_a_close_before_any_byte_reads_as_a_dropped_idle_socket(pair) -> None:
    client, server = pair
    serve(server, close=True)
    with pytest.raises(http.client.RemoteDisconnected):
        send_get(client, REQUEST)


def test_a_close_inside_the_head_is_an_error(pair) -> None:
    client, server = pair
    serve(server, b"HTTP/1.1 200 OK\r\nContent-", close=True)
    with pytest.raises(ResponseError, match="inside the response head"):
        send_get(client, REQUEST)


def test_garbage_is_a_malformed_response(pair) -> None:
    client, server = pair
    serve(server, b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    with pytest.raises(ResponseError, match="malformed"):
        send_get(client, REQUEST)
