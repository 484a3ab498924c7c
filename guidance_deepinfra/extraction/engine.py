"""Runs one task per input on asyncio under an `AdaptiveLimiter`, writing each record as it finishes.

The task (the extraction of one input) reports one of three outcomes: `Done`, `Failed` (an error record, the
batch goes on) or `Retry` (a transient failure such as a 429 that outlived the transport's own retries: the
input is run again, never lost, up to `max_requeues` times, ahead of fresh inputs). An exception out of the
task is fatal to the batch (a wrong key, an unknown model): no new request starts, the requests in flight
finish and their records are written, then the error is raised.

Requests are started by workers, one per slot the window can hold (`Batch.run`). A worker whose answer has
come back checks it and sends the next input's request in the same step of the event loop. Handing the slot
to another task instead (a feeder woken by the release, then a task it creates) costs two more passes of the
loop: the answers that arrive together then leave together, bunched closer each round trip, and each waits
behind the whole bunch's checking (about 0.05 of the ideal rate at 200 in flight and 200 ms, README's
benchmark). The fast path's transport also lets these steps run one per pass of the loop (`aio.Pacer`), so
each request is on the wire before the next answer's checking starts. Whatever would hold a worker off its
next request runs in a task of its own: writing a record, waiting to run a requeued input again; a worker
waiting out a backoff inside its request is replaced meanwhile. Inputs are read from their iterator only as
workers take them (at most one per worker ahead), so a huge input file is never held in memory.
Records are written by `_GroupWriter`: the records finished while one write is on disk go together in the
next write, with one fsync for all of them, and an input counts as done only once its record is durable.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..transport.client import RetryPolicy
from .breaker import Breaker
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
    #: The error itself (`breaker.Breaker` reads whether the endpoint could be reached at all), and its
    #: message without the count of the transport's attempts, for the record of an input that gives up.
    error: BaseException | None = None
    uncounted: str | None = None


Outcome = Done | Failed | Retry


class Slot:
    """The request slot one input holds while its request is in flight.

    A task reports each 429 its requests meet with `congested`, and waits out a backoff with `wait`, which
    gives the slot back for the wait (nothing is in flight meanwhile) and takes one again, ahead of fresh
    inputs.
    """

    def __init__(self, limiter: AdaptiveLimiter, ticket: float, parked: Callable[[bool], None] | None = None) -> None:
        self.limiter = limiter
        self.ticket = ticket
        self.held = True
        self._parked = parked  # told when the task starts and stops waiting (its worker is replaced meanwhile)

    def congested(self) -> None:
        self.limiter.congested(self.ticket)

    async def wait(self, seconds: float, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.release(answered=False)
        if self._parked is not None:
            self._parked(True)
        try:
            await (sleep or asyncio.sleep)(seconds)
            await self.take()
        finally:
            if self._parked is not None:
                self._parked(False)

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
    #: Requests answered by the request cache, and the cost DeepInfra reported for them when first made.
    cached_calls: int = 0
    saved_cost: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


Record = tuple[int, Item, Outcome, int]
"""(input position, item, final outcome, runs) handed to `on_record` once per input."""


class _GroupWriter:
    """Appends records to a `RecordLog` from a worker thread, many records per write and fsync."""

    def __init__(self, log: RecordLog) -> None:
        self.log = log
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    def submit(self, record: dict[str, Any]) -> asyncio.Future[None]:
        """Queue `record`; the future is done once it is on disk (or holds what the write raised)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._drain())
        return done

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


_frozen_batches = 0
_frozen_lock = threading.Lock()  # batches may run in several threads, each on its own event loop


