"""The extraction fast path's HTTP: non-streamed chat completions over aiohttp, hundreds in flight.

The openai SDK costs 3-5 ms of CPU per request (pydantic objects per SSE chunk, httpx's pool), so no client
built on it holds DeepInfra's 200 concurrent requests from one process. Batch extraction does not need a
stream (the answer is validated whole), so it sends the same request body with ``"stream": false`` through
one aiohttp session on asyncio and reads one JSON answer. Everything else is the package's shared code:
errors are typed by `wire.error_from_status`, Retry-After is read by `parse_retry_after`, the retry
decision and backoff are `retry_wait` with the model's `RetryPolicy`, redirects are refused as in the SDK
transport. The key is sent only in the Authorization header and appears in no error or log.

The bounds are the SDK transport's, from `limits`: connecting, sending, waiting for the answer and reading
it share one deadline (`limits.attempt_seconds`: ``timeout``, or the stream deadline when it is None), so a
server that trickles its headers or its body a byte at a time cannot hold a request past it; an answer is
read up to `ANSWER_LIMIT` bytes (its content-length checked first), an error body up to `BODY_READ_LIMIT`;
the request asks for an uncompressed answer and nothing is inflated. The proxy is `proxy.proxy_for`'s, the
SDK transport's decision. Every error leaves with neither context nor cause from aiohttp (`client.detached`),
whose exceptions hold the request's headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import aiohttp

from ..errors import APIError, DeepInfraError, ProtocolError, RateLimitError, redact
from .cached import CacheRun, completion_fields, completion_record, holds_secret, model_of
from .client import (
    CallStats,
    Observers,
    RetryPolicy,
    Transport,
    _httpx_module,
    check_api_key,
    check_base_url,
    connection_error,
    detached,
    display_url,
    parse_retry_after,
    redirect_error,
    retry_wait,
    timeout_error,
    unencodable_error,
)
from .exchanges import Exchanges
from .limits import (
    ACCEPT_ENCODING,
    ANSWER_LIMIT,
    BODY_READ_LIMIT,
    announced_length,
    attempt_seconds,
    compressed_error,
    is_compressed,
    too_large_error,
)
from .proxy import proxy_for
from .wire import error_from_status, parse_error_body

logger = logging.getLogger("guidance_deepinfra")

Wait = Callable[[float], Awaitable[None]]


@dataclass
class Completion:
    """One non-streamed answer: its text, why it ended, DeepInfra's usage object (a dict) if sent, and the
    ``choices[0].logprobs.content`` entries when the request asked for logprobs and they came (else None).
    `text` is the message's ``content`` as sent (inline reasoning included); `reasoning` the message's
    ``reasoning_content`` (or ``reasoning``) field. The interpreter separates the two (`split_whole`)."""

    text: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    logprobs: list[Any] | None = None
    reasoning: str | None = None
    #: Answered by the request cache (nothing was sent); its usage is marked as replayed.
    from_cache: bool = False


class Pacer:
    """Runs the work that follows each answer one loop step at a time, each step's request sent before the next
    step starts.

    Answers that arrive together wake their tasks in one pass of the event loop. Each task checks its answer
    and sends its next request, but on Python before 3.12 aiohttp writes a request in a task of its own, in
    the loop's next pass: every request of the pass would wait behind all of the pass's checking, leave
    together, and come back together a round trip later, so the bunch never spreads out. `turn` lets one
    task through per pass (the others wait in line, first come first served): each request then goes out
    right after its own answer's work, and the answers of the next round trip arrive spread out.
    """

    def __init__(self) -> None:
        self._busy = False
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def turn(self) -> None:
        """Return when this task may run its step (at once when no other task has this pass)."""
        loop = asyncio.get_running_loop()
        if self._busy:
            handed: asyncio.Future[None] = loop.create_future()
            self._waiting.append(handed)
            try:
                await handed
            except asyncio.CancelledError:
                if handed.done() and not handed.cancelled():
                    self._pass_on()  # handed the turn, then cancelled before using it
                raise
        self._busy = True
        loop.call_soon(self._pass_on)  # runs after the step, behind the writes the step scheduled

    def _pass_on(self) -> None:
        while self._waiting:
            handed = self._waiting.popleft()
            if not handed.done():
                handed.set_result(None)
                return
        self._busy = False


class AsyncTransport:
    """Sends chat-completion bodies to DeepInfra without streaming; one per running batch.

    Use as ``async with``: the aiohttp session (a pool of keep-alive connections) lives inside the event
    loop that runs the batch and is closed with it.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float | None = 120.0,
        stream_deadline: float | None = 900.0,
        retry: RetryPolicy | None = None,
        stats: CallStats | None = None,
        observers: Observers | None = None,
        connections: int = 256,
        cache: CacheRun | None = None,
        exchanges: Exchanges | None = None,
    ) -> None:
        url = urlparse(check_base_url(base_url))
        host = f"[{url.hostname}]" if url.hostname and ":" in url.hostname else url.hostname
        netloc = f"{host}:{url.port}" if url.port is not None else str(host)
        # User info in base_url is never sent (the key goes in the Authorization header only).
        self._url = f"{url.scheme}://{netloc}{url.path}/chat/completions" + (f"?{url.query}" if url.query else "")
        self.base_url = display_url(check_base_url(base_url))
        self._proxy: Any = None
        self._proxy_auth: Any = None
        self._headers = {
            "Authorization": f"Bearer {check_api_key(api_key)}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
        }
        self.retry = retry or RetryPolicy()
        self.stats = stats or CallStats()
        #: Told about usage, 429s and retry waits: the model transport's own observers when built from it.
        self.observers = observers if observers is not None else Observers()
        #: The whole attempt's deadline: never unbounded unless both bounds were switched off.
        self.deadline = attempt_seconds(timeout, stream_deadline)
        self._timeout = aiohttp.ClientTimeout(total=self.deadline)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.pacer = Pacer()
        #: The request cache (`transport.cached`): one run per batch, so a batch rerun replays from the first.
        self.cache = cache
        #: The last requests and answers: the model transport's own when built from it (`exchanges`).
        self.exchanges = exchanges if exchanges is not None else Exchanges()

    @classmethod
    def beside(cls, transport: Transport, *, connections: int = 256) -> AsyncTransport:
        """An async transport to the same endpoint with the same key, timeout, retry policy and counters as
        the model's streaming `transport`, so a batch's requests count where the model's do and its observers
        see them."""
        return cls(
            api_key=transport._client.api_key,
            base_url=str(transport._client.base_url),
            timeout=transport.timeout,
            stream_deadline=transport.stream_deadline,
            retry=transport.retry,
            stats=transport.stats,
            observers=transport.observers,
            connections=connections,
            cache=_batch_run(transport.cache),
            exchanges=transport.exchanges,
        )

    def __repr__(self) -> str:
        return f"AsyncTransport(base_url={self.base_url!r})"

    async def __aenter__(self) -> AsyncTransport:
        self._proxy, self._proxy_auth = env_proxy(self._url)
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers=self._headers,
            trust_env=False,
            auto_decompress=False,  # nothing is inflated: a compressed answer is refused (`limits`)
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(
        self,
        body: dict[str, Any],
        *,
        model: str | None = None,
        on_rate_limited: Callable[[], None] | None = None,
        wait: Wait | None = None,
    ) -> Completion:
        """Send `body` (as given, with ``stream`` false) and return the answer, retrying per the policy.

        `on_rate_limited` is called on every 429, before the backoff; `wait` replaces the backoff sleep (the
        batch gives its request slot back while waiting). Every error of ours leaves detached from the
        exception it was raised while handling (see `client.detached`).
        """
        exchange = self.exchanges.begin(body)
        try:
            answer = await self._complete(body, model=model, on_rate_limited=on_rate_limited, wait=wait)
        except DeepInfraError as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            raise detached(exc)  # noqa: B904 - the same error, minus aiohttp's exception behind it
        exchange.answer.append(answer.text)
        if answer.reasoning:
            exchange.reasoning.append(answer.reasoning)
        exchange.finish_reason, exchange.from_cache = answer.finish_reason, answer.from_cache
        return answer

    async def _complete(
        self,
        body: dict[str, Any],
        *,
        model: str | None,
        on_rate_limited: Callable[[], None] | None,
        wait: Wait | None,
    ) -> Completion:
        try:
            data = json.dumps({**body, "stream": False}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise unencodable_error(exc, model) from None
        if self.cache is not None:
            return await cached_completion(self, {**body, "stream": False}, data, model, on_rate_limited, wait)
        return await self.send(data, model=model, on_rate_limited=on_rate_limited, wait=wait)

    async def send(
        self,
        data: bytes,
        *,
        model: str | None,
        on_rate_limited: Callable[[], None] | None = None,
        wait: Wait | None = None,
    ) -> Completion:
        """`complete` for an encoded body, past the cache: sent, retried per the policy."""
        attempt = 0
        while True:
            self.stats.requests += 1
            error: APIError | None = None
            try:
                answer = await self._post(data, model=model)
            except _Retryable as failed:
                error, retry_after = failed.error, failed.retry_after
                if isinstance(error, RateLimitError):
                    self.stats.rate_limited += 1
                    self.observers.rate_limit(retry_after, model)
                    if on_rate_limited is not None:
                        on_rate_limited()
                delay = retry_wait(self.retry, attempt, error, retry_after)
                if delay is None:
                    if isinstance(error, RateLimitError) and retry_after is not None:
                        error.retry_after = retry_after  # type: ignore[attr-defined]  # the batch pauses for it
                    raise error from None
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
                delay = retry_wait(self.retry, attempt, None, None)
                if delay is None:
                    raise timeout_error(attempt + 1, model) from None
            except (aiohttp.ClientConnectionError, OSError) as exc:
                delay = retry_wait(self.retry, attempt, None, None)
                if delay is None:
                    raise connection_error(self.base_url, attempt + 1, exc, model) from None
            except aiohttp.ClientError as exc:  # an answer that is not HTTP aiohttp can read
                raise ProtocolError(f"unreadable answer: {type(exc).__name__}", model=model) from None
            else:
                if answer.usage is not None and self.observers:
                    self.observers.usage(answer.usage, model)
                return answer
            logger.info(
                "DeepInfra request failed (%s); retry %d/%d in %.2fs",
                error or "timeout/connection",
                attempt + 1,
                self.retry.max_retries,
                delay,
            )
            self.stats.retries += 1
            self.observers.retry_wait(delay, error, model)
            await (wait or self.sleep)(delay)
            attempt += 1

    async def sleep(self, seconds: float) -> None:
        """The policy's sleep: awaited when it is the default, called as given otherwise (tests record it)."""
        if self.retry.sleep is time.sleep:
            await asyncio.sleep(seconds)
        else:
            self.retry.sleep(seconds)

    async def _post(self, data: bytes, *, model: str | None) -> Completion:
        assert self._session is not None, "use AsyncTransport inside `async with`"
        post = self._session.post(
            self._url, data=data, allow_redirects=False, proxy=self._proxy, proxy_auth=self._proxy_auth
        )
        async with post as response:
            status = response.status
            if 300 <= status < 400:
                raise redirect_error(response.headers.get("location"), status, model=model)
            if status >= 400:
                text = await _body_start(response)
                error = error_from_status(status, text, model=model)
                raise _Retryable(error, parse_retry_after(response.headers.get("retry-after")))
            encoding = response.headers.get("content-encoding", "")
            if is_compressed(encoding):
                raise compressed_error(encoding, status, model=model)
            content_type = response.headers.get("content-type", "")
            if "json" not in content_type:
                text = await _body_start(response)
            else:
                try:
                    raw = await _answer(response, status, model=model)
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                    broke = f"the answer broke off: {type(exc).__name__}"
                    raise ProtocolError(broke, status=status, model=model) from None
        await self.pacer.turn()
        if "json" not in content_type:
            text = redact(text)  # masked before it is shortened below
            shown = parse_error_body(text).message[:200] if text.lstrip().startswith("<") else text.strip()[:200]
            raise ProtocolError(
                f"expected a JSON chat completion, got content-type {content_type or '(none)'!r}: {shown!r}",
                status=status,
                model=model,
            )
        return read_completion(raw, model=model)


def _batch_run(cache: CacheRun | None) -> CacheRun | None:
    """A batch's own run of the model's cache, which knows up front which requests the file answers."""
    if cache is None:
        return None
    run = cache.fresh()
    run.preload()
    return run


async def cached_completion(
    transport: AsyncTransport,
    body: dict[str, Any],
    data: bytes,
    model: str | None,
    on_rate_limited: Callable[[], None] | None,
    wait: Wait | None,
) -> Completion:
    """`AsyncTransport.complete` through its cache: the k-th identical request of the batch gets the k-th
    stored answer (told to the observers as a live one is), or is sent and its answer stored."""
    run = transport.cache
    assert run is not None
    key, occurrence = run.claim(transport.base_url, body)
    fields = completion_fields(run.store.lookup(key, occurrence)) if run.may_hold(key) else None
    if fields is not None:
        transport.stats.cache_hits += 1
        answer = Completion(**fields, from_cache=True)
        if answer.usage is not None and transport.observers:
            transport.observers.usage(answer.usage, model)
        return answer
    try:
        answer = await transport.send(data, model=model, on_rate_limited=on_rate_limited, wait=wait)
    except BaseException:
        run.release(key, occurrence)
        raise
    record = completion_record(answer)
    if not holds_secret(record):
        run.store.store_later(key, occurrence, record, model=model_of(body))
    return answer


class _Retryable(Exception):
    """An error status, carried to the retry loop with its Retry-After."""

    def __init__(self, error: APIError, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


async def _answer(response: aiohttp.ClientResponse, status: int, *, model: str | None) -> bytes:
    """The whole body of a 2xx answer, refused past `ANSWER_LIMIT` (announced by content-length, or read)."""
    announced = announced_length(response.headers.get("content-length"))
    if announced is not None and announced > ANSWER_LIMIT:
        raise too_large_error(announced, status, model=model, announced=True)
    pieces: list[bytes] = []
    size = 0
    while piece := await response.content.readany():
        size += len(piece)
        if size > ANSWER_LIMIT:
            raise too_large_error(size, status, model=model)
        pieces.append(piece)
    return b"".join(pieces)


async def _body_start(response: aiohttp.ClientResponse) -> str:
    """The first `BODY_READ_LIMIT` bytes of an error body as text."""
    data = bytearray()
    try:
        while len(data) < BODY_READ_LIMIT:
            piece = await response.content.read(BODY_READ_LIMIT - len(data))
            if not piece:
                break
            data.extend(piece)
    except asyncio.TimeoutError:
        raise  # the attempt's deadline passed while the body trickled in: a timeout, as on the SDK transport
    except (aiohttp.ClientError, OSError):  # the body is only used for the message
        pass
    return bytes(data).decode("utf-8", errors="replace")


def read_completion(raw: bytes, *, model: str | None) -> Completion:
    """Check a chat.completion body's shape (the fields read here) and return its answer."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the answer is not valid JSON: {exc}", model=model) from None
    problem = completion_problem(value)
    if problem is not None:
        if isinstance(value, dict) and value.get("error") and not value.get("choices"):
            error = _error_in_body(value, model=model)
            if error is not None:
                raise error
        raise ProtocolError(f"malformed chat completion: {problem}", model=model)
    choice = value["choices"][0]
    message = choice["message"]
    scores = choice.get("logprobs")
    content = scores.get("content") if isinstance(scores, dict) else None
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return Completion(
        message.get("content") or "",
        choice.get("finish_reason"),
        value.get("usage"),
        content if isinstance(content, list) else None,
        reasoning if isinstance(reasoning, str) else None,
    )


def completion_problem(value: Any) -> str | None:
    """What is wrong with a chat.completion's shape, or None when every field read has the right type."""
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    choices = value.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no `choices`"
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        return "the first choice has no `message` object"
    content = choice["message"].get("content")
    if content is not None and not isinstance(content, str):
        return f"`message.content` is {type(content).__name__}, not a string"
    finish = choice.get("finish_reason")
    if not isinstance(finish, str):
        return "no `finish_reason`: the answer was cut short"
    usage = value.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return f"`usage` is {type(usage).__name__}, not an object"
        for name in ("prompt_tokens", "completion_tokens"):
            if not isinstance(usage.get(name), int):
                return f"`usage.{name}` is missing or not an integer"
    return None


def _error_in_body(value: dict[str, Any], *, model: str | None) -> APIError | None:
    """An ``{"error": {...}}`` answer sent with status 200; a numeric ``code`` is read as a status."""
    body = value.get("error")
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and 400 <= code < 600:
        return error_from_status(code, value, model=model)
    return APIError(f"DeepInfra reported an error: {parse_error_body(value).message}", model=model)


def env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy for `url` and its credentials, as the SDK transport decides it (`proxy.proxy_for`: the HTTP
    library's reading of HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY); a loopback address is never
    proxied. ``~/.netrc`` is not read."""
    proxy = proxy_for(url, _httpx_module())
    if not proxy:
        return None, None
    proxy_url = urlparse(proxy)
    auth = None
    if proxy_url.username is not None:
        auth = aiohttp.BasicAuth(unquote(proxy_url.username), unquote(proxy_url.password or ""))
        proxy = proxy.replace(proxy_url.netloc, proxy_url.netloc.rpartition("@")[2], 1)
    return proxy, auth
