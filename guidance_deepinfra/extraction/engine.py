"""Runs one task per input on asyncio under an `AdaptiveLimiter`, writing each record as it finishes.

The task (the extraction of one input) reports one of three outcomes: `Done`, `Failed` (an error record, the
batch goes on) or `Retry` (a transient failure such as a 429 that outlived the transport's own retries: the
input is run again, never lost, up to `max_requeues` times, ahead of fresh inputs). An exception out of the
task is fatal to the batch (a wrong key, an unknown model): no new request starts, the requests in flight
finish and their records are written, then the error is raised.

Inputs are read from their iterator only as slots free up, so a huge input file is never held in memory.
Records are written by `_GroupWriter`: the records finished while one write is on disk go together in the
next write, with one fsync for all of them, and an input counts as done only once its record is durable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..transport.client import RetryPolicy
from .inputs import Item
from .limiter import AdaptiveLimiter
from .records import RecordLog

logger = logging.getLogger("guidance_deepinfra")


@dataclass
class Done:
    """A result: `value` is handed back, `stored` (its JSON form, default `value`) goes to the output file.

    `confidence` (``{field: {option: probability}}``, or None when the answer came without logprobs) is
    written beside it only when the batch asked for it (`scored`).
    """

    value: Any
    cost: float = 0.0
    stored: Any = None
    confidence: dict[str, dict[str, float]] | None = None
    scored: bool = False


@dataclass
class Failed:
    error_type: str
    message: str
    cost: float = 0.0


@dataclass
class Retry:
    """A transient failure; `pause` is the server's Retry-After of a 429, which holds every new request."""

    error_type: str
    message: str
    cost: float = 0.0
    rate_limited: bool = False
    pause: float = 0.0


Outcome = Done | Failed | Retry


class Slot:
    """The request slot one input holds while its request is in flight.

    A task reports each 429 its requests meet with `congested`, and waits out a backoff with `wait`, which
    gives the slot back for the wait (nothing is in flight meanwhile) and takes one again, ahead of fresh
    inputs.
    """

    def __init__(self, limiter: AdaptiveLimiter, ticket: float) -> None:
        self.limiter = limiter
        self.ticket = ticket
        self.held = True

    def congested(self) -> None:
        self.limiter.congested(self.ticket)

    async def wait(self, seconds: float, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.release(answered=False)
        await (sleep or asyncio.sleep)(seconds)
        await self.take()

    def release(self, *, answered: bool) -> None:
        """The request is over (`answered`: the server took it, no 429): free the slot for another input."""
        if self.held:
            self.held = False
            self.limiter.release(self.ticket, succeeded=answered)

    async def take(self) -> None:
        """Hold a slot again before this input's next request (ahead of fresh inputs)."""
        if not self.held:
            self.ticket = await self.limiter.acquire(urgent=True)
            self.held = True


Task = Callable[[Item, Slot], Awaitable[Outcome]]


@dataclass
class Counts:
    """Progress of a batch (read it under `lock`: a thread may draw a progress bar from it)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    resumed: int = 0
    requeued: int = 0
    rate_limited: int = 0
    estimated_cost: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


Record = tuple[int, Item, Outcome, int]
"""(input position, item, final outcome, runs) handed to `on_record` once per input."""


class _GroupWriter:
    """Appends records to a `RecordLog` from a worker thread, many records per write and fsync."""

    def __init__(self, log: RecordLog) -> None:
        self.log = log
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def append(self, record: dict[str, Any]) -> None:
        """Return once `record` is on disk (or raise what the write raised)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._drain())
        await done

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self.log.append_many, [record for record, _ in group])
            except BaseException as exc:  # noqa: BLE001 - handed to every writer of the group
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in group:
                    if not done.done():
                        done.set_result(None)


