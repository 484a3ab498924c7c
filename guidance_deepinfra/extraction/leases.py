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
above it, first lowers its window, waits until its requests fit and then hands the rest back. Once all of
its inputs have started, a shard leaves the running count and keeps only the leases of the requests
still in flight, so the shards still feeding grow into its share instead of waiting out its last round
trips. Leases move in blocks (one round of messages per step), so the scheduler is asked a few times per
period, whatever the request rate.
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

    def __init__(self, name: str, budget: int, *, most: int, period: float = 0.1) -> None:
        self.name = name
        self.budget = budget
        self.most = most
        self.period = period
        self.held = 0
        self.peak = 0
        self._leases: Any = None
        self._running: Any = None
        self._moving: asyncio.Future[int] | None = None  # leases being taken on a thread
        self._running_held = False

    async def open(self) -> int:
        from distributed import Semaphore

        def take() -> None:
            self._running = Semaphore(max_leases=RUNNING_LEASES, name=f"{self.name}-running")
            self._leases = Semaphore(max_leases=self.budget, name=f"{self.name}-leases")
            self._running.acquire()
            self._running_held = True
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
            return int(self._leases.sync(self._block, wanted))

        if target > self.held:
            # Shielded: cancelling the batch's steering must not lose count of leases the thread took.
            self._moving = asyncio.ensure_future(asyncio.to_thread(take, target - self.held))
            self.held += await asyncio.shield(self._moving)
            self.peak = max(self.peak, self.held)
        return self.held

    async def steer(self, resize: Callable[[int], Awaitable[None]], draining: Callable[[], int | None]) -> None:
        await resize(self.held)
        while True:
            await asyncio.sleep(self.period)
            in_flight = draining()
            if in_flight is not None:  # every input started: leave the running count, keep what is in flight
                if self._running_held:
                    await asyncio.to_thread(self._running.release)
                    self._running_held = False
                target = max(1, in_flight)  # one slot stays for an input run again after a failure
            else:
                target = await asyncio.to_thread(self._target)
            if target > self.held:
                await resize(await self._grow(target))
            elif target < self.held:
                await resize(target)  # returns once no more than `target` requests are in flight
                extra, self.held = self.held - target, target
                await asyncio.to_thread(self._release, extra)

    async def _block(self, wanted: int) -> int:
        """On the client's loop: ask for `wanted` free leases at once (one round of messages, not one per
        lease in turn); how many were granted. The semaphore's own coroutine keeps its lease list, so its
        refreshing and releasing cover them."""
        granted = await asyncio.gather(*(self._leases._acquire(timeout=0) for _ in range(wanted)))
        return sum(1 for ok in granted if ok)

    async def _hand_back(self, count: int) -> None:
        leases = [self._leases._leases.popleft() for _ in range(min(count, len(self._leases._leases)))]
        await asyncio.gather(*(self._leases._release(lease_id=lease) for lease in leases))

    def _release(self, count: int) -> None:
        self._leases.sync(self._hand_back, count)

    async def close(self) -> None:
        def give_back() -> None:
            self._release(len(self._leases._leases))  # every lease this object holds, as the semaphore counts
            if self._running_held:
                self._running.release()
                self._running_held = False

        if self._moving is not None:
            await asyncio.wait([self._moving])
        self.held = 0
        if self._leases is not None:
            await asyncio.to_thread(give_back)
