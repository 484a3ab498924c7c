"""An adaptive bound on requests in flight (AIMD), for batch work against DeepInfra's per-model limit.

DeepInfra limits concurrent requests per model (200) and answers 429 above it, or when a model is busy.
Holding a fixed concurrency through a burst of 429s only produces more 429s, so the window works like TCP
congestion control: it starts at the user's bound, is halved on a 429 (at most once per round of requests,
so one burst counts once), optionally pauses every new request for a while, and grows back by about one
slot per window of successful calls.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

#: DeepInfra's documented limit of concurrent requests per model and account.
DEEPINFRA_MAX_CONCURRENCY = 200


class AdaptiveLimiter:
    """A semaphore whose size moves between `floor` and `ceiling` with the 429s it is told about.

    Threads call `acquire` before a request and `release` after it; `congested` reports a 429 seen by the
    calling thread's current request.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 1,
        decrease: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ceiling < 1 or floor < 1 or floor > ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor={floor}, ceiling={ceiling}")
        self.ceiling = ceiling
        self.floor = floor
        self.decrease = decrease
        self.limit = float(ceiling)
        self.in_flight = 0
        self.max_in_flight = 0
        self.cuts = 0
        self.lowest = ceiling
        self._clock = clock
        self._paused_until = 0.0
        self._last_cut = -math.inf
        self._credit = 0
        self._cond = threading.Condition()
        self._local = threading.local()

    @property
    def window(self) -> int:
        """How many requests may be in flight now."""
        return max(self.floor, int(self.limit))

    def acquire(self, abort: threading.Event | None = None) -> bool:
        """Wait for a slot (and for any pause to end); False if `abort` was set while waiting."""
        with self._cond:
            while True:
                if abort is not None and abort.is_set():
                    return False
                pause = self._paused_until - self._clock()
                if pause > 0:
                    self._cond.wait(min(pause, 0.25))
                elif self.in_flight >= self.window:
                    self._cond.wait(0.25)
                else:
                    break
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._local.started = self._clock()
            return True

    def release(self, *, succeeded: bool) -> None:
        """Give the slot back; a full window of successes widens the window by one slot."""
        with self._cond:
            self.in_flight -= 1
            if succeeded:
                self._credit += 1
                if self._credit >= self.window:
                    self._credit = 0
                    self.limit = min(float(self.ceiling), float(self.window + 1))
            self._cond.notify_all()

    def congested(self, pause: float = 0.0) -> None:
        """The calling thread's request met a 429: halve the window, and hold new requests for `pause` s.

        Requests sent before the last cut were sent under the old window, so their 429s do not cut again.
        """
        with self._cond:
            now = self._clock()
            started = getattr(self._local, "started", now)
            if started >= self._last_cut:
                self.limit = max(float(self.floor), self.limit * self.decrease)
                self.lowest = min(self.lowest, self.window)
                self._last_cut = now
                self._credit = 0
                self.cuts += 1
            if pause > 0:
                self._paused_until = max(self._paused_until, now + pause)
            self._cond.notify_all()

    def wake(self) -> None:
        """Let waiting threads re-check (used when the batch is aborted)."""
        with self._cond:
            self._cond.notify_all()
