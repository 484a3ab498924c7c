"""The same faults against both transports: the streamed path (`Transport`, the openai SDK over httpx) and the
extraction fast path (`AsyncTransport`, aiohttp), so that a promise one keeps and the other does not fails here.

Every server is a raw-socket one on loopback (`tests/fault_servers.py`); each answers in the format the request
asked for, an event stream for the streamed path and a whole chat completion for the fast path, and each fault
is the same in both formats: an answer past `ANSWER_LIMIT` (announced by content-length, or only found while
reading), an error body that never ends, a compressed answer, headers trickled in with ``timeout=None``, an
unreadable head, a body that breaks off, a redirect, a 401 and a 429 that quote the Authorization header, a
port nobody listens on. Each must end in the same typed error on both paths, having read no more than the
bounds allow, and the error must hold no trace of the key: its ``__context__`` and ``__cause__`` are None or
errors of ours, all the way down.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fault_servers import Answer, FaultServer, Request, chunk, head, ok

from guidance_deepinfra import (
    AuthenticationError,
    ConnectionFailedError,
    DeepInfraError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
)
from guidance_deepinfra.transport.aio import AsyncTransport
from guidance_deepinfra.transport.client import Transport
from guidance_deepinfra.transport.limits import ANSWER_LIMIT, BODY_READ_LIMIT

KEY = "sk-both-paths-0123456789-SECRET"
BODY = {"model": "test/model", "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 5, "stream": True}
MiB = 1024 * 1024
PATHS = ("streamed", "fast")


def run(path: str, base_url: str, *, timeout: float | None = 5.0, stream_deadline: float | None = 900.0) -> str:
    """Send `BODY` on `path` without retries; the answer's text (the tests expect an error instead)."""
    retry = RetryPolicy(max_retries=0, sleep=lambda _: None)
    options: dict[str, Any] = dict(api_key=KEY, base_url=base_url, timeout=timeout, stream_deadline=stream_deadline)
    if path == "streamed":
        transport = Transport(retry=retry, **options)
        with transport.stream_chat(BODY, model="test/model") as chunks:
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    async def fast() -> str:
        async with AsyncTransport(retry=retry, **options) as transport:
            return (await transport.complete(BODY, model="test/model")).text

    return asyncio.run(fast())


def failure(path: str, base_url: str, **options: Any) -> DeepInfraError:
    with pytest.raises(DeepInfraError) as raised:
        run(path, base_url, **options)
    return raised.value


def chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and every exception reachable from it through ``__context__`` and ``__cause__``."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__context__, current.__cause__]
    return iter(seen)


def assert_detached(error: BaseException) -> None:
    """No exception behind `error` but ours, and none of them quotes the key or keeps a library object."""
    for link in chain(error):
        assert isinstance(link, DeepInfraError), (
            f"{type(error).__name__} keeps {type(link).__module__}.{type(link).__name__}"
        )
        assert KEY not in str(link) and KEY not in repr(link) and KEY not in repr(link.args)
        for name, value in vars(link).items():
            module = type(value).__module__.split(".")[0]
            assert module not in ("aiohttp", "httpx", "httpx2", "httpcore", "httpcore2", "openai"), (name, value)
            assert KEY not in repr(value), name


# --------------------------------------------------------------------------- the faults, in either format


