"""Which proxy, if any, a request to the model's endpoint goes through: one decision for both transports.

The environment's ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY`` are read by the HTTP
library the openai SDK is built on (httpx or httpx2), with its rules, which follow curl's: ``*`` anywhere in
NO_PROXY switches proxies off, ``*.example.com`` and ``.example.com`` match subdomains, ``example.com`` the
domain and its subdomains, an address range such as ``127.0.0.0/8`` every address in it. The standard
library's ``proxy_bypass`` reads the same variables differently (it knows none of those forms), so a second
reading could send through a proxy what the user meant to keep from it, the Authorization header included.
`proxy_for` asks the HTTP library's own code; the streamed transport builds its client with the answer and
the extraction fast path sends through it. A loopback address (127.0.0.1, localhost, ::1: a local test
server) is never proxied.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger("guidance_deepinfra")

#: Hosts never reached through a proxy: a loopback base_url is a server on this machine (a local test server).
LOOPBACK_PATTERNS = ("all://127.0.0.1", "all://localhost", "all://[::1]")


def proxy_map(httpx: Any) -> dict[str, str | None]:
    """Proxy URL per URL pattern from the environment, as `httpx` reads it (None: go direct)."""
    try:
        proxies: dict[str, str | None] = importlib.import_module(f"{httpx.__name__}._utils").get_environment_proxies()
    except (ImportError, AttributeError):  # another layout of the HTTP library
        logger.debug("cannot read proxy settings through %s", httpx.__name__)
        return {}
    if any(url is not None for url in proxies.values()):
        proxies.update(dict.fromkeys(LOOPBACK_PATTERNS))
    return proxies


def proxy_for(url: str, httpx: Any) -> str | None:
    """The proxy URL a request to `url` goes through, None for a direct connection.

    The patterns of `proxy_map` are tried from the most specific to the least, as `httpx`'s client mounts
    them, and the first that matches `url` decides.
    """
    proxies = proxy_map(httpx)
    if not any(proxy is not None for proxy in proxies.values()):
        return None
    try:
        pattern_class = importlib.import_module(f"{httpx.__name__}._utils").URLPattern
    except (ImportError, AttributeError):
        logger.debug("cannot match proxy settings through %s", httpx.__name__)
        return None
    target = httpx.URL(url)
    for pattern, proxy in sorted(((pattern_class(p), proxy) for p, proxy in proxies.items()), key=lambda i: i[0]):
        if pattern.matches(target):
            return proxy
    return None
