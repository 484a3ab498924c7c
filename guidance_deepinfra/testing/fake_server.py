"""A loopback server that speaks DeepInfra's chat-completions wire format, for tests and benchmarks.

It listens on 127.0.0.1 only, records every request body, and answers from a script of `Reply` objects
(or a responder function when the script is empty). Replies model what DeepInfra documents: SSE chunks of
``chat.completion.chunk`` objects, usage with ``estimated_cost`` on the chunk that carries
``finish_reason`` (no ``stream_options`` needed), reasoning in ``reasoning_content`` deltas or inline in the
content (``<think>...</think>``, or only the closing tag) with ``completion_tokens_details.reasoning_tokens``
in usage, tool-call deltas, and its
error bodies; a request without ``"stream": true`` gets one ``chat.completion`` JSON body instead. Faults
(429 with Retry-After, 5xx, 405, malformed SSE, truncation, latency, hangs, HTML bodies) are replies like
any other, so the real clients are exercised over real HTTP.

The server runs on asyncio in a thread of its own, with a listen backlog of 2048 and a few tens of
microseconds of work per request, so that hundreds of requests in flight (a benchmark of the client at
DeepInfra's 200 concurrent requests) measure the client, not the server. Responders run on the server's
event loop: they must not block (latency is a `Reply`'s ``delay``, not a sleep in the responder).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

# The fixed price per token behind every fake reply's usage.estimated_cost (not DeepInfra's prices): costs shown
# offline, by the demo, the notebooks and tests, come from it.
COST_PER_TOKEN = 1e-7

#: A scripted token: its text and log probability, optionally with the alternatives ``{text: logprob}``
#: the server lists as ``top_logprobs`` (most likely first, as written).
#: Where a scripted reply's reasoning goes (see `Reply.text`).
ReasoningShape = Literal["field", "inline", "closing"]

ScriptedToken = tuple[str, float] | tuple[str, float, Mapping[str, float]]


@dataclass(frozen=True)
class _Script:
    """How a scripted text answer is sent: its pieces, reasoning, usage, timing and ending."""

    finish_reason: str = "stop"
    pieces: Sequence[str] | None = None
    chunk_size: int = 8
    reasoning: str | None = None
    reasoning_tokens: int = 0
    prompt_tokens: int = 20
    completion_tokens: int | None = None
    cached_tokens: int = 0
    logprobs: bool = False
    delay: float = 0.0
    chunk_delay: float = 0.0
    model: str = "fake-model"
    cut: bool = False

    def parts(self, text: str) -> list[str]:
        """The answer's pieces, one per chunk."""
        if self.pieces is not None:
            return list(self.pieces)
        return [text[i : i + self.chunk_size] for i in range(0, len(text), self.chunk_size)]

    @property
    def shape(self) -> tuple[str, int, str | None, bool, str]:
        return self.finish_reason, self.chunk_size, self.reasoning, self.logprobs, self.model

    def usage(self, text: str) -> dict[str, Any]:
        completion = self.completion_tokens if self.completion_tokens is not None else max(1, len(text) // 4)
        return Reply._usage(self.prompt_tokens, completion, self.cached_tokens, self.reasoning_tokens)


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
    def _usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated_cost": round((prompt + completion) * COST_PER_TOKEN, 10),
        }
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
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
        reasoning_as: ReasoningShape = "field",
        reasoning_closed: bool = True,
        reasoning_tokens: int | None = None,
        prompt_tokens: int = 20,
        completion_tokens: int | None = None,
        cached_tokens: int = 0,
        logprobs: bool = False,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        model: str = "fake-model",
        cut: bool = False,
        honour_stop: bool = True,
        token_logprobs: Sequence[ScriptedToken] | None = None,
    ) -> Reply:
        """A streamed assistant answer split into pieces, DeepInfra style.

        `reasoning` comes before the answer, as `reasoning_as` says: ``"field"`` in ``reasoning_content``
        deltas (or the message's ``reasoning_content``), ``"inline"`` in ``content`` as
        ``<think>reasoning</think>\n\n`` before the text, ``"closing"`` in ``content`` with only the closing tag
        (``reasoning</think>\n\n``), as chat templates that put ``<think>`` in the prompt answer. With
        ``reasoning_closed=False`` the inline block never closes (and `text` must be empty), as a reply cut by
        its max_tokens while reasoning. Usage counts the reasoning in ``completion_tokens`` and reports it as
        ``completion_tokens_details.reasoning_tokens`` (`reasoning_tokens`, else a quarter of its characters).
        Inline reasoning is ``content`` to the server: the request's stop strings apply to it too.

        Like DeepInfra, the server applies the request's ``stop`` strings: the text ends before the first
        one and ``finish_reason`` becomes ``stop``. With ``honour_stop=False`` the whole text is sent whatever
        the request's ``stop`` says, as a model (or server) that overruns its stop strings would: only the
        client's own stop scanning can then end the text where the program asks.

        `token_logprobs` scripts the answer token by token (the tokens must spell `text`): each token is its
        own chunk, and it carries its ``logprobs`` only when the request asked for them, with at most the
        request's ``top_logprobs`` alternatives, as DeepInfra answers.
        """
        thought = 0
        if reasoning:
            thought = reasoning_tokens if reasoning_tokens is not None else max(1, len(reasoning) // 4)
            if reasoning_as != "field":
                if pieces is not None or token_logprobs is not None:
                    raise ValueError("script inline reasoning in `text` itself to give its pieces or tokens")
                if not reasoning_closed and text:
                    raise ValueError("a reasoning block that never closes has no answer text after it")
                opening = "<think>" if reasoning_as == "inline" else ""
                closing = "</think>\n\n" if reasoning_closed else ""
                if completion_tokens is None:
                    completion_tokens = thought + max(1, len(text) // 4) if text else thought
                text, reasoning = f"{opening}{reasoning}{closing}{text}", None
            elif completion_tokens is None:
                completion_tokens = thought + max(1, len(text) // 4)
        if token_logprobs is not None:
            if "".join(t[0] for t in token_logprobs) != text:
                raise ValueError("the scripted tokens must spell the reply's text")
            return cls._scored(
                text,
                list(token_logprobs),
                finish_reason=finish_reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                honour_stop=honour_stop,
            )
        options = _Script(
            finish_reason=finish_reason,
            pieces=tuple(pieces) if pieces is not None else None,
            chunk_size=chunk_size,
            reasoning=reasoning,
            reasoning_tokens=thought,
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
            now = cls._text_now if body.get("stream") else cls._completion_now  # absent means not streamed
            if hits:
                cut_at = min(hits)
                return now(text[:cut_at], dataclasses.replace(options, pieces=None, finish_reason="stop"))
            return now(text, options)

        return cls(build=build, headers={"content-type": "text/event-stream"})

    @classmethod
    def _scored(
        cls,
        text: str,
        tokens: list[ScriptedToken],
        *,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int | None,
        honour_stop: bool = True,
    ) -> Reply:
        def build(body: dict[str, Any]) -> Reply:
            kept, finish = list(tokens), finish_reason
            stops = (body.get("stop") or []) if honour_stop else []
            hits = [text.find(s) for s in ([stops] if isinstance(stops, str) else stops) if s and s in text]
            if hits:  # keep the tokens that start before the stop, the last one cut at it
                kept, position, finish = [], 0, "stop"
                for token in tokens:
                    if position >= min(hits):
                        break
                    kept.append((token[0][: min(hits) - position], *token[1:]))  # type: ignore[arg-type]
                    position += len(token[0])
            now = cls._text_now if body.get("stream") else cls._completion_now  # absent means not streamed
            script = _Script(
                finish_reason=finish,
                pieces=tuple(t[0] for t in kept),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens if completion_tokens is not None else len(kept),
            )
            reply = now("".join(t[0] for t in kept), script)
            if not body.get("logprobs"):
                return reply
            width = int(body.get("top_logprobs") or 0)
            if not body.get("stream"):  # one chat.completion body: every token's entry in choices[0].logprobs
                answer = json.loads(reply.body or b"{}")
                answer["choices"][0]["logprobs"] = {"content": [_logprob_entry(token, width) for token in kept]}
                return cls(body=json.dumps(answer).encode(), headers=dict(reply.headers))
            events = reply.events[:1] + [
                _with_logprobs(event, token, width) for event, token in zip(reply.events[1:], kept, strict=False)
            ]
            return cls(events=events + reply.events[1 + len(kept) :], headers=dict(reply.headers))

        return cls(build=build, headers={"content-type": "text/event-stream"})

    @classmethod
    def _text_now(cls, text: str, script: _Script) -> Reply:
        parts, (finish_reason, chunk_size, reasoning, logprobs, model) = script.parts(text), script.shape
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
        events.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
                "usage": script.usage(text),
            }
        )
        framed = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
        if not script.cut:
            framed.append(b"data: [DONE]\n\n")
        return cls(
            events=framed,
            delay=script.delay,
            chunk_delay=script.chunk_delay,
            cut=script.cut,
            headers={"content-type": "text/event-stream"},
        )

    @classmethod
    def _completion_now(cls, text: str, script: _Script) -> Reply:
        """The same answer as one ``chat.completion`` body, for a request that does not ask for a stream.

        A streamed answer's chunk delays add up to the time before this one is sent; `cut` drops the
        connection halfway through the body.
        """
        parts, (finish_reason, _, reasoning, logprobs, model) = script.parts(text), script.shape
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning:
            message["reasoning_content"] = reasoning
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish_reason}
        if logprobs:
            choice["logprobs"] = {
                "content": [{"token": p, "logprob": -0.1, "bytes": list(p.encode()), "top_logprobs": []} for p in parts]
            }
        answer = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1764000000,
            "model": model,
            "choices": [choice],
            "usage": script.usage(text),
        }
        return cls(
            body=json.dumps(answer).encode(),
            headers={"content-type": "application/json"},
            delay=script.delay + script.chunk_delay * (len(parts) + 2),
            cut=script.cut,
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


def _with_logprobs(event: bytes, token: ScriptedToken, width: int) -> bytes:
    """Add one token's ``logprobs`` (and up to `width` alternatives) to a framed content chunk."""
    payload = json.loads(event[len(b"data: ") :])
    payload["choices"][0]["logprobs"] = {"content": [_logprob_entry(token, width)]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _logprob_entry(token: ScriptedToken, width: int) -> dict[str, Any]:
    """One token's ``logprobs.content`` entry, with at most `width` of its scripted alternatives."""
    alternatives = list((token[2] if len(token) > 2 else {}).items())[:width]  # type: ignore[misc]
    return {
        "token": token[0],
        "logprob": token[1],
        "bytes": list(token[0].encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives],
    }


Responder = Callable[[dict[str, Any]], Reply]

#: Pending connections the listening socket holds (a burst of hundreds of new connections is not dropped).
LISTEN_BACKLOG = 2048
_MAX_HEAD = 64 * 1024


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
        # Bound now, so that `base_url` is known before `start`.
        self._socket = socket.socket(socket.AF_INET6 if host == "::1" else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        bound_host, bound_port = self._socket.getsockname()[:2]
        self._base_url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/v1/openai"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopped = False

    @property
    def base_url(self) -> str:
        """The URL to pass as ``DeepInfra(base_url=...)``."""
        return self._base_url

    def start(self) -> FakeDeepInfra:
        """Serve on a background thread's event loop; returns self once the socket listens."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._connection, sock=self._socket, backlog=LISTEN_BACKLOG)
                )
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                failed.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="fake-deepinfra", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        """Stop serving: connections are dropped, the socket is closed."""
        if self._stopped:
            return
        self._stopped = True
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            done = threading.Event()

            def shut() -> None:
                if self._server is not None:
                    self._server.close()
                for handler in list(self._handlers):
                    handler.cancel()

                async def finish() -> None:
                    if self._handlers:
                        await asyncio.wait(set(self._handlers), timeout=2)
                    loop.stop()
                    done.set()

                loop.create_task(finish())

            loop.call_soon_threadsafe(shut)
            done.wait(5)
            self._thread.join(timeout=5)
        self._socket.close()

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

    # ----------------------------------------------------------------- HTTP/1.1 on asyncio streams

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        with self._lock:
            self.connections += 1
        _no_delay(writer)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that gives up (timeout, refused stream) resets its connection; that is expected
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; False when the connection is to be closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed its idle connection
        if len(head) > _MAX_HEAD:
            return False
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raw = await _read_chunked(reader)
        else:
            raw = await reader.readexactly(int(headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            reply = self.script.popleft() if self.script else None
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if reply is None:
                reply = self.responder(body)
            reply = reply.for_request(body)
            keep = await _send(writer, reply)
        finally:
            with self._lock:
                self.active -= 1
        return keep and headers.get("connection", "").lower() != "close"


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Send each write at once, as API front ends do.

    asyncio sets TCP_NODELAY only on sockets whose protocol number is IPPROTO_TCP, and the listening socket
    here is made with 0, so without this a reply's later writes on a reused keep-alive connection wait for the
    client's delayed ACK (about 40 ms each on Linux): a stall of the test server, not of the client.
    """
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(data)
        data.extend(await reader.readexactly(size))
        await reader.readexactly(2)


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode()


async def _send(writer: asyncio.StreamWriter, reply: Reply) -> bool:
    """Write `reply`; False when the connection must be closed after it (a cut, a hang)."""
    if reply.delay:
        await asyncio.sleep(reply.delay)
    head = [_status_line(reply.status)]
    for key, value in reply.headers.items():
        head.append(f"{key}: {value}\r\n".encode())
    if reply.body is not None:
        head.append(f"content-length: {len(reply.body)}\r\n\r\n".encode())
        if reply.cut:
            writer.write(b"".join(head) + reply.body[: len(reply.body) // 2])
            await writer.drain()
            return False
        writer.write(b"".join(head) + reply.body)
        await writer.drain()
        return True
    head.append(b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n")
    writer.write(b"".join(head))
    await writer.drain()
    if reply.hang:
        await asyncio.sleep(reply.hang)
        return False
    for piece in reply.events:
        if reply.chunk_delay:
            await asyncio.sleep(reply.chunk_delay)
        writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if reply.chunk_delay:
            await writer.drain()
    if reply.cut:
        await writer.drain()
        return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True
