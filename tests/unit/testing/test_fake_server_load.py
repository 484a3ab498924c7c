"""The fake server holds a real load: a burst of connections is queued, not dropped, and requests overlap."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from guidance_deepinfra.testing import FakeDeepInfra, Reply
from guidance_deepinfra.testing.fake_server import LISTEN_BACKLOG

pytestmark = pytest.mark.slow  # bursts of connections against a server made to sleep


def test_a_burst_of_a_thousand_connections_waits_in_the_backlog() -> None:
    with FakeDeepInfra() as fake:
        assert fake._loop is not None
        # Hold the server's event loop so that it accepts nothing: every connection must wait in the backlog.
        fake._loop.call_soon_threadsafe(time.sleep, 1.0)
        time.sleep(0.05)
        host, port = fake._socket.getsockname()[:2]
        sockets = []
        try:
            for _ in range(1000):
                client = socket.socket()
                client.settimeout(0.5)
                client.connect((host, port))  # a listen backlog of 5 drops the SYN of the 6th onwards: timeout
                sockets.append(client)
        finally:
            for client in sockets:
                client.close()
    assert len(sockets) == 1000 and LISTEN_BACKLOG >= 1024


def test_two_hundred_requests_in_flight_are_answered_together() -> None:
    async def burst(url: str) -> list[dict[str, object]]:
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(i: int) -> dict[str, object]:
                body = {"model": "m", "messages": [{"role": "user", "content": str(i)}]}
                async with session.post(url + "/chat/completions", data=json.dumps(body)) as response:
                    return await response.json()  # type: ignore[no-any-return]

            return await asyncio.gather(*(one(i) for i in range(200)))

    with FakeDeepInfra(lambda body: Reply.text(body["messages"][0]["content"], delay=0.5)) as fake:
        answers = asyncio.run(burst(fake.base_url))
    assert [a["choices"][0]["message"]["content"] for a in answers] == [str(i) for i in range(200)]  # type: ignore[index]
    assert fake.max_active == 200 and fake.connections == 200  # all in flight at once, none refused or retried