def endless(prefix: bytes, piece: bytes, total: int) -> Iterator[bytes]:
    yield prefix
    for _ in range(total // len(piece)):
        yield piece


def oversize_announced(request: Request) -> Answer:
    kind = "text/event-stream" if request.streamed else "application/json"
    return Answer(head("200 OK", kind, ANSWER_LIMIT + 1), endless(b"", b" " * MiB, ANSWER_LIMIT + 1))


def oversize_read(request: Request) -> Answer:
    kind = "text/event-stream" if request.streamed else "application/json"
    if request.streamed:  # a long answer: one MiB of text per event, never finished
        body = endless(b"", chunk("x" * MiB), 4 * ANSWER_LIMIT)
    else:  # a completion whose text never ends
        body = endless(b'{"choices": [{"message": {"content": "', b"x" * MiB, 4 * ANSWER_LIMIT)
    return Answer(head("200 OK", kind, None), body)


def endless_error(request: Request) -> Answer:
    return Answer(head("500 Internal Server Error", "text/plain", None), endless(b"", b"e" * MiB, 4 * ANSWER_LIMIT))


BOMB = gzip.compress(b"\0" * (64 * MiB), compresslevel=9)  # 64 KiB that inflate to 64 MiB


def compressed(request: Request) -> Answer:
    kind = "text/event-stream" if request.streamed else "application/json"
    return Answer(head("200 OK", kind, len(BOMB), "content-encoding: gzip"), [BOMB])


def trickled_head(request: Request) -> Answer:
    return Answer(head("200 OK", "application/json", 0) + b" " * 20, pause=0.2)  # 15 s or more in all


def unreadable_head(request: Request) -> Answer:
    return Answer(b"HTTP/1.1 two hundred\r\n\x00\x01garbage\r\n\r\n")


def broken_body(request: Request) -> Answer:
    kind = "text/event-stream" if request.streamed else "application/json"
    return Answer(head("200 OK", kind, 5000, "connection: close"), [b'data: {"choi' if request.streamed else b'{"choi'])


def redirect(request: Request) -> Answer:
    return Answer(head("302 Found", "text/plain", 0, f"location: http://elsewhere.invalid/?k={KEY}"))


def echoed(status: str) -> Callable[[Request], Answer]:
    def answer(request: Request) -> Answer:
        body = ('{"detail": "bad key, you sent ' + (request.header("authorization") or "") + '"}').encode()
        return Answer(head(status, "application/json", len(body)), [body])

    return answer


@dataclass(frozen=True)
class Fault:
    script: Callable[[Request], Answer]
    error: type[DeepInfraError]
    says: str = ""
    most_sent: int | None = None  # at most this many bytes of the answer left the server
    options: tuple[tuple[str, Any], ...] = ()


FAULTS = {
    "answer past the limit, announced": Fault(oversize_announced, ProtocolError, "ANSWER_LIMIT", 16 * MiB),
    "answer past the limit, read": Fault(oversize_read, ProtocolError, "ANSWER_LIMIT", ANSWER_LIMIT + 16 * MiB),
    "error body that never ends": Fault(endless_error, ServerError, "", 16 * MiB),
    "compressed answer": Fault(compressed, ProtocolError, "compressed"),
    "headers trickled, timeout=None": Fault(
        trickled_head, RequestTimeoutError, "", options=(("timeout", None), ("stream_deadline", 1.0))
    ),
    "unreadable head": Fault(unreadable_head, DeepInfraError),
    "body that breaks off": Fault(broken_body, ProtocolError),
    "redirect": Fault(redirect, ProtocolError, "redirect"),
    "401 quoting the key": Fault(echoed("401 Unauthorized"), AuthenticationError, "bad key"),
    "429 quoting the key": Fault(echoed("429 Too Many Requests"), RateLimitError, "bad key"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(FAULTS))
def test_each_fault_ends_alike_on_both_paths_within_the_bounds(path: str, name: str) -> None:
    fault = FAULTS[name]
    with FaultServer(fault.script) as server:
        error = failure(path, server.base_url, **dict(fault.options))
    assert isinstance(error, fault.error), f"{path}: {type(error).__name__}: {error}"
    assert fault.says in str(error)
    if fault.most_sent is not None:
        assert server.requests and server.requests[0].sent <= fault.most_sent, server.requests[0].sent
    assert_detached(error)


@pytest.mark.parametrize("path", PATHS)
def test_nothing_is_inflated_on_either_path(path: str) -> None:
    """A 64 KiB gzip answer that inflates to 64 MiB: asked for uncompressed, refused, memory stays flat."""
    with FaultServer(compressed) as server:
        tracemalloc.start()
        try:
            error = failure(path, server.base_url)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(error, ProtocolError) and "compressed" in str(error)
    assert server.requests[0].header("accept-encoding") == "identity"
    assert peak < 16 * MiB, peak


@pytest.mark.parametrize("path", PATHS)
def test_an_error_body_is_read_only_up_to_the_body_limit(path: str) -> None:
    """The message of a 500 quotes at most `BODY_READ_LIMIT` bytes of a body that never ends."""
    with FaultServer(endless_error) as server:
        error = failure(path, server.base_url)
    assert isinstance(error, ServerError)
    assert "e" * 64 in str(error) and len(str(error)) < BODY_READ_LIMIT + 500


@pytest.mark.parametrize("path", PATHS)
def test_a_port_nobody_listens_on_is_a_connection_failure(path: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = failure(path, f"http://127.0.0.1:{port}/v1/openai")
    assert isinstance(error, ConnectionFailedError)
    assert_detached(error)


@pytest.mark.parametrize("path", PATHS)
def test_an_answer_within_the_bounds_still_arrives(path: str) -> None:
    with FaultServer(lambda request: ok(request, "x" * MiB)) as server:
        assert run(path, server.base_url) == "x" * MiB


# --------------------------------------------------------------------------- every other error, detached


def not_json(request: Request) -> Answer:
    body = b"data: not json\n\n" if request.streamed else b"not json"
    return Answer(head("200 OK", "text/event-stream" if request.streamed else "application/json", len(body)), [body])


def malformed(request: Request) -> Answer:
    body = b'data: {"choices": "nope"}\n\n' if request.streamed else b'{"choices": "nope"}'
    return Answer(head("200 OK", "text/event-stream" if request.streamed else "application/json", len(body)), [body])


def error_in_200(request: Request) -> Answer:
    inner = (
        '{"error": {"message": "overloaded, you sent ' + (request.header("authorization") or "") + '", "code": 503}}'
    )
    body = f"data: {inner}\n\n".encode() if request.streamed else inner.encode()
    return Answer(head("200 OK", "text/event-stream" if request.streamed else "application/json", len(body)), [body])


def html_200(request: Request) -> Answer:
    body = f"<html><title>Gateway {request.header('authorization')}</title></html>".encode()
    return Answer(head("200 OK", "text/html", len(body)), [body])


def server_error(request: Request) -> Answer:
    body = b'{"detail": "down"}'
    return Answer(head("503 Service Unavailable", "application/json", len(body)), [body])


OTHER_ERRORS = {
    "not JSON": (not_json, ProtocolError),
    "malformed completion": (malformed, ProtocolError),
    "error inside a 200": (error_in_200, ServerError),
    "HTML page in a 200": (html_200, ProtocolError),
    "503": (server_error, ServerError),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(OTHER_ERRORS))
def test_every_other_error_is_typed_and_keeps_nothing_behind_it(path: str, name: str) -> None:
    script, expected = OTHER_ERRORS[name]
    with FaultServer(script) as server:
        error = failure(path, server.base_url)
    assert isinstance(error, expected), f"{path}: {type(error).__name__}: {error}"
    assert_detached(error)


@pytest.mark.parametrize("path", PATHS)
def test_a_timeout_and_an_unencodable_prompt_keep_nothing_behind_them(path: str) -> None:
    with FaultServer(trickled_head) as server:
        timed_out = failure(path, server.base_url, timeout=0.5)
    assert isinstance(timed_out, RequestTimeoutError)
    assert_detached(timed_out)
    global BODY
    saved, BODY = BODY, {**BODY, "messages": [{"role": "user", "content": "bad \udc80 text"}]}
    try:
        with FaultServer(ok) as server:
            unencodable = failure(path, server.base_url)
    finally:
        BODY = saved
    assert type(unencodable).__name__ == "InvalidProgramError" and not server.requests
    assert_detached(unencodable)


# --------------------------------------------------------------------------- proxies: one decision for both


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.mark.parametrize("path", PATHS)
def test_a_proxy_in_the_environment_is_used_by_both_paths(path: str, proxy_env: pytest.MonkeyPatch) -> None:
    with FaultServer(ok) as proxy:  # answers the proxied request itself
        proxy_env.setenv("HTTP_PROXY", proxy.origin)
        assert run(path, "http://api.example.invalid/v1/openai") == "OK"
    assert len(proxy.requests) == 1
    assert "http://api.example.invalid/v1/openai/chat/completions" in proxy.requests[0].head.splitlines()[0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("no_proxy", ["*.example.invalid", "other.invalid,*", "example.invalid", ".example.invalid"])
def test_no_proxy_is_read_alike_on_both_paths(path: str, no_proxy: str, proxy_env: pytest.MonkeyPatch) -> None:
    """Forms the standard library reads differently from the SDK's HTTP library: the proxy never sees the
    request (nor its Authorization header); with no such host the direct connection fails."""
    with FaultServer(ok) as proxy:
        proxy_env.setenv("HTTP_PROXY", proxy.origin)
        proxy_env.setenv("NO_PROXY", no_proxy)
        error = failure(path, "http://api.example.invalid/v1/openai")
    assert isinstance(error, ConnectionFailedError), f"{type(error).__name__}: {error}"
    assert proxy.requests == []


@pytest.mark.parametrize("path", PATHS)
def test_an_address_range_in_no_proxy_is_honoured_by_both_paths(path: str, proxy_env: pytest.MonkeyPatch) -> None:
    try:
        direct = FaultServer(ok, host="127.0.0.2")
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    with direct, FaultServer(ok) as proxy:
        proxy_env.setenv("HTTP_PROXY", proxy.origin)
        proxy_env.setenv("NO_PROXY", "127.0.0.0/8")
        assert run(path, direct.base_url) == "OK"
    assert proxy.requests == [] and len(direct.requests) == 1


# --------------------------------------------------------------------------- the largest real answer fits


def largest_answer() -> tuple[str, bytes, bytes]:
    """DeepInfra's longest answer (16,384 tokens) with 20 log-probability alternatives per token, as a whole
    completion and as an event stream; its text."""
    entries = []
    for i in range(16384):
        token = f" w{i % 10000:04d}"
        alternatives = [
            {
                "token": f" a{(i + k) % 10000:04d}",
                "logprob": -1.2345678901234567 * (k + 1),
                "bytes": [32, 97, 48, 48, 48, 48],
            }
            for k in range(20)
        ]
        entries.append(
            {"token": token, "logprob": -0.123456789012345, "bytes": list(token.encode()), "top_logprobs": alternatives}
        )
    text = "".join(e["token"] for e in entries)
    usage = {"prompt_tokens": 10, "completion_tokens": 16384, "total_tokens": 16394, "estimated_cost": 0.0123}
    base = {
        "id": "chatcmpl-0123456789abcdef",
        "created": 1764000000,
        "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    }
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
    whole = {
        **base,
        "object": "chat.completion",
        "choices": [{**choice, "logprobs": {"content": entries}}],
        "usage": usage,
    }
    events = []
    for n, entry in enumerate(entries):
        delta = {"index": 0, "delta": {"content": entry["token"]}, "logprobs": {"content": [entry]}}
        delta["finish_reason"] = "length" if n == len(entries) - 1 else None
        event = {**base, "object": "chat.completion.chunk", "choices": [delta]}
        if n == len(entries) - 1:
            event["usage"] = usage
        events.append(b"data: " + json.dumps(event).encode() + b"\n\n")
    return text, json.dumps(whole).encode(), b"".join(events) + b"data: [DONE]\n\n"


@pytest.mark.slow  # 16,384 chunks through the SDK
@pytest.mark.parametrize("path", PATHS)
def test_the_largest_answer_deepinfra_sends_passes_on_both_paths(path: str) -> None:
    text, whole, streamed = largest_answer()
    assert 24 * MiB < len(whole) < len(streamed) < ANSWER_LIMIT / 1.5, (len(whole), len(streamed))

    def answer(request: Request) -> Answer:
        body, kind = (streamed, "text/event-stream") if request.streamed else (whole, "application/json")
        return Answer(head("200 OK", kind, len(body)), [body])

    with FaultServer(answer) as server:
        assert run(path, server.base_url, timeout=60.0) == text