class Batch:
    """One batch run: `await batch.run(items, skip)` runs every item and writes its record."""

    def __init__(
        self,
        task: Task,
        *,
        limiter: AdaptiveLimiter,
        results: RecordLog | None = None,
        errors: RecordLog | None = None,
        on_record: Callable[[Record], None] | None = None,
        max_requeues: int = 8,
        backoff: Callable[[int], float] | None = None,
        counts: Counts | None = None,
        on_progress: Callable[[Counts], None] | None = None,
    ) -> None:
        self.task = task
        self.limiter = limiter
        self.results = _GroupWriter(results) if results is not None else None
        self.errors = _GroupWriter(errors) if errors is not None else None
        self.on_record = on_record
        self.max_requeues = max_requeues
        self.backoff = backoff or (lambda attempt: RetryPolicy().delay(attempt, None))
        self.counts = counts or Counts()
        self.on_progress = on_progress
        self.fatal: BaseException | None = None
        self.stopped = False
        self._running: set[asyncio.Task[None]] = set()
        self._stop_event: asyncio.Event | None = None

    async def run(self, items: Iterable[tuple[int, Item]], skip: Callable[[int, Item], bool]) -> None:
        """Process `items` (position, item); `skip` says which are already finished (it records them)."""
        self._stop_event = asyncio.Event()
        try:
            for index, item in items:
                if self.stopped:
                    break
                if item.problem is not None:
                    await self._record(index, item, Failed("InvalidInput", item.problem), runs=0)
                elif skip(index, item):
                    with self.counts.lock:
                        self.counts.resumed += 1
                    self._progress()
                else:
                    ticket = await self.limiter.acquire()
                    if self.stopped:
                        self.limiter.release(ticket, succeeded=False)
                        break
                    running = asyncio.ensure_future(self._handle(index, item, Slot(self.limiter, ticket)))
                    self._running.add(running)
                    running.add_done_callback(self._running.discard)
            while self._running:
                await asyncio.wait(set(self._running))
        except BaseException:
            self.stop()
            for running in list(self._running):
                running.cancel()
            if self._running:
                await asyncio.wait(set(self._running))
            raise
        if self.fatal is not None:
            raise self.fatal

    def stop(self) -> None:
        """Start no new request; requests in flight finish and their records are written."""
        self.stopped = True
        if self._stop_event is not None:
            self._stop_event.set()
        self.limiter.wake()

    async def _handle(self, index: int, item: Item, slot: Slot) -> None:
        runs = 0
        try:
            while True:
                runs += 1
                outcome: Outcome | None = None
                try:
                    outcome = await self.task(item, slot)
                finally:
                    slot.release(answered=isinstance(outcome, Done))
                if isinstance(outcome, Retry):
                    with self.counts.lock:
                        self.counts.estimated_cost += outcome.cost
                    if runs <= self.max_requeues:
                        if not await self._requeue(runs, outcome):
                            return  # the batch stopped meanwhile: the input is left for a rerun
                        slot = Slot(self.limiter, await self.limiter.acquire(urgent=True))
                        if self.stopped:
                            slot.release(answered=False)
                            return
                        continue
                    outcome = Failed(outcome.error_type, f"{outcome.message} (gave up after {runs} tries)", 0.0)
                await self._record(index, item, outcome, runs)
                return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - fatal to the batch (a bug, a full disk), re-raised by `run`
            if self.fatal is None:
                self.fatal = exc
            self.stop()

    async def _requeue(self, runs: int, outcome: Retry) -> bool:
        """Wait before running an input again; False if the batch stopped meanwhile."""
        delay = self.backoff(runs - 1)
        with self.counts.lock:
            self.counts.requeued += 1
        self._progress()
        if outcome.pause > 0:
            # The server said how long to wait (Retry-After) and the transport's retries did not outlast it:
            # hold every new request for that long. Without Retry-After, the 429s have already narrowed the
            # window, and only this input waits: a pause of everything for a random 429 would idle every slot.
            self.limiter.congested(pause=outcome.pause)
        else:
            assert self._stop_event is not None
            try:
                await asyncio.wait_for(self._stop_event.wait(), delay)
            except asyncio.TimeoutError:
                pass
        return not self.stopped

    async def _record(self, index: int, item: Item, outcome: Outcome, runs: int) -> None:
        record: dict[str, Any] = {"id": item.id}
        if isinstance(outcome, Done):
            record["result"] = outcome.value if outcome.stored is None else outcome.stored
            record["estimated_cost"] = round(outcome.cost, 10)
            if outcome.scored:
                record["confidence"] = outcome.confidence
            if self.results is not None:
                await self.results.append(record)
        else:
            record["source"] = item.source
            if item.line is not None:
                record["line"] = item.line
            record["error"] = {"type": outcome.error_type, "message": outcome.message}
            record["attempts"] = runs
            if self.errors is not None:
                await self.errors.append(record)
        with self.counts.lock:
            if isinstance(outcome, Done):
                self.counts.done += 1
            else:
                self.counts.failed += 1
            self.counts.estimated_cost += outcome.cost
        if self.on_record is not None:
            self.on_record((index, item, outcome, runs))
        self._progress()

    def _progress(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(self.counts)
        except Exception:  # a broken progress display must not stop the batch
            logger.exception("progress callback failed; progress is no longer shown")
            self.on_progress = None
