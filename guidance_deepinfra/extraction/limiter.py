"""An adaptive bound on requests in flight, for batch work against DeepInfra's per-model limit.

DeepInfra limits concurrent requests per model (200) and answers 429 above it, or when a model is busy.
Two kinds of 429 must be told apart by their effect, since the answers look the same:

- a real limit (the account's 200, or a busy model serving fewer): the share of 429s grows with the
  requests in flight, and holding the window only produces more of them;
- random 429s, independent of load: cutting the window does not make them rarer, so every cut is lost
  throughput.

The window therefore moves per answer, not per round of answers: each 429 narrows it by one slot (one
request too many was in flight) and each success widens it by `increase` of a slot. Under a limit the
excess requests are the 429s, so the window settles just above what the server accepts (its excess is
about `increase` of the accepted requests); random 429s at a rate below ``increase / (1 + increase)`` (20%
for the default quarter slot) cost slots more slowly than successes give them back, so the window stays
near the user's bound. As in TCP, the window shrinks by at most half per round trip: a burst of 429s for
requests sent before the last cut cannot take it further until requests sent after that cut have
answered. A pause (from Retry-After) can hold every new request.

The state changes only in the event loop's thread (`AdaptiveLimiter` is not thread-safe); waiting is done
with asyncio, and `try_acquire` gives tests and simulations a step-by-step view with a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

#: DeepInfra's documented limit of concurrent requests per model and account.
DEEPINFRA_MAX_CONCURRENCY = 200

#: Requests in flight when the caller names no bound (here, not in `api`, so the command's help is light).
DEFAULT_CONCURRENCY = 32

#: Window gained per successful request (a quarter slot: x1.25 per round trip below the user's bound).
DEFAULT_INCREASE = 0.25


class AdaptiveLimiter:
    """A semaphore whose size moves between `floor` and `ceiling` with the 429s it is told about.

    `acquire` returns a ticket (the time the request was let through) that is handed back to `release`
    and `congested`, so a 429 is judged by the window its request was sent under.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 1,
        increase: float = DEFAULT_INCREASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ceiling < 1 or floor < 1 or floor > ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor={floor}, ceiling={ceiling}")
        self.ceiling = ceiling
        self.floor = floor
        self.increase = increase
        self.limit = float(ceiling)
        self.in_flight = 0
        self.max_in_flight = 0
        #: Rounds of 429s met (each may narrow the window by up to half).
        self.cuts = 0
        self.lowest = ceiling
        self._clock = clock
        self._paused_until = 0.0
        self._round_start = -math.inf  # when the current round of 429s began
        self._round_bottom = 0.0  # the window may not go below this during the round
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def window(self) -> int:
        """How many requests may be in flight now."""
        return max(self.floor, int(self.limit))

    @property
    def paused_for(self) -> float:
        """Seconds until a pause ends (0 when none)."""
        return max(0.0, self._paused_until - self._clock())

    # ----------------------------------------------------------------- the window

    def try_acquire(self) -> float | None:
        """A ticket if a request may start now (no pause, a free slot), else None."""
        if self.paused_for > 0 or self.in_flight >= self.window:
            return None
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return self._clock()

    def release(self, ticket: float, *, succeeded: bool) -> None:
        """Give the slot back; a success widens the window by `increase` of a slot."""
        del ticket  # the answer's effect does not depend on when it was sent
        self.in_flight -= 1
        if succeeded:
            self.limit = min(float(self.ceiling), self.limit + self.increase)
        self._wake()

    def congested(self, ticket: float | None = None, pause: float = 0.0) -> None:
        """A request sent at `ticket` met a 429: narrow the window by one slot; hold new requests `pause` s.

        A 429 for a request sent after the current round began opens a new round, which may again take
        the window down to half of what it is then; older 429s count within their round's bound.
        """
        now = self._clock()
        sent = now if ticket is None else ticket
        if sent >= self._round_start:
            self._round_start = now
            self._round_bottom = max(float(self.floor), self.limit / 2)
            self.cuts += 1
        self.limit = max(self._round_bottom, self.limit - 1.0)
        self.lowest = min(self.lowest, self.window)
        if pause > 0:
            self._paused_until = max(self._paused_until, now + pause)
        self._wake()

    # ----------------------------------------------------------------- waiting (asyncio)

    async def acquire(self, *, urgent: bool = False) -> float:
        """Wait for a slot (and for any pause to end). `urgent` waiters (requeued inputs) go first."""
        if not self._urgent and (urgent or not self._waiters):
            ticket = self.try_acquire()
            if ticket is not None:
                return ticket
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._waiters).append(future)
        self._wake()  # a free slot goes to the first waiter; a pause arms its timer
        try:
            while True:
                await future
                ticket = self.try_acquire()
                if ticket is not None:
                    return ticket
                future = asyncio.get_running_loop().create_future()
                (self._urgent if urgent else self._waiters).appendleft(future)
                self._wake()
        except BaseException:
            for queue in (self._urgent, self._waiters):
                if future in queue:
                    queue.remove(future)
            if future.done() and not future.cancelled():
                self._wake()  # pass a wake-up this waiter can no longer use to the next one
            raise

    def wake(self) -> None:
        """Let every waiter re-check (used when the batch is aborted)."""
        for queue in (self._urgent, self._waiters):
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)

    def _wake(self) -> None:
        """Wake as many waiters as there are free slots, or arm a timer for the end of a pause."""
        pause = self.paused_for
        if pause > 0:
            if self._timer is None and (self._urgent or self._waiters):
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(pause, self._end_pause)
            return
        free = self.window - self.in_flight
        for queue in (self._urgent, self._waiters):
            while free > 0 and queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    free -= 1

    def _end_pause(self) -> None:
        self._timer = None
        self._wake()
