"""A raw-socket loopback server that answers each request with scripted bytes, for the tests that hold both
transports (the streamed SDK path and the extraction fast path) to the same bounds.

Each answer is a function of the request (its head and body): it returns the bytes to send, a head and then
body pieces, and may pause between pieces. The server records every request's head and how many bytes it
managed to send before the client hung up, which shows whether a client stopped reading at its limit.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    """What to send for one request: `head` at once, then each piece of `body`, `pause` seconds apart."""

    head: bytes
    body: Iterable[bytes] = ()
    pause: float = 0.0


@dataclass
class Request:
    head: str
    body: bytes
    sent: int = 0  # bytes of the answer the server could send before the client hung up

    @property
    def streamed(self) -> bool:
        try:
            return bool(json.loads(self.body).get("stream"))
        except ValueError:
            return False

    def header(self, name: str) -> str | None:
        found = re.search(rf"(?im)^{re.escape(name)}:\s*(.*?)\r?$", self.head)
        return found.group(1) if found else None


Script = Callable[[Request], Answer]


@dataclass
class FaultServer:
    """Answers every request on 127.0.0.1 (or `host`) as `script` says, one thread per connection."""

    script: Script
    host: str = "127.0.0.1"
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.1)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1/openai"

    def __enter__(self) -> FaultServer:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            while not self._stop.is_set():
                request = _read_request(conn)
                if request is None:
                    return
                self.requests.append(request)
                answer = self.script(request)
                try:
                    for piece in _pieces(answer):
                        if answer.pause and self._stop.wait(answer.pause):
                            return
                        conn.sendall(piece)
                        request.sent += len(piece)
                except OSError:  # the client hung up: what the size and time tests want
                    return
                if b"connection: close" in answer.head.lower():
                    return


def _pieces(answer: Answer) -> Iterator[bytes]:
    if answer.pause:  # the head trickles too, a byte at a time
        yield from (answer.head[i : i + 1] for i in range(len(answer.head)))
    else:
        yield answer.head
    yield from answer.body


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            received = conn.recv(65536)
        except OSError:
            return None
        if not received:
            return None
        data += received
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        body += conn.recv(65536)
    return Request(head.decode("latin-1"), body)


# --------------------------------------------------------------------------- answers in either path's format


def head(status: str, content_type: str, length: int | None, *extra: str) -> bytes:
    """A response head; `length` None sends no content-length and closes the connection after the body."""
    lines = [f"HTTP/1.1 {status}", f"content-type: {content_type}"]
    lines.append("connection: close" if length is None else f"content-length: {length}")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def completion(text: str) -> bytes:
    """A whole chat completion, as the fast path gets it."""
    message = {"role": "assistant", "content": text}
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}).encode()


def chunk(text: str, finish: str | None = None) -> bytes:
    """One server-sent event of a chat completion stream, as the SDK path gets it."""
    value = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "test/model",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(value).encode() + b"\n\n"


def stream(text: str) -> bytes:
    return chunk(text) + chunk("", "stop") + b"data: [DONE]\n\n"


def ok(request: Request, text: str = "OK") -> Answer:
    """A good answer in the format the request asked for (streamed or not)."""
    if request.streamed:
        body = stream(text)
        return Answer(head("200 OK", "text/event-stream", len(body)), [body])
    body = completion(text)
    return Answer(head("200 OK", "application/json", len(body)), [body])
