"""A loopback server that sends its answer a byte at a time, for the tests of total time bounds
(`tests/unit/transport/test_reliability_timeouts.py`, the extraction fast path's), and the raw HTTP helpers
that it and other socket-level test servers share (`read_request`, `http_head`)."""

from __future__ import annotations

import re
import socket
import threading
from typing import Any


class TricklingServer:
    """Answers every request with `head` at once, then `body` one byte every `pause` seconds."""

    def __init__(self, head: bytes, body: bytes = b"", *, pause: float = 0.3) -> None:
        self.head, self.body, self.pause = head, body, pause
        self.requests = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/openai"

    def __enter__(self) -> TricklingServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                if read_request(conn) is None:
                    return
                self.requests += 1
                conn.sendall(self.head)
                for i in range(len(self.body)):
                    if self._stop.wait(self.pause):
                        return
                    conn.sendall(self.body[i : i + 1])
            except OSError:  # the client gave up: what these tests want
                return


def read_request(conn: socket.socket) -> bytes | None:
    """Read one HTTP request (head and a Content-Length body) from `conn`; None if it closes first."""
    data = b""
    while b"\r\n\r\n" not in data:
        received = conn.recv(65536)
        if not received:
            return None
        data += received
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        body += conn.recv(65536)
    return body


def http_head(status: str, content_type: str, length: int) -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\n\r\n".encode()
