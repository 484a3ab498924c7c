"""Whether a failed request ever reached the server, and why not, in words a user can act on.

A connection that was refused, a host name that does not resolve, a TLS handshake or a proxy that fails:
each means no request can get through until the base URL, the network or the proxy is fixed, unlike an
answer that broke off, which the next attempt may well get. The transports retry both alike; a batch stops
at once on the first kind (`extraction.engine.Breaker`), so it tells the exceptions of both HTTP
libraries (aiohttp on the fast path, the SDK's httpx) apart here, by class name, without importing either.
"""

from __future__ import annotations

import errno
import os

from ..errors import ConnectionFailedError

#: Exception classes, by name, that mean a connection was never made, and what each says to a user.
_NEVER_CONNECTED = {
    "ClientConnectorDNSError": "the host name could not be resolved",
    "ClientProxyConnectionError": "the proxy could not be reached",
    "ClientConnectorCertificateError": "the server's TLS certificate was not accepted",
    "ClientSSLError": "the TLS handshake failed",
    "ProxyError": "the proxy refused the connection",
    "ClientConnectorError": "no connection could be made",
    "ConnectError": "no connection could be made",
}

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused (nothing listens on that port)",
    errno.EHOSTUNREACH: "the host is unreachable",
    errno.ENETUNREACH: "the network is unreachable",
}


def never_connected(exc: BaseException) -> str | None:
    """What stopped a connection from being made, or None when `exc` is not such a failure (an answer that
    broke off, a server that closed the connection)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the SDK wraps httpx's error, which wraps the socket's
        if seen is None:
            return None
        names = [cls.__name__ for cls in type(seen).__mro__]
        for name, words in _NEVER_CONNECTED.items():
            if name in names:
                return _detail(seen, words)
        seen = seen.__cause__ or seen.__context__
    return None


def _detail(exc: BaseException, words: str) -> str:
    """`words`, made precise by the socket error behind `exc` where there is one."""
    if words == "no connection could be made" or "TLS" in words:
        code = _errno_of(exc)
        if code is not None and code in _ERRNO_WORDS:
            return _ERRNO_WORDS[code]
        if code is not None and code < 0:  # getaddrinfo's codes, seen through httpx
            return "the host name could not be resolved"
        if code is not None and words == "no connection could be made":
            return os.strerror(code).lower()
    return words


def _errno_of(exc: BaseException) -> int | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        os_error = getattr(seen, "os_error", None)  # aiohttp's connector errors keep the socket's error here
        for candidate in (os_error, seen):
            code = getattr(candidate, "errno", None)
            if isinstance(code, int):
                return code
        if seen.args and isinstance(seen.args[0], str) and seen.args[0].startswith("[Errno "):
            try:  # httpx keeps only the text of the socket's error
                return int(seen.args[0][len("[Errno ") :].split("]", 1)[0])
            except ValueError:
                return None
        seen = seen.__cause__ or seen.__context__
    return None


def unreachable(error: BaseException) -> ConnectionFailedError | None:
    """`error` when it says the endpoint could not be reached at all (see `never_connected`), else None."""
    if isinstance(error, ConnectionFailedError) and getattr(error, "reason", None):
        return error
    return None
