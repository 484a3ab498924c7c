"""The pacer of the async transport: the work after each answer runs one loop step at a time, and the request a
step sends is on the wire before the next answer's work starts."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import pytest
from trickling_server import http_head, read_request

from guidance_deepinfra.transport.aio import AsyncTransport, Pacer

KEY = "test-key-0123456789"


def test_tasks_take_turns_one_per_pass_in_arrival_order() -> None:
    """Three tasks ask in the same pass: each runs its step in a pass of its own, first come first served,
    and what a step schedules (as aiohttp schedules a request's write) runs before the next task's step."""
    log: list[str] = []

    async def step(name: str, pacer: Pacer) -> None:
        await pacer.turn()
        log.append(f"step {name}")
        asyncio.get_running_loop().call_soon(log.append, f"write {name}")

    async def main() -> None:
        pacer = Pacer()
        await asyncio.gather(*(step(name, pacer) for name in "abc"))
        await asyncio.sleep(0)  # the last step's write
        await pacer.turn()  # free again: at once
        log.append("later")

    asyncio.run(main())
    assert log == ["step a", "write a", "step b", "write b", "step c", "write c", "later"], log


def test_a_cancelled_task_does_not_keep_the_turn() -> None:
    """A task cancelled while waiting, or after being handed the turn but before using it, passes it on."""
    log: list[str] = []

    async def step(name: str, pacer: Pacer) -> None:
        await pacer.turn()
        log.append(name)

    async def main() -> None:
        pacer = Pacer()
        tasks = [asyncio.ensure_future(step(name, pacer)) for name in "abcd"]
        await asyncio.sleep(0)  # a runs; b, c and d wait in line
        tasks[1].cancel()  # b: cancelled while waiting
        await asyncio.sleep(0)  # the turn goes past b to c, whose step is scheduled...
        tasks[2].cancel()  # ...and c is cancelled before it runs
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
        kinds = [type(result).__name__ for result in done]
        assert kinds == ["NoneType", "CancelledError", "CancelledError", "NoneType"]

    asyncio.run(main())
    assert log == ["a", "d"]


class _HeldAnswers:
    """A blocking HTTP server on a thread: it reads two requests, answers both at once when told to (`go`),
    then leaves its sockets unread until `release`, so that a test can see whether a third request has
    reached it; then it answers that one too."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.received = threading.Event()
        self.go = threading.Event()
        self.answered = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _answer() -> bytes:
        body = json.dumps(
            {
                "choices": [{"message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
        ).encode()
        return http_head("200 OK", "application/json", len(body)) + body

    def _serve(self) -> None:
        for _ in range(2):
            conn, _ = self.listener.accept()
            self.connections.append(conn)
            read_request(conn)
        self.received.set()
        self.go.wait(10)
        for conn in self.connections:  # both answers at once
            conn.sendall(self._answer())
        self.answered.set()
        self.release.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the third request, on whichever connection it came
            for conn in self.connections:
                if self._has_bytes(conn):
                    read_request(conn)
                    conn.sendall(self._answer())
                    return
            time.sleep(0.005)

    @staticmethod
    def _has_bytes(conn: socket.socket) -> bool:
        try:
            return bool(conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False

    def waiting_bytes(self) -> bool:
        """Whether a request has reached the server since it answered (its bytes are in a socket's buffer)."""
        return any(self._has_bytes(conn) for conn in self.connections)

    def close(self) -> None:
        self.go.set()
        self.release.set()
        self.thread.join(5)
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.mark.slow  # a thread and real sockets; blocks the event loop on purpose for a moment
def test_the_request_sent_after_one_answer_is_on_the_wire_before_the_next_answer_is_read() -> None:
    """Two answers arrive in the same pass of the event loop. The task of the first sends its next request;
    by the time the second task's answer comes back to it, that request has reached the server. Without the
    pacer, on Python 3.11 aiohttp would write it only after every answer of the pass had been handled."""
    server = _HeldAnswers()
    seen_by_second: list[bool] = []
    body: dict[str, Any] = {"model": "org/model", "messages": [{"role": "user", "content": "hi"}]}

    async def main() -> None:
        transport = AsyncTransport(api_key=KEY, base_url=f"http://127.0.0.1:{server.port}/v1/openai", timeout=10)
        async with transport:
            order: list[int] = []

            async def one(index: int) -> None:
                await transport.complete(body)
                order.append(index)
                if len(order) == 1:
                    await transport.complete(body)  # the first answered sends the next request
                else:
                    seen_by_second.append(server.waiting_bytes())
                    server.release.set()

            tasks = [asyncio.ensure_future(one(index)) for index in range(2)]
            while not server.received.is_set():
                await asyncio.sleep(0.005)
            # Block the loop while the server answers both: the loop then reads both answers in one pass.
            server.go.set()
            assert server.answered.wait(5)
            await asyncio.wait_for(asyncio.gather(*tasks), 10)

    try:
        asyncio.run(main())
    finally:
        server.close()
    assert seen_by_second == [True]
