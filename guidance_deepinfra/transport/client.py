"""The one place that talks HTTP to DeepInfra.

Everything else in the package builds plain request dicts and reads parsed chunks; this module sends the dict
exactly as given through the official openai SDK (so what we test is what we send), retries what may be
retried with exponential backoff and jitter, and turns every failure into a typed error from `errors`.
The SDK's own retries are switched off so that retrying happens here and only here.
"""

from __future__ import annotations

import email.utils
import functools
import importlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any
from urllib.parse import urlparse

import openai
from openai import Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from ..cache.store import CacheRun
from ..errors import (
    APIError,
    ConfigurationError,
    ConnectionFailedError,
    DeepInfraError,
    InvalidProgramError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    redact,
    register_secret,
)
from .cached import ChunkStream, StreamRecorder, holds_secret, model_of, sse_bytes, stream_record
from .chunks import QuickChunkStream
from .deadline import Deadline, network_stream_of, sending
from .deadline import install as install_deadlines
from .exchanges import Exchanges
from .limits import (
    ACCEPT_ENCODING,
    ANSWER_LIMIT,
    BODY_READ_LIMIT,
    announced_length,
    attempt_seconds,
    compressed_error,
    deadline_reason,
    is_compressed,
    too_large_error,
)
from .proxy import proxy_for
from .reach import never_connected
from .wire import error_from_status, parse_error_body

logger = logging.getLogger("guidance_deepinfra")

DEFAULT_BASE_URL = "https://api.deepinfra.com/v1/openai"


@dataclass
class RetryPolicy:
    """How 429s, 5xx answers, timeouts and dropped connections are retried.

    The delay before retry ``n`` (0-based) is ``Retry-After`` when the server sends it (DeepInfra does not
    document the header, so it is honoured only when present), otherwise a random value in
    ``[base_delay * 2**n / 2, base_delay * 2**n]`` capped at ``max_delay`` ("equal jitter").
    401/403/404/405/422 are never retried: repeating them cannot help.
    """

    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (0-based), given the server's Retry-After if any."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        ceiling = min(self.base_delay * (2**attempt), self.max_delay)
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


class TransportObserver:
    """Watches the requests of a model's transport: override the methods you need (the defaults do nothing).

    Register one with ``lm.transport.add_observer(observer)`` (or for a block, ``with
    lm.transport.observing(observer):``). It sees every request sent for that model object and every copy of
    it: streamed ones, and those of `extract`'s fast path, which uses the model's transport settings. Each
    method runs on the thread (or in the asyncio task) that sent the request, as the event happens, so it
    should be quick; what it raises reaches the caller of the request. `extract` meters each input's cost
    and narrows its window of requests in flight on a 429 this way.
    """

    def on_usage(self, usage: Any, *, model: str | None) -> None:
        """One answer's usage as DeepInfra sent it: the SDK's usage object while streaming, a dict on the
        fast path (`DeepInfraUsage.add_chunk_usage` reads both; ``estimated_cost`` is among its fields)."""

    def on_rate_limit(self, retry_after: float | None, *, model: str | None) -> None:
        """A 429 answer (every one, also the last before giving up), before any wait; `retry_after` is the
        server's Retry-After in seconds when it sent one."""

    def on_retry_wait(self, seconds: float, error: APIError | None, *, model: str | None) -> None:
        """The transport is about to wait `seconds` before retrying; `error` is the typed error of the failed
        attempt, None for a timeout or a dropped connection."""


class Observers:
    """The observers of one transport, shared with every transport built from it (see `TransportObserver`).

    The list is replaced, never changed in place, so requests in flight on other threads read it without a
    lock while observers come and go.
    """

    def __init__(self) -> None:
        self._observers: tuple[TransportObserver, ...] = ()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._observers)

    def __iter__(self) -> Iterator[TransportObserver]:
        return iter(self._observers)

    def add(self, observer: TransportObserver) -> None:
        if not isinstance(observer, TransportObserver):
            raise ConfigurationError(f"an observer must be a TransportObserver, not {type(observer).__name__}")
        with self._lock:
            self._observers = (*self._observers, observer)

    def remove(self, observer: TransportObserver) -> None:
        """Stop notifying `observer` (nothing happens if it was not registered)."""
        with self._lock:
            self._observers = tuple(o for o in self._observers if o is not observer)

    def usage(self, usage: Any, model: str | None) -> None:
        for observer in self._observers:
            observer.on_usage(usage, model=model)

    def rate_limit(self, retry_after: float | None, model: str | None) -> None:
        for observer in self._observers:
            observer.on_rate_limit(retry_after, model=model)

    def retry_wait(self, seconds: float, error: APIError | None, model: str | None) -> None:
        for observer in self._observers:
            observer.on_retry_wait(seconds, error, model=model)


