"""Total time bounds on every phase of a request, enforced at the socket, below the HTTP library.

The HTTP library's timeouts bound each operation: one connect, one read, one write. A server that sends a
byte every 0.3 s never trips a 2 s read timeout, so response headers, an error body or an HTML page trickled
in that way could take any time (the SDK reads a whole error body before it raises). Here the network
stream of each connection carries a `Deadline`, and every socket operation waits at most until it:

- from the moment a request is handed to the transport, connecting, sending, the response headers and a
  body that is not an event stream (an error, an HTML page) share one deadline, ``timeout`` seconds away;
- once the headers of an event stream have arrived, its body has ``stream_deadline`` seconds.

A passed deadline raises the HTTP library's own ``ConnectTimeout``/``WriteTimeout``/``ReadTimeout``, which
the SDK and the transport already turn into `RequestTimeoutError`. This works on the network backend of the
client the plugin builds; a client the user passes is left alone (see the README for what is bounded then).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Deadline:
    """A point in `time.monotonic` time, and the sentence that says which bound it was."""

    at: float
    reason: str

    @classmethod
    def after(cls, seconds: float | None, reason: str) -> Deadline | None:
        return None if seconds is None else cls(time.monotonic() + seconds, reason)


_sending = threading.local()


@contextmanager
def sending(deadline: Deadline | None) -> Iterator[None]:
    """Let the connection that sends the next request on this thread take `deadline` (None: no bound) as its own."""
    _sending.active, _sending.deadline = True, deadline
    try:
        yield
    finally:
        _sending.active, _sending.deadline = False, None


def _current() -> Deadline | None:
    return getattr(_sending, "deadline", None)


def _is_sending() -> bool:
    return getattr(_sending, "active", False)


def _bounded(timeout: float | None, deadline: Deadline | None, error: type[Exception]) -> float | None:
    """The time one socket operation may take: its own timeout, cut to what is left before `deadline`."""
    if deadline is None:
        return timeout
    left = deadline.at - time.monotonic()
    if left <= 0:
        raise error(deadline.reason)
    return left if timeout is None else min(timeout, left)


class DeadlineStream:
    """A connection's network stream whose reads and writes stop at the deadline of the request on it.

    One HTTP/1.1 connection carries one request at a time, and every request starts by writing: the write
    takes the deadline of the request this thread is sending, and later reads (headers, body) keep it, on
    whichever thread they happen. `deadline` is replaced once an event stream's headers have arrived.
    """

    def __init__(self, inner: Any, core: Any) -> None:
        self._inner = inner
        self._core = core
        self.deadline: Deadline | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = self.deadline
        try:
            return self._inner.read(max_bytes, timeout=_bounded(timeout, deadline, self._core.ReadTimeout))  # type: ignore[no-any-return]
        except self._core.ReadTimeout:
            if deadline is not None and time.monotonic() >= deadline.at - 0.005:
                raise self._core.ReadTimeout(deadline.reason) from None
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if _is_sending():  # a new request on this connection: its bounds replace the last one's, even "none"
            self.deadline = _current()
        self._inner.write(buffer, timeout=_bounded(timeout, self.deadline, self._core.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        bounded = _bounded(timeout, _current(), self._core.ConnectTimeout)
        wrapped = DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout=bounded), self._core)
        wrapped.deadline = self.deadline
        return wrapped

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend:
    """The HTTP library's network backend, handing out `DeadlineStream`s and bounding connects."""

    def __init__(self, inner: Any, core: Any) -> None:
        self._inner = inner
        self._core = core

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> DeadlineStream:
        timeout = _bounded(timeout, _current(), self._core.ConnectTimeout)
        stream = self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return DeadlineStream(stream, self._core)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        timeout = _bounded(timeout, _current(), self._core.ConnectTimeout)
        stream = self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)
        return DeadlineStream(stream, self._core)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install(transport: Any, core: Any) -> bool:
    """Put a `DeadlineBackend` under `transport`'s connection pool; False when its layout is not the known one."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None or not hasattr(backend, "connect_tcp"):
        return False
    pool._network_backend = DeadlineBackend(backend, core)  # type: ignore[union-attr]
    return True


def network_stream_of(response: Any) -> DeadlineStream | None:
    """The `DeadlineStream` a response arrived on, if it did."""
    stream = getattr(response, "extensions", {}).get("network_stream")
    return stream if isinstance(stream, DeadlineStream) else None
