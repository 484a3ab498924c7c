"""A reused keep-alive connection to the fake server answers as fast as a fresh one.

Without TCP_NODELAY on the connections the server accepts, each streamed reply on a reused connection waited
about 40 ms for the client's delayed ACK (Nagle's algorithm holding the reply's second write), so any benchmark
of a client that keeps its connection measured the server's stall instead of the client.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from urllib.parse import urlparse

import pytest

from guidance_deepinfra.testing import FakeDeepInfra, Reply

pytestmark = pytest.mark.slow  # measures elapsed time

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Say it."}], "stream": True})
ANSWER = "The quick brown fox jumps over the lazy dog. " * 4


def _call(connection: http.client.HTTPConnection) -> float:
    started = time.perf_counter()
    connection.request("POST", "/v1/openai/chat/completions", BODY, {"content-type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    assert response.status == 200 and b"[DONE]" in payload
    return time.perf_counter() - started


def test_calls_on_one_connection_take_no_longer_than_on_fresh_ones() -> None:
    with FakeDeepInfra(lambda body: Reply.text(ANSWER, chunk_size=6)) as fake:
        url = urlparse(fake.base_url)
        assert url.hostname is not None and url.port is not None
        reused = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
        on_reused: list[float] = []
        on_fresh: list[float] = []
        for _ in range(25):  # interleaved, so that the machine's noise hits both alike
            on_reused.append(_call(reused))
            fresh = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
            on_fresh.append(_call(fresh))
            fresh.close()
        reused.close()
        assert fake.connections == 26  # the reused connection really was reused
    # With the stall a reused call took ~40 ms against ~3 ms fresh; without it they are level.
    assert statistics.median(on_reused) < 3 * statistics.median(on_fresh) + 0.005, (on_reused, on_fresh)
