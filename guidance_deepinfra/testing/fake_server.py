"""A loopback server that speaks DeepInfra's chat-completions wire format, for tests and benchmarks.

It listens on 127.0.0.1 only, records every request body, and answers from a script of `Reply` objects
(or a responder function when the script is empty). Replies model what DeepInfra documents: SSE chunks of
``chat.completion.chunk`` objects, usage with ``estimated_cost`` on the chunk that carries
``finish_reason`` (no ``stream_options`` needed), ``reasoning_content`` deltas, tool-call deltas, and its
error bodies. Faults (429 with Retry-After, 5xx, 405, malformed SSE, truncation, latency, hangs, HTML
bodies) are replies like any other, so the real openai SDK is exercised over real HTTP.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The fixed price per token behind every fake reply's usage.estimated_cost (not DeepInfra's prices): costs shown
# offline, by the demo, the notebooks and tests, come from it.
COST_PER_TOKEN = 1e-7


@dataclass
class Reply:
    """One scripted answer. Build with the class methods rather than by hand."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    events: list[bytes] = field(default_factory=list)  # SSE payload pieces (already framed)
    body: bytes | None = None  # a non-streaming body (errors, garbage)
    delay: float = 0.0  # before the status line
    chunk_delay: float = 0.0  # between stream pieces
    cut: bool = False  # drop the connection before [DONE]
    hang: float = 0.0  # sleep this long after the headers, sending nothing
    build: Callable[[dict[str, Any]], Reply] | None = None  # built from the request (text replies)

    def for_request(self, body: dict[str, Any]) -> Reply:
        """The reply to send for this request (text replies are built from it, honouring its stop strings)."""
        return self.build(body) if self.build is not None else self

    @staticmethod
    def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated_cost": round((prompt + completion) * COST_PER_TOKEN, 10),
        }
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return usage

    @classmethod
    def text(
        cls,
        text: str,
        *,
        finish_reason: str = "stop",
        pieces: Iterable[str] | None = None,
        chunk_size: int = 8,
        reasoning: str | None = None,
        prompt_tokens: int = 20,
        completion_tokens: int | None = None,
        cached_tokens: int = 0,
        logprobs: bool = False,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        model: str = "fake-model",
        cut: bool = False,
        honour_stop: bool = True,
    ) -> Reply:
        """A streamed assistant answer split into pieces, DeepInfra style.

        Like DeepInfra, the server applies the request's ``stop`` strings: the text ends before the first
        one and ``finish_reason`` becomes ``stop``. With ``honour_stop=False`` the whole text is sent whatever
        the request's ``stop`` says, as a model (or server) that overruns its stop strings would: only the
        client's own stop scanning can then end the text where the program asks.
        """
        options: dict[str, Any] = dict(
            finish_reason=finish_reason,
            pieces=pieces,
            chunk_size=chunk_size,
            reasoning=reasoning,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            logprobs=logprobs,
            delay=delay,
            chunk_delay=chunk_delay,
            model=model,
            cut=cut,
        )

        def build(body: dict[str, Any]) -> Reply:
            stops = (body.get("stop") or []) if honour_stop else []
            if isinstance(stops, str):
                stops = [stops]
            hits = [text.find(s) for s in stops if s and s in text]
            if hits:
                cut_at = min(hits)
                return cls._text_now(text[:cut_at], **{**options, "pieces": None, "finish_reason": "stop"})
            return cls._text_now(text, **options)

        return cls(build=build, headers={"content-type": "text/event-stream"})

    @classmethod
    def _text_now(
        cls,
        text: str,
        *,
        finish_reason: str,
        pieces: Iterable[str] | None,
        chunk_size: int,
        reasoning: str | None,
        prompt_tokens: int,
        completion_tokens: int | None,
        cached_tokens: int,
        logprobs: bool,
        delay: float,
        chunk_delay: float,
        model: str,
        cut: bool,
    ) -> Reply:
        parts = (
            list(pieces) if pieces is not None else [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]
        )
        created = 1764000000
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model}
        events: list[dict[str, Any]] = []
        events.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
            }
        )
        if reasoning:
            for i in range(0, len(reasoning), chunk_size):
                events.append(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"reasoning_content": reasoning[i : i + chunk_size]},
                                "finish_reason": None,
                            }
                        ],
                    }
                )
        for part in parts:
            choice: dict[str, Any] = {"index": 0, "delta": {"content": part}, "finish_reason": None}
            if logprobs:
                choice["logprobs"] = {
                    "content": [{"token": part, "logprob": -0.1, "bytes": list(part.encode()), "top_logprobs": []}]
                }
            events.append({**base, "choices": [choice]})
        completion = completion_tokens if completion_tokens is not None else max(1, len(text) // 4)
        events.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
                "usage": cls._usage(prompt_tokens, completion, cached_tokens),
            }
        )
        framed = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
        if not cut:
            framed.append(b"data: [DONE]\n\n")
        return cls(
            events=framed,
            delay=delay,
            chunk_delay=chunk_delay,
            cut=cut,
            headers={"content-type": "text/event-stream"},
        )

    @classmethod
    def tool_call(
        cls, name: str, arguments: dict[str, Any] | str, *, call_id: str = "call_0", prompt_tokens: int = 30
    ) -> Reply:
        """A streamed tool call with its arguments split over two deltas (a string is sent as it is)."""
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1764000000,
            "model": "fake-model",
        }
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        half = len(args) // 2
        events = [
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": call_id,
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ],
                        },
                        "finish_reason": None,
                    }
                ],
            },
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]},
                        "finish_reason": None,
                    }
                ],
            },
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]},
                        "finish_reason": None,
                    }
                ],
            },
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                "usage": cls._usage(prompt_tokens, 12),
            },
        ]
        framed = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
        return cls(events=framed, headers={"content-type": "text/event-stream"})

    @classmethod
    def error(cls, status: int, body: Any, *, headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
        """An error answer; `body` is JSON-encoded unless it is already bytes or str."""
        if isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = json.dumps(body).encode()
        hdrs = {"content-type": "application/json"}
        hdrs.update(headers or {})
        return cls(status=status, body=raw, headers=hdrs, delay=delay)

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, message: str = "Rate limited") -> Reply:
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        return cls.error(429, {"error": {"message": message}}, headers=headers)

    @classmethod
    def unsupported(cls, what: str, model: str, param: str = "response_format") -> Reply:
        """DeepInfra's 405 for a format or tools a model lacks."""
        return cls.error(
            405,
            {
                "error": {
                    "message": f"{what} is not supported for model: {model}",
                    "type": "invalid_request_error",
                    "param": param,
                    "code": None,
                }
            },
        )

    @classmethod
    def raw(cls, status: int, body: bytes, content_type: str) -> Reply:
        return cls(status=status, body=body, headers={"content-type": content_type})

    @classmethod
    def sse(cls, lines: list[bytes], *, cut: bool = False) -> Reply:
        """Hand-written SSE lines (for malformed streams)."""
        return cls(events=list(lines), headers={"content-type": "text/event-stream"}, cut=cut)

    @classmethod
    def hanging(cls, seconds: float, *, before_headers: bool = False) -> Reply:
        """Send nothing for `seconds`: after the stream's headers, or before the status line."""
        if before_headers:
            return cls(status=200, body=b"", headers={"content-type": "text/event-stream"}, delay=seconds)
        return cls(headers={"content-type": "text/event-stream"}, hang=seconds)


