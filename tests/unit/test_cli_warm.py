"""The warm path's HTTP exchange with a running server: a plain-socket POST whose answer
is read whole; anything but a complete HTTP/1.x answer means "search here"."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from clipsearch.cli import warm
from clipsearch.server import discovery


def test_a_response_with_a_length_is_cut_at_it():
    raw = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
    assert warm.parse_response(raw) == (200, b'{"a":1}')
    assert warm.parse_response(raw + b"junk") == (200, b'{"a":1}')


def test_a_chunked_response_is_joined():
    raw = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n"
        b'4\r\n{"a"\r\n3;ext=1\r\n:1}\r\n0\r\nTrailer: x\r\n\r\n'
    )
    assert warm.parse_response(raw) == (200, b'{"a":1}')


def test_a_response_without_length_ends_with_the_connection():
    assert warm.parse_response(b"HTTP/1.0 403 Forbidden\r\nServer: x\r\n\r\nno") == (403, b"no")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",  # headers never end
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",  # body cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",  # chunk cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc",  # no last chunk
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # not HTTP
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ],
)
def test_anything_but_a_complete_answer_is_refused(raw):
    with pytest.raises(ValueError):
        warm.parse_response(raw)


def _one_answer_server(answer: bytes) -> tuple[int, list[bytes]]:
    """A socket server on loopback that reads one request and sends ``answer``."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                while len(body) < length:
                    body += conn.recv(4096)
                received.append(head + b"\r\n\r\n" + body)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], received


def test_post_sends_the_body_and_token_and_reads_the_answer():
    port, received = _one_answer_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    assert warm.post("127.0.0.1", port, "/api/local/search", b'{"q":"x"}', token="tok-123") == (
        200,
        b"{}",
    )
    head, _, body = received[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/local/search HTTP/1.1\r\n")
    assert b"Authorization: Bearer tok-123" in head and body == b'{"q":"x"}'


def test_a_token_that_cannot_be_a_header_is_not_sent():
    with pytest.raises(ValueError):
        warm.post("127.0.0.1", 9, "/", b"{}", token="abc\r\nX-Evil: 1")


def _announce(library, port: int, model: str | None = None) -> None:
    discovery.announce(
        library,
        discovery.ServerAnnouncement(
            pid=os.getpid(),
            host="127.0.0.1",
            port=port,
            token="t" * 20,
            model=model,
            precision="auto",
        ),
    )


def test_a_server_answering_nonsense_means_a_search_here(tmp_path):
    port, received = _one_answer_server(b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"hits": [')
    _announce(tmp_path, port)
    assert warm.ask(tmp_path, {"q": "red"}, model=None, precision="auto") is None
    assert len(received) == 1  # it was asked


def test_a_server_of_another_model_or_precision_is_not_asked(tmp_path):
    answer = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"hits":[]}'
    port, received = _one_answer_server(answer)
    _announce(tmp_path, port, model="ViT-B-32:openai")
    assert warm.ask(tmp_path, {"q": "red"}, model="ViT-L-14", precision="auto") is None
    assert warm.ask(tmp_path, {"q": "red"}, model=None, precision="fp32") is None
    assert received == []  # neither was sent
    # its own model (or none named) and precision: asked, and its answer returned
    assert warm.ask(tmp_path, {"q": "red"}, model="ViT-B-32:openai", precision="auto") == {
        "hits": []
    }
    assert len(received) == 1
