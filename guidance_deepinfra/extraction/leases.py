"""A shard's share of the in-flight budget, leased from a ``distributed.Semaphore`` (extraction on Dask).

Why a semaphore: its leases are the budget itself (``max_leases=budget``), the scheduler hands them out
atomically to every process, and a lease belongs to a live client: the leases of a worker that dies are
given back by the scheduler once their lease timeout passes (``distributed.scheduler.locks.lease-timeout``,
30 s by default), while those of a worker that leaves cleanly come back at once. So the requests in flight
over all shards can never pass the budget, whatever runs, joins or dies. A `Variable` or `Queue` would
need a coordinator of our own to get that, and a dead holder's share would be lost.

Leases are taken in blocks, never per request: a shard holds a share of them for as long as it runs and
its `AdaptiveLimiter` lets that many requests fly. Every `period` seconds it compares its share with
``budget // running`` (shards running now, counted by a second semaphore each holds one lease of), takes
the free leases up to it (``acquire(timeout=0)``: only free ones, so no shard waits on another's) or,
above it, first lowers its window, waits until its requests fit and then hands the rest back. The
scheduler is asked a few times per period and per lease moved, whatever the request rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

#: Each running shard holds one lease of this semaphore; a dead worker's lease lingers until its timeout,
#: so the bound is well above any number of shards.
RUNNING_LEASES = 1_000_000


class LeasedWindow:
    """`SharedWindow` over two ``distributed.Semaphore``s named after the run (created in the task)."""

    def __init__(self, name: str, budget: int, *, most: int, period: float = 0.25) -> None:
        self.name = name
        self.budget = budget
        self.most = most
        self.period = period
        self.held = 0
        self.peak = 0
        self._leases: Any = None
        self._running: Any = None
        self._moving: asyncio.Future[int] | None = None  # leases being taken on a thread

    async def open(self) -> int:
        from distributed import Semaphore

        def take() -> None:
            self._running = Semaphore(max_leases=RUNNING_LEASES, name=f"{self.name}-running")
            self._leases = Semaphore(max_leases=self.budget, name=f"{self.name}-leases")
            self._running.acquire()
            self._leases.acquire()  # waits while the whole budget is held by running shards

        await asyncio.to_thread(take)
        self.held = 1
        await self._grow(self._target())
        return self.held

    def _target(self) -> int:
        running = max(1, int(self._running.get_value()))
        return max(1, min(self.most, self.budget // running))

    async def _grow(self, target: int) -> int:
        def take(wanted: int) -> int:
            got = 0
            while got < wanted and self._leases.acquire(timeout=0):
                got += 1
            return got

        if target > self.held:
            # Shielded: cancelling the batch's steering must not lose count of leases the thread took.
            self._moving = asyncio.ensure_future(asyncio.to_thread(take, target - self.held))
            self.held += await asyncio.shield(self._moving)
            self.peak = max(self.peak, self.held)
        return self.held

    async def steer(self, resize: Callable[[int], Awaitable[None]]) -> None:
        await resize(self.held)
        while True:
            await asyncio.sleep(self.period)
            target = await asyncio.to_thread(self._target)
            if target > self.held:
                await resize(await self._grow(target))
            elif target < self.held:
                await resize(target)  # returns once no more than `target` requests are in flight
                extra, self.held = self.held - target, target
                await asyncio.to_thread(self._release, extra)

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._leases.release()

    async def close(self) -> None:
        def give_back() -> None:
            while self._leases._leases:  # every lease this object holds, counted by the semaphore itself
                self._leases.release()
            self._running.release()

        if self._moving is not None:
            await asyncio.wait([self._moving])
        self.held = 0
        if self._leases is not None:
            await asyncio.to_thread(give_back)