@contextmanager
def _older_objects_frozen() -> Iterator[None]:
    """Leave the objects that exist when a batch starts out of the garbage collector's passes while it runs.

    A full collection walks every object of the process: with guidance and its dependencies loaded that
    stops the event loop for about 150 ms on the benchmark machine, and every request in flight waits.
    The batch's own objects are still collected; the older ones are handed back when the last running
    batch ends (`gc.unfreeze`), and garbage among them is collected by the next full pass after that.
    """
    global _frozen_batches
    with _frozen_lock:
        if _frozen_batches == 0:
            gc.freeze()
        _frozen_batches += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_batches -= 1
            if _frozen_batches == 0:
                gc.unfreeze()


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
        self.breaker = Breaker(streak=2 * limiter.ceiling)
        self.stopped = False
        self._running: set[asyncio.Future[None]] = set()  # workers, reruns and record writes
        self._stop_event: asyncio.Event | None = None
        self._feed: Iterator[tuple[int, Item]] = iter(())
        self._skip: Callable[[int, Item], bool] = lambda index, item: False
        self._feed_done = False
        self._feed_error: BaseException | None = None
        self._workers = 0  # workers running, parked ones included
        self._parked = 0  # tasks waiting out a backoff inside their request

    async def run(self, items: Iterable[tuple[int, Item]], skip: Callable[[int, Item], bool]) -> None:
        """Process `items` (position, item); `skip` says which are already finished (it records them)."""
        self._stop_event = asyncio.Event()
        self._feed = iter(items)
        self._skip = skip
        self._feed_done = False
        self._feed_error = None
        self._workers = self._parked = 0
        try:
            with _older_objects_frozen():
                await self._run_workers()
        except BaseException:
            self.stop()
            for running in list(self._running):
                running.cancel()
            if self._running:
                await asyncio.wait(set(self._running))
            raise
        if self.fatal is not None:
            raise self.fatal

    async def _run_workers(self) -> None:
        self._add_workers()
        while self._running:
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
            if self._feed_error is not None:
                raise self._feed_error

    def stop(self) -> None:
        """Start no new request; requests in flight finish and their records are written."""
        self.stopped = True
        if self._stop_event is not None:
            self._stop_event.set()
        self.limiter.wake()

    # ----------------------------------------------------------------- workers

    def _add_workers(self) -> None:
        """Keep one worker able to start a request per slot of the largest window, not counting parked ones."""
        while not self._feed_done and not self.stopped and self._workers - self._parked < self.limiter.ceiling:
            self._workers += 1
            self._spawn(self._work())

    def _park(self, parked: bool) -> None:
        """A task starts (True) or stops (False) waiting out a backoff: another worker takes its place."""
        self._parked += 1 if parked else -1
        if parked:
            self._add_workers()

    def _spawn(self, work: Awaitable[None]) -> asyncio.Future[None]:
        """Track `work` (a coroutine, or a future such as a record's write) until it is done."""
        running = asyncio.ensure_future(work)
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        return running

    async def _work(self) -> None:
        """Take inputs one after another; each waits for a slot, runs, and hands its record to a task."""
        try:
            while not self.stopped and self._workers - self._parked <= self.limiter.ceiling:
                taken = self._next_input()
                if taken is None:
                    return
                ticket = await self.limiter.acquire()
                if self.stopped:
                    self.limiter.release(ticket, succeeded=False)
                    return  # the input is left for a rerun
                await self._handle(*taken, Slot(self.limiter, ticket, self._park), runs=0)
        finally:
            self._workers -= 1

    def _next_input(self) -> tuple[int, Item] | None:
        """The next input that needs a request; one with a problem gets its error record, a finished one is
        counted. None when the inputs are exhausted (or could not be read: `run` raises that error)."""
        if self._feed_done:
            return None
        try:
            for index, item in self._feed:
                if item.problem is not None:
                    self._record(index, item, Failed("InvalidInput", item.problem), 0)
                elif self._skip(index, item):
                    with self.counts.lock:
                        self.counts.resumed += 1
                    self._progress()
                else:
                    return index, item
        except BaseException as exc:  # noqa: BLE001 - raised by `run`, which stops the batch
            self._feed_error = exc
        self._feed_done = True
        return None

    def _fail(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.stop()

    async def _handle(self, index: int, item: Item, slot: Slot, runs: int) -> None:
        """Run one input's task in `slot`; its record, or its next run after a transient failure, goes to a
        task of its own so that the worker (if this is one) moves on to the next input at once."""
        try:
            runs += 1
            outcome: Outcome | None = None
            try:
                outcome = await self.task(item, slot)
            finally:
                slot.release(answered=isinstance(outcome, Done))
            unreachable = self.breaker.trip(outcome.error if isinstance(outcome, Retry) else None)
            if unreachable is not None:
                self._fail(unreachable)
            if isinstance(outcome, Retry):
                with self.counts.lock:
                    self.counts.estimated_cost += outcome.cost
                if self.stopped:
                    return  # the batch is stopping: the input is left for a rerun, not marked failed
                if runs <= self.max_requeues:
                    self._requeue(runs, outcome)
                    self._spawn(self._run_again(index, item, outcome, runs))
                    return
                if runs > 1:  # one count per message: the input's runs, not the transport's attempts in each
                    message = f"{outcome.uncounted or outcome.message}; this input was tried {runs} times"
                else:
                    message = outcome.message
                outcome = Failed(outcome.error_type, message, 0.0)
            self._record(index, item, outcome, runs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - fatal to the batch (a bug, a broken task), re-raised by `run`
            self._fail(exc)

    async def _run_again(self, index: int, item: Item, outcome: Retry, runs: int) -> None:
        """Run an input again after a transient failure, ahead of fresh inputs (unless the batch stopped)."""
        if outcome.pause <= 0:  # with a pause (Retry-After) the limiter holds every request instead
            assert self._stop_event is not None
            try:
                await asyncio.wait_for(self._stop_event.wait(), self.backoff(runs - 1))
            except asyncio.TimeoutError:
                pass
        if self.stopped:
            return  # the batch stopped meanwhile: the input is left for a rerun
        slot = Slot(self.limiter, await self.limiter.acquire(urgent=True), self._park)
        if self.stopped:
            slot.release(answered=False)
            return
        await self._handle(index, item, slot, runs)

    def _requeue(self, runs: int, outcome: Retry) -> None:
        """Count an input sent back for another run, and hold every new request for the server's Retry-After.

        Done before the worker takes its next input: a pause registered later would let that input's request
        through during it.
        """
        with self.counts.lock:
            self.counts.requeued += 1
        self._progress()
        if outcome.pause > 0:
            # The server said how long to wait (Retry-After) and the transport's retries did not outlast it:
            # hold every new request for that long. Without Retry-After, the 429s have already narrowed the
            # window, and only this input waits: a pause of everything for a random 429 would idle every slot.
            self.limiter.congested(pause=outcome.pause)

    def _record(self, index: int, item: Item, outcome: Outcome, runs: int) -> None:
        """Hand the input's record to its file; it counts as done (`_recorded`) once it is on disk."""
        record: dict[str, Any] = {"id": item.id}
        writer = self.results
        if isinstance(outcome, Done):
            record["result"] = outcome.value if outcome.stored is None else outcome.stored
            record["estimated_cost"] = round(outcome.cost, 10)
            if outcome.scored:
                record["confidence"] = outcome.confidence
        else:
            record["source"] = item.source
            if item.line is not None:
                record["line"] = item.line
            record["error"] = {"type": outcome.error_type, "message": outcome.message}
            record["attempts"] = runs
            writer = self.errors
        if writer is None:
            self._recorded(index, item, outcome, runs)
            return
        written = self._spawn(writer.submit(record))
        written.add_done_callback(lambda done: self._written(done, (index, item, outcome, runs)))

    def _written(self, done: asyncio.Future[None], record: Record) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            self._fail(error)  # a full disk: fatal to the batch
            return
        try:
            self._recorded(*record)
        except BaseException as exc:  # noqa: BLE001 - a failing on_record is fatal, as it was for the task
            self._fail(exc)

    def _recorded(self, index: int, item: Item, outcome: Outcome, runs: int) -> None:
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