Responder = Callable[[dict[str, Any]], Reply]


class FakeDeepInfra:
    """The loopback server. Use as a context manager; `base_url` goes to ``DeepInfra(base_url=...)``."""

    def __init__(self, responder: Responder | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake DeepInfra server listens on loopback only")
        self.responder = responder or (lambda body: Reply.text("OK"))
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        #: TCP connections accepted (a client that reuses its connection makes fewer than its requests).
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def setup(self) -> None:
                super().setup()
                # Small SSE writes must leave at once, as a real server's do; without this, Nagle's algorithm
                # meets the client's delayed ACKs and every answer waits tens of milliseconds.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def handle(self) -> None:
                with outer._lock:
                    outer.connections += 1
                # A client that gives up (timeout, refused stream) resets its connection; that is expected.
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                with outer._lock:
                    outer.requests.append(body)
                    outer.request_headers.append({k.lower(): v for k, v in self.headers.items()})
                    reply = outer.script.popleft() if outer.script else None
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                try:
                    if reply is None:
                        reply = outer.responder(body)
                    reply = reply.for_request(body)
                    outer._send(self, reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with outer._lock:
                        outer.active -= 1

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL to pass as ``DeepInfra(base_url=...)``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1/openai"

    def start(self) -> FakeDeepInfra:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeDeepInfra:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def push(self, *replies: Reply) -> FakeDeepInfra:
        """Queue replies, answered in order before the responder is used."""
        with self._lock:
            self.script.extend(replies)
        return self

    @property
    def last(self) -> dict[str, Any]:
        """The JSON body of the most recent request."""
        return self.requests[-1]

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        handler.send_response(reply.status)
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        if reply.body is not None:
            handler.send_header("content-length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
            handler.wfile.flush()
            return
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header("cache-control", "no-cache")
        handler.end_headers()
        handler.wfile.flush()
        if reply.hang:
            time.sleep(reply.hang)
            handler.close_connection = True
            return
        for piece in reply.events:
            if reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.flush()
        if reply.cut:
            handler.close_connection = True
            return
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
