"""The one place that talks HTTP to DeepInfra.

Everything else in the package builds plain request dicts and reads parsed chunks; this module sends the dict
exactly as given through the official openai SDK (so what we test is what we send), retries what may be
retried with exponential backoff and jitter, and turns every failure into a typed error from `errors`.
The SDK's own retries are switched off so that retrying happens here and only here.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import openai
from openai import Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from .errors import (
    APIError,
    ConfigurationError,
    ConnectionFailedError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    error_from_status,
)

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
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        ceiling = min(self.base_delay * (2**attempt), self.max_delay)
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


@dataclass
class CallStats:
    """Counters the transport keeps for every call; read by usage reports and benchmarks."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def check_base_url(base_url: str) -> str:
    """Refuse a base_url that cannot work (no scheme or host) before any request is made."""
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigurationError(
            f"base_url must be an absolute http(s) URL such as {DEFAULT_BASE_URL!r}, got {base_url!r}"
        )
    return base_url.rstrip("/")


class Transport:
    """Sends chat-completion requests to DeepInfra and yields parsed stream chunks.

    The API key lives only inside the openai client; `repr` and every error leave it out.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float | None = 120.0,
        retry: RetryPolicy | None = None,
        **client_kwargs: Any,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.retry = retry or RetryPolicy()
        self.stats = CallStats()
        self._lock = threading.Lock()
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=timeout,
            **client_kwargs,
        )

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, inc in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + inc)

    @contextmanager
    def stream_chat(self, body: dict[str, Any], *, model: str | None = None) -> Iterator[Iterator[ChatCompletionChunk]]:
        """Open a streaming chat completion for `body` (sent verbatim) and yield its chunks.

        Opening the stream is retried per `RetryPolicy`; once chunks flow, a failure is raised as a typed
        error instead, because text has already been handed to the program.
        """
        stream = self._open(body, model=model)
        try:
            yield _checked_chunks(stream, model=model)
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
                    stream_cls=Stream[ChatCompletionChunk],
                )
                _check_content_type(stream, model=model)
                return stream
            except openai.APIStatusError as exc:
                error = error_from_status(exc.status_code, _response_body(exc.response), model=model)
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                if isinstance(error, RateLimitError):
                    self._count(rate_limited=1)
                if not isinstance(error, (RateLimitError, ServerError)) or attempt >= self.retry.max_retries:
                    raise error from None
            except openai.APITimeoutError:
                if attempt >= self.retry.max_retries:
                    raise RequestTimeoutError(
                        f"DeepInfra did not answer in time after {attempt + 1} attempts", model=model
                    ) from None
                error, retry_after = None, None
            except openai.APIConnectionError as exc:
                if attempt >= self.retry.max_retries:
                    raise ConnectionFailedError(
                        f"could not reach {self.base_url} after {attempt + 1} attempts: {type(exc.__cause__).__name__}",
                        model=model,
                    ) from None
                error, retry_after = None, None
            wait = self.retry.delay(attempt, retry_after)
            logger.info(
                "DeepInfra request failed (%s); retry %d/%d in %.2fs",
                error or "timeout/connection", attempt + 1, self.retry.max_retries, wait,
            )
            self._count(retries=1)
            self.retry.sleep(wait)
            attempt += 1


def _response_body(response: Any) -> Any:
    try:
        response.read()
        return response.text
    except Exception:  # noqa: BLE001 - the body is only used for the message
        return ""


def _check_content_type(stream: Stream[ChatCompletionChunk], *, model: str | None) -> None:
    content_type = stream.response.headers.get("content-type", "")
    if "text/event-stream" in content_type:
        return
    try:
        stream.response.read()
        text = stream.response.text
    except Exception:  # noqa: BLE001
        text = ""
    stream.close()
    shown = text.strip()[:200]
    raise ProtocolError(
        f"expected a server-sent event stream, got content-type {content_type or '(none)'!r}: {shown!r}",
        status=stream.response.status_code,
        model=model,
    )


def _checked_chunks(stream: Stream[ChatCompletionChunk], *, model: str | None) -> Iterator[ChatCompletionChunk]:
    """Yield chunks, turning SDK and decoding failures mid-stream into typed errors."""
    seen = 0
    try:
        for chunk in stream:
            if not isinstance(chunk, ChatCompletionChunk) or not hasattr(chunk, "choices"):
                raise ProtocolError(f"unexpected stream item: {str(chunk)[:200]!r}", model=model)
            seen += 1
            yield chunk
    except openai.APITimeoutError:
        raise RequestTimeoutError("the stream stalled past the timeout", model=model) from None
    except openai.APIStatusError as exc:
        raise error_from_status(exc.status_code, _response_body(exc.response), model=model) from None
    except openai.APIError as exc:
        # An {"error": ...} event inside the stream.
        raise APIError(f"DeepInfra reported an error mid-stream: {exc.message}", model=model) from None
    except ValueError as exc:
        raise ProtocolError(f"malformed server-sent event after {seen} chunks: {exc}", model=model) from None
    except _TRANSPORT_ERRORS as exc:
        raise ProtocolError(
            f"the stream broke off after {seen} chunks: {type(exc).__name__}", model=model
        ) from None
    if seen == 0:
        raise ProtocolError("the server closed the stream without sending any chunk", model=model)


def _httpx_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [openai.APIConnectionError]
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        errors.append(module.TransportError)
    return tuple(errors)


_TRANSPORT_ERRORS = _httpx_errors()