@dataclass
class CallStats:
    """Counters the transport keeps for every call; read by usage reports and benchmarks."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    #: Requests answered from the request cache (not counted in `requests`: nothing was sent).
    cache_hits: int = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def check_base_url(base_url: str) -> str:
    """Refuse a base_url that cannot work (no scheme or host) before any request is made."""
    parsed = urlparse(base_url) if isinstance(base_url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        shown = display_url(base_url) if parsed is not None and parsed.scheme else base_url
        raise ConfigurationError(
            f"base_url must be an absolute http(s) URL such as {DEFAULT_BASE_URL!r}, got {shown!r}"
        )
    return base_url.rstrip("/")


def check_api_key(api_key: str) -> str:
    """Refuse a key that cannot go into an HTTP header, without ever echoing it.

    Surrounding whitespace (a key read from a file ends with a newline) is dropped. Anything else that is
    not printable ASCII would only fail later, deep in the HTTP stack, as a retried "connection" error or a
    UnicodeEncodeError, so it is refused here; the message names the position, never the key.
    """
    if not isinstance(api_key, str):
        raise ConfigurationError(f"api_key must be a string, not {type(api_key).__name__}")
    key = api_key.strip()
    if not key:
        raise ConfigurationError("api_key is empty")
    for position, char in enumerate(key):
        if not (" " < char <= "~"):
            raise ConfigurationError(
                f"api_key has a character that cannot be sent in an HTTP header at position {position} "
                f"(code point {ord(char)}); DeepInfra keys are printable ASCII without spaces"
            )
    register_secret(key)  # from now on masked in every server text that reaches an error, a log or a file
    _mask_library_logs()
    return key


class _RedactingFilter(logging.Filter):
    """Masks keys and ``Bearer`` values in the HTTP library's and the SDK's log records.

    At DEBUG they log response headers as received (a redirect's Location, a header a proxy echoes), which
    are server text like any other. A logger's filters run only for records it actually emits, so this costs
    nothing while debug logging is off.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the logging system's business, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            # Some SDK versions log the status error with its traceback, whose text quotes server headers (a
            # redirect's Location): the traceback is formatted once, masked, and kept only as text.
            traceback_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(traceback_text)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_LOG_FILTER = _RedactingFilter()
_LIBRARY_LOGGERS = (
    "openai",
    "openai._base_client",
    "openai._response",
    "openai._legacy_response",
    *(
        f"{lib}{child}"
        for lib in ("httpcore", "httpcore2")
        for child in ("", ".connection", ".http11", ".http2", ".proxy", ".socks")
    ),
    "httpx",
    "httpx2",
)


def _mask_library_logs() -> None:
    names = set(_LIBRARY_LOGGERS) | {n for n in logging.Logger.manager.loggerDict if n.startswith("openai.")}
    for name in names:
        library_logger = logging.getLogger(name)
        if _LOG_FILTER not in library_logger.filters:
            library_logger.addFilter(_LOG_FILTER)


def display_url(url: str) -> str:
    """`url` without user info, query or fragment, safe to show in messages and reprs."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.port is not None:
        host = f"{host}:{parsed.port}"
    return f"{parsed.scheme}://{host}{parsed.path}"


@functools.cache
def _httpx_module() -> Any:
    """The HTTP library the installed openai SDK is built on (httpx2 for openai 3, httpx before).

    Asked once per process: the answer cannot change, and asking builds an SDK client (with its TLS context).
    """
    try:
        import httpx2

        if isinstance(openai.DefaultHttpxClient(), httpx2.Client):
            return httpx2
    except ImportError:
        pass
    import httpx

    return httpx


@functools.lru_cache(maxsize=8)
def _verifying_context(library: str, cert_file: str | None, cert_dir: str | None) -> SSLContext:
    """The TLS context every model's HTTP client verifies DeepInfra's certificate with, built once per process
    and certificate settings (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, read by the HTTP library as it builds it).

    Building one reads the whole CA bundle (about 30 ms), which every `DeepInfra(...)` used to pay; a context
    is safe to share between clients and threads, and verification stays on (certificate and host name).
    """
    return importlib.import_module(library).create_ssl_context()  # type: ignore[no-any-return]


def shared_tls_context(httpx: Any) -> SSLContext:
    """`_verifying_context` for the current certificate settings."""
    return _verifying_context(httpx.__name__, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def _httpcore_module(httpx: Any) -> Any:
    """The connection library under `httpx` (httpcore2 under httpx2), whose timeout errors it maps."""
    return importlib.import_module("httpcore2" if httpx.__name__ == "httpx2" else "httpcore")


def reusing_http_client(stream_deadline: float | None = None, *, base_url: str) -> Any:
    """openai's default HTTP client, but one that can keep its connection after a finished stream, and
    that bounds the total time of every phase of a request and the size of what it reads.

    The SDK stops reading a stream at ``data: [DONE]`` and closes the response; with the chunked
    terminator still unread the connection cannot go back to the pool, so every request would open a new
    connection (a TLS handshake each, against DeepInfra). Here a response that has delivered ``[DONE]`` is
    read to its end (a few bytes) on close. A stream closed before ``[DONE]`` (a client-side stop) is not
    drained: its connection is dropped as before, so no time is spent reading text nobody wants.

    Per-read timeouts cannot catch a server that keeps sending bytes without ever finishing. Connecting,
    sending, the response headers and a body that is not an event stream (an error, an HTML page) share one
    deadline, the request's ``timeout`` (the SDK hands it to every request), or `stream_deadline` when the
    timeout is None (`limits.attempt_seconds`); an event stream's body has `stream_deadline` seconds from its
    headers. Both are enforced at the socket (see `transport.deadline`); passing one raises the HTTP
    library's timeout error, which the transport reports as `RequestTimeoutError`.

    The sizes of `transport.limits` hold here too: the request asks for an uncompressed body and nothing is
    inflated (a compressed answer keeps its bytes and is refused by `Transport`); a body that is not an event
    stream (the SDK reads a whole error body itself) ends after `BODY_READ_LIMIT` bytes; an event stream
    whose content-length or bytes pass `ANSWER_LIMIT` raises `AnswerTooLarge`. Requests go through the proxy
    `proxy.proxy_for` gives for `base_url` (the client sends nowhere else: redirects are refused).
    """
    httpx = _httpx_module()
    core = _httpcore_module(httpx)

    class DrainAfterDone(httpx.SyncByteStream):  # type: ignore[misc,name-defined]
        limit = 4096

        def __init__(self, inner: Any, announced: int | None) -> None:
            self._inner = inner
            self._tail = b""
            self._started = time.monotonic()
            self._announced = announced

        def __iter__(self) -> Iterator[bytes]:
            if self._announced is not None and self._announced > ANSWER_LIMIT:
                raise AnswerTooLarge(self._announced, announced=True)
            size = 0
            for chunk in self._inner:
                if stream_deadline is not None and time.monotonic() - self._started > stream_deadline:
                    raise httpx.ReadTimeout(_stream_deadline_reason(stream_deadline))
                size += len(chunk)
                if size > ANSWER_LIMIT:
                    raise AnswerTooLarge(size)
                self._tail = (self._tail + chunk)[-64:]
                yield chunk

        def close(self) -> None:
            try:
                if b"data: [DONE]" in self._tail:
                    drained = 0
                    for chunk in self._inner:
                        drained += len(chunk)
                        if drained > self.limit:
                            break
            except Exception:  # noqa: BLE001 - draining is an optimisation only
                pass
            finally:
                self._inner.close()

    class BodyStart(httpx.SyncByteStream):  # type: ignore[misc,name-defined]
        """A body that is not an event stream, ended after `BODY_READ_LIMIT` bytes (the rest is never read)."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __iter__(self) -> Iterator[bytes]:
            left = BODY_READ_LIMIT
            for chunk in self._inner:
                yield chunk[:left]
                left -= len(chunk)
                if left <= 0:
                    return

        def close(self) -> None:
            self._inner.close()

    class ReusingTransport(httpx.HTTPTransport):  # type: ignore[misc,name-defined]
        def handle_request(self, request: Any) -> Any:
            timeout = (request.extensions.get("timeout") or {}).get("read")
            total = attempt_seconds(timeout, stream_deadline)
            reason = deadline_reason(timeout, stream_deadline) if total is not None else ""
            request.headers["Accept-Encoding"] = ACCEPT_ENCODING
            with sending(Deadline.after(total, reason)):
                response = super().handle_request(request)
            encoding = response.headers.get("content-encoding", "")
            if is_compressed(encoding):  # kept as bytes: the library would inflate it without bound
                del response.headers["content-encoding"]
                response.extensions[REFUSED_ENCODING] = encoding
            if "text/event-stream" in response.headers.get("content-type", ""):
                network = network_stream_of(response)
                if network is not None:
                    network.deadline = Deadline.after(stream_deadline, _stream_deadline_reason(stream_deadline))
                announced = announced_length(response.headers.get("content-length"))
                response.stream = DrainAfterDone(response.stream, announced)
            else:
                response.stream = BodyStart(response.stream)
            return response

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    transport = ReusingTransport(limits=limits, proxy=proxy_for(base_url, httpx), verify=shared_tls_context(httpx))
    if not install_deadlines(transport, core):
        logger.debug("unknown HTTP library layout: timeouts bound each read, not the total of a request")
    # A client given its own transport ignores proxy variables: the one proxy decision is made above.
    return openai.DefaultHttpxClient(transport=transport, limits=limits)


#: The response extension that keeps a refused ``content-encoding`` (the header itself is removed).
REFUSED_ENCODING = "guidance_deepinfra.refused_encoding"


class AnswerTooLarge(Exception):
    """Raised inside an event stream's bytes past `ANSWER_LIMIT`; `Transport` turns it into a `ProtocolError`."""

    def __init__(self, size: int, *, announced: bool = False) -> None:
        super().__init__(f"{size} bytes")
        self.size, self.announced = size, announced


def _stream_deadline_reason(stream_deadline: float | None) -> str:
    return f"the answer did not finish within stream_deadline={stream_deadline} s"


class Transport:
    """Sends chat-completion requests to DeepInfra and yields parsed stream chunks.

    The API key lives only inside the openai client; `repr` and every error leave it out (and any user
    info or query in the base_url too).
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float | None = 120.0,
        stream_deadline: float | None = 900.0,
        retry: RetryPolicy | None = None,
        cache: CacheRun | None = None,
        **client_kwargs: Any,
    ) -> None:
        url = check_base_url(base_url)
        #: The endpoint as shown in messages and reprs (no user info or query, which may hold credentials).
        self.base_url = display_url(url)
        self.retry = retry or RetryPolicy()
        if self.retry.max_retries < 0:
            raise ConfigurationError(f"max_retries must be 0 or more, got {self.retry.max_retries}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConfigurationError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if stream_deadline is not None and not (isinstance(stream_deadline, (int, float)) and stream_deadline > 0):
            raise ConfigurationError(
                f"stream_deadline must be a positive number of seconds or None, got {stream_deadline!r}"
            )
        self.stats = CallStats()
        #: The request cache this transport answers from and records into (`transport.cached`), or None.
        self.cache = cache
        #: Who is told about usage, 429s and retry waits (see `TransportObserver`).
        self.observers = Observers()
        #: The last requests sent and their answers (`DeepInfra.last_requests`), shared with the fast path.
        self.exchanges = Exchanges()
        self._lock = threading.Lock()
        #: The bounds given (the extraction fast path applies the same ones).
        self.timeout = timeout
        self.stream_deadline = stream_deadline
        #: Whether the client is ours, whose sockets enforce the total bounds (see `reusing_http_client`).
        self.bounds_every_phase = "http_client" not in client_kwargs
        if "http_client" not in client_kwargs:
            client_kwargs["http_client"] = reusing_http_client(stream_deadline, base_url=url)
        self._client = openai.OpenAI(
            api_key=check_api_key(api_key),
            base_url=url,
            max_retries=0,
            timeout=timeout,
            **client_kwargs,
        )

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    def _body_start(self, response: Any) -> str:
        return _body_start(response, self.timeout)

    def add_observer(self, observer: TransportObserver) -> None:
        """Tell `observer` about every request of this transport from now on (see `TransportObserver`)."""
        self.observers.add(observer)

    def remove_observer(self, observer: TransportObserver) -> None:
        """Stop telling `observer` (nothing happens if it was not registered)."""
        self.observers.remove(observer)

    @contextmanager
    def observing(self, observer: TransportObserver) -> Iterator[TransportObserver]:
        """`observer` registered while the block runs."""
        self.add_observer(observer)
        try:
            yield observer
        finally:
            self.remove_observer(observer)

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, inc in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + inc)

    @contextmanager
    def stream_chat(self, body: dict[str, Any], *, model: str | None = None) -> Iterator[Iterator[ChatCompletionChunk]]:
        """Open a streaming chat completion for `body` (sent verbatim) and yield its chunks.

        Opening the stream is retried per `RetryPolicy`; once chunks flow, a failure is raised as a typed
        error instead, because text has already been handed to the program. With a `cache`, a request
        answered before is replayed from it and a new answer is recorded (`transport.cached`).
        """
        exchange = self.exchanges.begin(body)
        try:
            if self.cache is None:
                with self._live_chat(body, model=model) as chunks:
                    yield exchange.watch(chunks)
            else:
                with cached_chat(self, body, model=model) as chunks:
                    exchange.from_cache = bool(getattr(chunks, "from_cache", False))
                    yield ChunkStream(exchange.watch(chunks), from_cache=exchange.from_cache)
        except DeepInfraError as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            raise

    @contextmanager
    def _live_chat(self, body: dict[str, Any], *, model: str | None) -> Iterator[Iterator[ChatCompletionChunk]]:
        try:
            stream = self._open(body, model=model)
        except DeepInfraError as exc:
            raise detached(exc)  # noqa: B904 - re-raising the same error, minus the SDK's exception behind it
        chunks = _detached_errors(_checked_chunks(stream, model=model, deadline=self.stream_deadline))
        try:
            yield _observed(chunks, self.observers, model) if self.observers else chunks
        finally:
            stream.close()

    def _open(self, body: dict[str, Any], *, model: str | None) -> Stream[ChatCompletionChunk]:
        attempt = 0
        while True:
            self._count(requests=1)
            try:
                stream = self._client.post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    body=body,
                    stream=True,
                    stream_cls=QuickChunkStream,  # the SDK's Stream, its chunks built faster (`chunks`)
                    # A redirect would resend the conversation to another address: requests go to base_url only.
                    options={"follow_redirects": False},
                )
                _check_encoding(stream, model=model)
                _check_content_type(stream, model=model, body=self._body_start)
                return stream
            except UnicodeEncodeError as exc:
                raise unencodable_error(exc, model) from None
            except openai.APIStatusError as exc:
                if 300 <= exc.status_code < 400:
                    raise _redirect_error(exc.response, model=model) from None
                error = error_from_status(exc.status_code, self._body_start(exc.response), model=model)
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                if isinstance(error, RateLimitError):
                    self._count(rate_limited=1)
                    self.observers.rate_limit(retry_after, model)
                wait = retry_wait(self.retry, attempt, error, retry_after)
                if wait is None:
                    raise error from None
            except _ANY_TIMEOUT:  # the HTTP library's own escapes the SDK when it times out reading an error body
                wait = retry_wait(self.retry, attempt, None, None)
                if wait is None:
                    raise timeout_error(attempt + 1, model) from None
                error = None
            except _TRANSPORT_ERRORS as exc:
                wait = retry_wait(self.retry, attempt, None, None)
                if wait is None:
                    raise connection_error(self.base_url, attempt + 1, exc, model) from None
                error = None
            logger.info(
                "DeepInfra request failed (%s); retry %d/%d in %.2fs",
                error or "timeout/connection",
                attempt + 1,
                self.retry.max_retries,
                wait,
            )
            self._count(retries=1)
            self.observers.retry_wait(wait, error, model)
            self.retry.sleep(wait)
            attempt += 1


def _observed(
    chunks: Iterator[ChatCompletionChunk], observers: Observers, model: str | None
) -> Iterator[ChatCompletionChunk]:
    """Pass chunks on, telling the observers about each usage object before its chunk goes on."""
    for chunk in chunks:
        if chunk.usage is not None:
            observers.usage(chunk.usage, model)
        yield chunk


def detached(error: DeepInfraError) -> DeepInfraError:
    """`error` without the library exception it was raised while handling (either transport).

    Our errors are raised ``from None``, which hides that exception in a printed traceback but still keeps it
    as ``__context__``; the SDK's exception quotes the raw response body, which may echo the key, and
    aiohttp's holds the request with its headers, the Authorization header included. Our error already
    carries what the answer says (redacted), so nothing is lost. A cause that is not one of ours goes too.
    """
    error.__context__ = None
    if error.__cause__ is not None and not isinstance(error.__cause__, DeepInfraError):
        error.__cause__ = None
    return error


def _detached_errors(chunks: Iterator[ChatCompletionChunk]) -> Iterator[ChatCompletionChunk]:
    try:
        yield from chunks
    except DeepInfraError as exc:
        raise detached(exc)  # noqa: B904 - the same error, see `detached`


def unencodable_error(exc: UnicodeEncodeError, model: str | None) -> InvalidProgramError:
    """Python strings may hold lone surrogates (from bad decoding); JSON over HTTP cannot."""
    bad = exc.object[exc.start : exc.end] if isinstance(exc.object, str) else ""
    return InvalidProgramError(
        f"the request holds text that is not valid Unicode ({bad!r} at character {exc.start} of "
        f"the encoded body: {exc.reason}); clean the prompt or schema, e.g. with "
        "text.encode('utf-8', 'replace').decode()",
        model=model,
    )


def _redirect_error(response: Any, *, model: str | None) -> ProtocolError:
    return redirect_error(response.headers.get("location"), response.status_code, model=model)


def redirect_error(location: str | None, status: int, *, model: str | None) -> ProtocolError:
    """The error for a 3xx answer (any transport): redirects are never followed."""
    location = location or "(no location)"
    shown = display_url(location) if "://" in location else location[:200]
    return ProtocolError(
        f"the server answered with a redirect to {shown!r}; redirects are not followed, so that prompts and "
        "the key go only to base_url: set base_url to the address that answers",
        status=status,
        model=model,
    )


def retry_wait(policy: RetryPolicy, attempt: int, error: APIError | None, retry_after: float | None) -> float | None:
    """Seconds to wait before retrying failed attempt `attempt` (0-based), or None when it must not be retried.

    `error` is the typed error of an error status, None for a timeout or a dropped connection. Only 429s,
    5xx answers, timeouts and connection failures are retried, at most ``policy.max_retries`` times. Every
    transport of the package (this one and the extraction fast path) decides with this function.
    """
    if error is not None and not isinstance(error, (RateLimitError, ServerError)):
        return None
    if attempt >= policy.max_retries:
        return None
    return policy.delay(attempt, retry_after)


def timeout_error(attempts: int, model: str | None) -> RequestTimeoutError:
    """The error for a request that timed out on every attempt."""
    return RequestTimeoutError("DeepInfra did not answer in time", attempts=attempts, model=model)


def connection_error(base_url: str, attempts: int, exc: BaseException, model: str | None) -> ConnectionFailedError:
    """The error for a server that could not be reached on any attempt, from the last attempt's exception.

    When no connection could be made at all (`reach.never_connected`) it says why and what to check;
    otherwise (a connection that broke) it names the exception's type.
    """
    url = display_url(base_url)
    reason = never_connected(exc)
    if reason is None:
        cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) and exc.__cause__ else exc
        detail = f"could not reach {url}: {type(cause).__name__}"
    else:
        through = _proxy_of(base_url)
        if through is not None:  # the connection that failed was the proxy's: say so, and which one
            reason = f"{reason}, through the proxy {display_url(through)} (from the proxy variables)"
        detail = f"could not connect to {url}: {reason}"
    return ConnectionFailedError(detail, attempts=attempts, base_url=url, reason=reason, model=model)


def _proxy_of(base_url: str) -> str | None:
    """The proxy the environment routes `base_url` through (`proxy.proxy_for`, the transports' one decision)."""
    try:
        return proxy_for(base_url, _httpx_module())
    except Exception:  # noqa: BLE001 - only the wording of an error depends on it
        return None


def _body_start(response: Any, timeout: float | None = None) -> str:
    """The first `BODY_READ_LIMIT` bytes of a body as text (errors and wrong content types only).

    Reading stops after `timeout` seconds too, checked as each piece arrives: with an HTTP client of the
    user's own, whose sockets carry no total deadline, a trickled error page is bounded here.
    """
    data = bytearray()
    started = time.monotonic()
    try:
        for piece in response.iter_bytes():
            data.extend(piece)
            if len(data) >= BODY_READ_LIMIT or (timeout is not None and time.monotonic() - started > timeout):
                break
    except Exception:  # noqa: BLE001 - the body is only used for the message
        pass
    return bytes(data[:BODY_READ_LIMIT]).decode("utf-8", errors="replace")


def _check_encoding(stream: Stream[ChatCompletionChunk], *, model: str | None) -> None:
    """Refuse an answer that came compressed (`reusing_http_client` kept it from being inflated)."""
    encoding = stream.response.extensions.get(REFUSED_ENCODING)
    if encoding:
        stream.close()
        raise compressed_error(encoding, stream.response.status_code, model=model)


def _check_content_type(
    stream: Stream[ChatCompletionChunk], *, model: str | None, body: Callable[[Any], str] = _body_start
) -> None:
    content_type = stream.response.headers.get("content-type", "")
    if "text/event-stream" in content_type:
        return
    text = redact(body(stream.response))  # masked before it is shortened below
    stream.close()
    shown = parse_error_body(text).message[:200] if text.lstrip().startswith("<") else text.strip()[:200]
    raise ProtocolError(
        f"expected a server-sent event stream, got content-type {content_type or '(none)'!r}: {shown!r}",
        status=stream.response.status_code,
        model=model,
    )


def _checked_chunks(
    stream: Stream[ChatCompletionChunk], *, model: str | None, deadline: float | None = None
) -> Iterator[ChatCompletionChunk]:
    """Yield chunks, turning SDK and decoding failures mid-stream into typed errors.

    Each chunk is checked for the shape the interpreter and guidance's stream handler read, so a garbled
    chunk becomes a `ProtocolError` here instead of an AttributeError deep inside guidance. A stream that
    ends without any choice or without a ``finish_reason`` was cut short (DeepInfra ends every answer with
    one), so it is refused rather than handed back as a complete answer. `deadline` (stream_deadline) is
    checked as each chunk arrives, which bounds a stream also on an HTTP client of the user's own.
    """
    started = time.monotonic()
    seen = 0
    saw_choice = False
    saw_finish = False
    try:
        for chunk in stream:
            if deadline is not None and time.monotonic() - started > deadline:
                raise RequestTimeoutError(_stream_deadline_reason(deadline), model=model)
            problem = _chunk_problem(chunk)
            if problem is not None:
                raise ProtocolError(f"malformed stream chunk {seen + 1}: {problem}", model=model)
            seen += 1
            if chunk.choices:
                saw_choice = True
                saw_finish = saw_finish or chunk.choices[0].finish_reason is not None
            yield chunk
    except AnswerTooLarge as exc:
        raise too_large_error(exc.size, stream.response.status_code, model=model, announced=exc.announced) from None
    except openai.APITimeoutError as exc:
        raise RequestTimeoutError(_timeout_detail(exc), model=model) from None
    except openai.APIConnectionError as exc:
        # Checked before APIError, its base class: a dropped connection is not an error DeepInfra reported.
        raise ProtocolError(
            f"the stream broke off after {seen} chunks: {type(exc.__cause__ or exc).__name__}", model=model
        ) from None
    except openai.APIStatusError as exc:
        raise error_from_status(exc.status_code, _body_start(exc.response, deadline), model=model) from None
    except openai.APIError as exc:
        # An {"error": ...} event inside the stream.
        raise _stream_error_event(exc, model=model) from None
    except (ValueError, RecursionError) as exc:  # json raises RecursionError on deep nesting
        raise ProtocolError(f"malformed server-sent event after {seen} chunks: {exc}", model=model) from None
    except _TIMEOUT_ERRORS as exc:
        raise RequestTimeoutError(_timeout_detail(exc), model=model) from None
    except _TRANSPORT_ERRORS as exc:
        raise ProtocolError(f"the stream broke off after {seen} chunks: {type(exc).__name__}", model=model) from None
    if seen == 0:
        raise ProtocolError("the server closed the stream without sending any chunk", model=model)
    if not saw_choice:
        raise ProtocolError(f"the stream carried no choices ({seen} chunks, all with empty `choices`)", model=model)
    if not saw_finish:
        raise ProtocolError(
            f"the stream ended after {seen} chunks without a finish_reason: the answer was cut short",
            model=model,
        )


def _chunk_problem(chunk: Any) -> str | None:
    """What is wrong with a parsed chunk's shape, or None when every field we read has the right type."""
    if not isinstance(chunk, ChatCompletionChunk):
        return f"not a chat.completion.chunk: {redact(str(chunk))[:200]!r}"
    choices = getattr(chunk, "choices", None)
    if choices is not None and not isinstance(choices, list):
        return f"`choices` is {type(choices).__name__}, not a list"
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        if not isinstance(usage, BaseModel):
            return f"`usage` is {type(usage).__name__}, not an object"
        for name in ("prompt_tokens", "completion_tokens"):
            if not isinstance(getattr(usage, name, None), int):
                return f"`usage.{name}` is missing or not an integer"
    for choice in choices or []:
        if not isinstance(choice, BaseModel):
            return f"a choice is {type(choice).__name__}, not an object"
        delta = getattr(choice, "delta", None)
        if not isinstance(delta, BaseModel):
            return "a choice has no `delta` object"
        content = getattr(delta, "content", None)
        if content is not None and not isinstance(content, str):
            return f"`delta.content` is {type(content).__name__}, not a string"
        finish = getattr(choice, "finish_reason", None)
        if finish is not None and not isinstance(finish, str):
            return f"`finish_reason` is {type(finish).__name__}, not a string"
        tool_calls = getattr(delta, "tool_calls", None)
        if tool_calls is not None and not (
            isinstance(tool_calls, list) and all(isinstance(getattr(t, "index", None), int) for t in tool_calls)
        ):
            return "`delta.tool_calls` is not a list of indexed tool calls"
        if not _logprobs_usable(getattr(choice, "logprobs", None)):
            # Log probabilities are an optional extra: drop a garbled set rather than fail the call.
            setattr(choice, "logprobs", None)  # noqa: B010 - any chunk model, not only the typed one
    return None


def _logprobs_usable(logprobs: Any) -> bool:
    """True when guidance's stream handler can read these logprobs (token, logprob, top_logprobs)."""
    if logprobs is None:
        return True
    content = getattr(logprobs, "content", None)
    if content is None:
        return True
    if not isinstance(content, list):
        return False
    for token in content:
        if not isinstance(getattr(token, "token", None), str):
            return False
        if not isinstance(getattr(token, "logprob", None), (int, float)):
            return False
        top = getattr(token, "top_logprobs", None)
        if not isinstance(top, list):
            return False
        for alt in top:
            if not isinstance(getattr(alt, "token", None), str) or not isinstance(
                getattr(alt, "logprob", None), (int, float)
            ):
                return False
    return True


def _stream_error_event(exc: openai.APIError, *, model: str | None) -> APIError:
    """Type an ``{"error": {...}}`` event sent inside the stream; a numeric ``code`` is read as a status."""
    body = exc.body if isinstance(exc.body, dict) else {}
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and 400 <= code < 600:
        error = error_from_status(code, {"error": body}, model=model)
        error.message = f"DeepInfra reported an error mid-stream: {error.message}"
        return error
    return APIError(f"DeepInfra reported an error mid-stream: {exc.message}", model=model)


def _timeout_detail(exc: BaseException) -> str:
    """Say which bound ended a stream: the total deadline (its message is ours) or the per-read timeout."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if "stream_deadline" in str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return "the stream stalled past the timeout"


def _httpx_errors(name: str) -> tuple[type[BaseException], ...]:
    """The given exception class from whichever HTTP library the openai SDK uses (httpx2 or httpx)."""
    errors: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        errors.append(getattr(module, name))
    return tuple(errors)


_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = _httpx_errors("TimeoutException")
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    openai.APIConnectionError,
    *_httpx_errors("TransportError"),
)
_ANY_TIMEOUT: tuple[type[BaseException], ...] = (openai.APITimeoutError, *_TIMEOUT_ERRORS)


@contextmanager
def cached_chat(
    transport: Transport, body: dict[str, Any], *, model: str | None
) -> Iterator[Iterator[ChatCompletionChunk]]:
    """`Transport.stream_chat` with its cache: the k-th identical request of the run replays the k-th answer
    stored for it through the SDK's stream parser and `_checked_chunks`, or goes live and is recorded.

    A live answer is stored when it was read to its end, or when the reader stopped early and left normally
    (a client-side stop: a re-run stops at the same chunk); not when an error or an interrupt cut it, which
    a re-run would read further than was recorded.
    """
    run = transport.cache
    assert run is not None
    key, occurrence = run.claim(transport.base_url, body)
    record = stream_record(run.store.lookup(key, occurrence))
    if record is not None:
        transport._count(cache_hits=1)
        stream = _replay_stream(transport, record)
        chunks: Iterator[ChatCompletionChunk] = _detached_errors(_checked_chunks(stream, model=model))
        if not record.get("complete"):
            chunks = _partial_replay(chunks, model)
        try:
            yield ChunkStream(_observed(chunks, transport.observers, model), from_cache=True)
        finally:
            stream.close()
        return
    recorder = StreamRecorder()
    failed = True
    try:
        with transport._live_chat(body, model=model) as live:
            yield ChunkStream(recorder.tee(live), from_cache=False)
            failed = False
    finally:
        record = recorder.record()
        if recorder.chunks and (recorder.finished or not failed) and not holds_secret(record):
            run.store.store(key, occurrence, record, model=model_of(body))
        else:
            run.release(key, occurrence)


def _replay_stream(transport: Transport, record: dict[str, Any]) -> Stream[ChatCompletionChunk]:
    """A recorded answer as the SDK's `Stream`, parsed from the same server-sent events as a live one."""
    httpx = _httpx_module()
    request = httpx.Request("POST", f"{transport.base_url}/chat/completions")
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=sse_bytes(record), request=request
    )
    return QuickChunkStream(cast_to=ChatCompletionChunk, response=response, client=transport._client)


def _partial_replay(chunks: Iterator[ChatCompletionChunk], model: str | None) -> Iterator[ChatCompletionChunk]:
    """A replay of an answer whose recorder stopped reading early, which this reader reads past."""
    try:
        yield from chunks
    except ProtocolError:
        raise ProtocolError(
            "the cached answer for this request ends where the program that recorded it stopped reading (a "
            "client-side stop), and this program reads further: clear it (`guidance-deepinfra cache clear`) or "
            "run this request without the cache",
            model=model,
        ) from None
