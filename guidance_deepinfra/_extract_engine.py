"""Runs one task per input on worker threads under an `AdaptiveLimiter`, writing each record as it finishes.

The task (`extract`'s guidance program) reports one of three outcomes per input: `Done`, `Failed` (an
error record, the batch goes on) or `Retry` (a transient failure such as a 429 that outlived the
transport's own retries: the input goes back in the queue, never lost, up to `max_requeues` times). An
exception out of the task is fatal to the batch (a wrong key, an unknown model): the records already written
stay, and the error is raised once the workers have stopped.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._extract_inputs import Item
from ._extract_limiter import AdaptiveLimiter
from ._extract_log import RecordLog
from ._http import RetryPolicy

logger = logging.getLogger("guidance_deepinfra")


@dataclass
class Done:
    """A result: `value` is handed back, `stored` (its JSON form, default `value`) goes to the output file."""

    value: Any
    cost: float = 0.0
    stored: Any = None


@dataclass
class Failed:
    error_type: str
    message: str
    cost: float = 0.0


@dataclass
class Retry:
    error_type: str
    message: str
    cost: float = 0.0
    rate_limited: bool = False


Outcome = Done | Failed | Retry
Task = Callable[[Item], Outcome]


@dataclass
class Counts:
    """Progress of a batch, updated by the workers (read it under `lock`)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    resumed: int = 0
    requeued: int = 0
    rate_limited: int = 0
    estimated_cost: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class _Entry:
    index: int
    item: Item
    runs: int = 0


class _WorkQueue:
    """Fresh inputs (bounded: a huge input file is read as the work goes) and requeued ones (served first)."""

    def __init__(self, capacity: int, abort: threading.Event) -> None:
        self._fresh: deque[_Entry] = deque()
        self._again: deque[_Entry] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._closed = False
        self._outstanding = 0
        self._abort = abort

    def put(self, entry: _Entry) -> bool:
        with self._cond:
            while len(self._fresh) >= self._capacity and not self._abort.is_set():
                self._cond.wait(0.25)
            if self._abort.is_set():
                return False
            self._fresh.append(entry)
            self._outstanding += 1
            self._cond.notify_all()
            return True

    def put_again(self, entry: _Entry) -> None:
        with self._cond:
            self._again.append(entry)
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def get(self) -> _Entry | None:
        """The next entry, or None when everything is finished or the batch is aborted."""
        with self._cond:
            while True:
                if self._abort.is_set():
                    return None
                if self._again:
                    entry = self._again.popleft()
                    break
                if self._fresh:
                    entry = self._fresh.popleft()
                    break
                if self._closed and self._outstanding == 0:
                    return None
                self._cond.wait(0.25)
            self._cond.notify_all()
            return entry


Record = tuple[int, Item, Outcome, int]
"""(input position, item, final outcome, runs) handed to `on_record` once per input."""


class Batch:
    """One batch run: feed items, let workers run tasks, write records, then `join`."""

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
        self.results = results
        self.errors = errors
        self.on_record = on_record
        self.max_requeues = max_requeues
        self.backoff = backoff or (lambda attempt: RetryPolicy().delay(attempt, None))
        self.counts = counts or Counts()
        self.on_progress = on_progress
        self.abort = threading.Event()
        self.fatal: BaseException | None = None
        self._queue = _WorkQueue(capacity=2 * limiter.ceiling + 16, abort=self.abort)
        self._threads = [
            threading.Thread(target=self._work, name=f"extract-{i}", daemon=True) for i in range(limiter.ceiling)
        ]

    def run(self, items: Iterable[tuple[int, Item]], skip: Callable[[int, Item], bool]) -> None:
        """Process `items` (position, item); `skip` says which are already finished (it records them)."""
        for thread in self._threads:
            thread.start()
        try:
            for index, item in items:
                if self.abort.is_set():
                    break
                if item.problem is not None:
                    self._record(index, item, Failed("InvalidInput", item.problem), runs=0)
                elif skip(index, item):
                    with self.counts.lock:
                        self.counts.resumed += 1
                    self._progress()
                elif not self._queue.put(_Entry(index, item)):
                    break
            self._queue.close()
            while any(t.is_alive() for t in self._threads):
                for thread in self._threads:
                    thread.join(0.2)
        except BaseException:
            self.stop()
            raise
        if self.fatal is not None:
            raise self.fatal

    def stop(self) -> None:
        """Stop handing out work; requests in flight finish and their records are written."""
        self.abort.set()
        self._queue.wake()
        self.limiter.wake()

    def _work(self) -> None:
        try:
            while (entry := self._queue.get()) is not None:
                self._handle(entry)
        except BaseException as exc:  # noqa: BLE001 - fatal to the batch (a bug, a full disk), re-raised by `run`
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.stop()

    def _handle(self, entry: _Entry) -> None:
        if not self.limiter.acquire(self.abort):
            return
        entry.runs += 1
        outcome: Outcome | None = None
        try:
            outcome = self.task(entry.item)
        finally:
            self.limiter.release(succeeded=isinstance(outcome, Done))
        if isinstance(outcome, Retry):
            with self.counts.lock:
                self.counts.estimated_cost += outcome.cost
            if entry.runs <= self.max_requeues:
                self._requeue(entry, outcome)
                return
            outcome = Failed(outcome.error_type, f"{outcome.message} (gave up after {entry.runs} tries)", 0.0)
        self._record(entry.index, entry.item, outcome, entry.runs)
        self._queue.finish()

    def _requeue(self, entry: _Entry, outcome: Retry) -> None:
        delay = self.backoff(entry.runs - 1)
        with self.counts.lock:
            self.counts.requeued += 1
        if outcome.rate_limited:
            # The transport already waited (honouring Retry-After) and still got 429s: hold all new requests.
            self.limiter.congested(pause=delay)
        else:
            self.abort.wait(delay)
        self._queue.put_again(entry)
        self._progress()

    def _record(self, index: int, item: Item, outcome: Outcome, runs: int) -> None:
        record: dict[str, Any] = {"id": item.id}
        if isinstance(outcome, Done):
            record["result"] = outcome.value if outcome.stored is None else outcome.stored
            record["estimated_cost"] = round(outcome.cost, 10)
            if self.results is not None:
                self.results.append(record)
        else:
            record["source"] = item.source
            if item.line is not None:
                record["line"] = item.line
            record["error"] = {"type": outcome.error_type, "message": outcome.message}
            record["attempts"] = runs
            if self.errors is not None:
                self.errors.append(record)
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
