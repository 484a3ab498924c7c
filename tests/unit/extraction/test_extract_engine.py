"""Batch extraction parts that need no model: inputs, the durable record file, the limiter, the queue."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guidance_deepinfra.errors import ConfigurationError
from guidance_deepinfra.extraction.api import read_inputs
from guidance_deepinfra.extraction.engine import Batch, Done, Failed, Retry, Slot
from guidance_deepinfra.extraction.inputs import Item, items_from
from guidance_deepinfra.extraction.limiter import AdaptiveLimiter
from guidance_deepinfra.extraction.records import RecordLog, read_records

# --------------------------------------------------------------------------- inputs


def test_jsonl_malformed_lines_become_problems_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "first"}\n'
        b"{not json\n"
        b"\n"
        b'{"id": "b"}\n'
        b'{"id": "c", "text": "   "}\n'
        b'{"id": "a", "text": "again"}\n'
        b'"a bare string"\n'
        b'{"id": 7, "text": 3}\n'
        b'{"id": "d", "text": "caf\xe9"}\n'
        b"[1, 2]\n"
        b'{"text": "no id"}'
    )
    items = list(read_inputs(path))
    good = [(i.id, i.text, i.line) for i in items if i.problem is None]
    assert good == [("a", "first", 1), ("line-7", "a bare string", 7), ("line-11", "no id", 11)]
    bad = {i.line: (i.id, i.problem) for i in items if i.problem is not None}
    assert bad[2][0] == "line-2" and "malformed JSON" in bad[2][1]
    assert bad[4] == ("b", "no 'text' field")
    assert bad[5] == ("c", "the text is empty")
    assert bad[6][0] == "a" and "duplicate id (first seen at in.jsonl:1)" in bad[6][1]
    assert bad[8] == ("7", "field 'text' is not a string")
    assert bad[9][0] == "line-9" and "not UTF-8" in bad[9][1]
    assert bad[10][0] == "line-10" and "expected a JSON object" in bad[10][1]
    assert 3 not in bad  # blank lines are skipped, not errors
    assert all(i.source == f"in.jsonl:{i.line}" for i in items)


def test_csv_rows_keep_their_physical_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\nx,"two\nlines"\ny,plain\nz\n,no id here\n', encoding="utf-8")
    items = list(read_inputs(path))
    assert [(i.id, i.text, i.line, i.problem) for i in items] == [
        ("x", "two\nlines", 2, None),
        ("y", "plain", 4, None),
        ("line-5", "", 5, "1 fields where the header has 2"),
        ("line-6", "no id here", 6, None),
    ]
    with pytest.raises(ConfigurationError, match="no 'body' column"):
        list(read_inputs(path, text_field="body"))


def test_directory_of_txt_files_uses_relative_paths_as_ids(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "sub" / "a.txt").write_text("ay", encoding="utf-8")
    (tmp_path / "skip.md").write_text("not an input", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    items = list(read_inputs(tmp_path))
    assert [(i.id, i.text, i.problem is None) for i in items] == [
        ("b.txt", "bee", True),
        ("bad.txt", "", False),
        ("sub/a.txt", "ay", True),
    ]


def test_unknown_input_kinds_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="expected a .jsonl or .csv"):
        read_inputs(tmp_path / "x.parquet")
    with pytest.raises(ConfigurationError, match="does not exist"):
        read_inputs(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigurationError, match="read_inputs"):
        items_from("one text is not a collection")


def test_library_inputs_get_positional_or_given_ids() -> None:
    assert [(i.id, i.text) for i in items_from(["a", "b"])] == [("0", "a"), ("1", "b")]
    assert [(i.id, i.text) for i in items_from({"k": "v"})] == [("k", "v")]
    items = list(items_from([("p", "q"), ("r", 5), 42]))
    assert [(i.id, i.problem) for i in items] == [
        ("p", None),
        ("r", "the text is not a string"),
        ("2", "not a text or an (id, text) pair: 42"),
    ]


# --------------------------------------------------------------------------- the record file


def test_record_log_cuts_a_torn_last_line_and_keeps_whole_ones(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id":"a","result":1}\n{"id":"b","result":2}\n{"id":"c","res')
    log, recovered = RecordLog.open(path)
    with log:
        assert sorted(recovered.records) == ["a", "b"]
        assert recovered.torn_bytes == len(b'{"id":"c","res')
        log.append({"id": "c", "result": 3})
    assert path.read_bytes() == b'{"id":"a","result":1}\n{"id":"b","result":2}\n{"id":"c","result":3}\n'
    assert [r["id"] for r in read_records(path)] == ["a", "b", "c"]


def test_record_log_appends_whole_lines_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    log, _ = RecordLog.open(path)
    text = "x" * 5000  # longer than a pipe buffer, so interleaving would show

    def write(worker: int) -> None:
        for n in range(25):
            log.append({"id": f"{worker}-{n}", "result": text})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 200 and len({r["id"] for r in records}) == 200
    assert all(r["result"] == text for r in records)


def test_a_second_writer_on_the_same_output_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    first, _ = RecordLog.open(path)
    with first, pytest.raises(ConfigurationError, match="another run"):
        RecordLog.open(path)
    second, _ = RecordLog.open(path)  # free again once the first is closed
    second.close()


def test_errors_file_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "errors.jsonl"
    path.write_text('{"id":"old"}\n', encoding="utf-8")
    log, recovered = RecordLog.open(path, fresh=True)
    assert path.read_bytes() == b"" and recovered.records == {}
    log.close()
    assert not path.exists()  # closed with nothing written: no empty errors file is left


# --------------------------------------------------------------------------- the limiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fill(limiter: AdaptiveLimiter) -> list[float]:
    """Start as many requests as the window allows; their tickets."""
    tickets = []
    while (ticket := limiter.try_acquire()) is not None:
        tickets.append(ticket)
    return tickets


def test_each_429_narrows_the_window_by_one_slot_and_a_round_by_at_most_half() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(16, clock=clock)
    sent = fill(limiter)
    assert len(sent) == 16 and limiter.try_acquire() is None
    clock.now += 1
    for ticket in sent[:3]:
        limiter.congested(ticket)
    assert limiter.window == 13 and limiter.cuts == 1  # one slot per 429
    for ticket in sent[3:]:
        limiter.congested(ticket)  # a storm of 429s for requests sent before the round began
    assert limiter.window == 8 and limiter.cuts == 1  # at most half per round
    for ticket in sent:
        limiter.release(ticket, succeeded=False)
    clock.now += 1
    late = fill(limiter)
    assert len(late) == 8
    limiter.congested(late[0])  # sent after the round began: a new round, which may halve again
    assert limiter.window == 7 and limiter.cuts == 2 and limiter.lowest == 7


def test_successes_widen_the_window_by_a_quarter_slot_up_to_the_bound() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(16, clock=clock)
    sent = fill(limiter)
    for ticket in sent[:8]:
        limiter.congested(ticket)
    for ticket in sent:
        limiter.release(ticket, succeeded=False)
    assert limiter.window == 8
    for _ in range(4):
        ticket = limiter.try_acquire()
        assert ticket is not None
        limiter.release(ticket, succeeded=True)
    assert limiter.window == 9
    for _ in range(500):
        ticket = limiter.try_acquire()
        assert ticket is not None
        limiter.release(ticket, succeeded=True)
    assert limiter.window == 16  # never above the user's bound


def test_window_never_drops_below_the_floor() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(4, floor=2, clock=clock)
    for _ in range(10):
        clock.now += 1
        ticket = limiter.try_acquire()
        assert ticket is not None
        limiter.congested(ticket)
        limiter.release(ticket, succeeded=False)
    assert limiter.window == 2


def simulate(limiter: AdaptiveLimiter, clock: Clock, rounds: int, answer: Callable[[int, int], bool]) -> list[int]:
    """Rounds of one round trip each: fill the window, then answer every request (True: success, False: 429).

    `answer(position, in_flight)` decides each request; returns the successes of each round.
    """
    successes = []
    for _ in range(rounds):
        sent = fill(limiter)
        clock.now += 0.2
        ok = 0
        for position, ticket in enumerate(sent):
            if answer(position, len(sent)):
                ok += 1
                limiter.release(ticket, succeeded=True)
            else:
                limiter.congested(ticket)
                limiter.release(ticket, succeeded=False)
        successes.append(ok)
    return successes


def test_random_429s_leave_the_window_near_the_bound() -> None:
    # 10% of answers are 429s whatever the load: narrowing the window would not make them rarer.
    rng = random.Random(5)
    clock = Clock()
    limiter = AdaptiveLimiter(200, clock=clock)
    successes = simulate(limiter, clock, 100, lambda position, in_flight: rng.random() >= 0.10)
    assert sum(successes[50:]) / 50 >= 0.8 * 200  # (a window grown back by one slot per window sits near 1)
    assert limiter.lowest >= 100


def test_a_server_capping_requests_in_flight_holds_the_window_just_above_the_cap() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(200, clock=clock)
    successes = simulate(limiter, clock, 60, lambda position, in_flight: position < 40)
    assert 40 <= limiter.window <= 60  # backs off from 200 to the cap, and stays near it
    assert sum(successes[20:]) / 40 >= 0.9 * 40  # the server is kept busy
    assert limiter.cuts >= 3


@pytest.mark.slow
def test_pause_holds_new_requests() -> None:
    async def scenario() -> tuple[float, float]:
        limiter = AdaptiveLimiter(4)
        limiter.congested(pause=0.3)
        start = time.monotonic()
        ticket = await limiter.acquire()
        return time.monotonic() - start, ticket

    waited, ticket = asyncio.run(scenario())
    assert waited >= 0.25 and ticket > 0


def test_waiters_get_slots_in_order_with_requeued_inputs_first() -> None:
    async def scenario() -> list[str]:
        limiter = AdaptiveLimiter(1)
        held = await limiter.acquire()
        order: list[str] = []

        async def take(name: str, urgent: bool) -> None:
            ticket = await limiter.acquire(urgent=urgent)
            order.append(name)
            limiter.release(ticket, succeeded=True)

        waiting = [asyncio.ensure_future(take(n, n.startswith("again"))) for n in ("fresh1", "fresh2", "again1")]
        await asyncio.sleep(0.01)
        limiter.release(held, succeeded=True)
        await asyncio.gather(*waiting)
        return order

    assert asyncio.run(scenario()) == ["again1", "fresh1", "fresh2"]


# --------------------------------------------------------------------------- the batch


def run_batch(batch: Batch, items: Any, skip: Callable[[int, Item], bool] = lambda index, item: False) -> None:
    asyncio.run(batch.run(items, skip))


def test_batch_requeues_transient_failures_and_records_each_input_once(tmp_path: Path) -> None:
    runs: dict[str, int] = {}

    async def task(item: Item, slot: Slot) -> Done | Failed | Retry:
        runs[item.id] = runs.get(item.id, 0) + 1
        n = runs[item.id]
        await asyncio.sleep(0)
        if item.text == "flaky" and n < 3:
            return Retry("ServerError", "busy", cost=0.5)
        if item.text == "never":
            return Retry("RateLimitError", "still busy", rate_limited=True)
        if item.text == "broken":
            return Failed("ConstraintError", "no valid answer", cost=0.25)
        return Done({"echo": item.text}, cost=1.0)

    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    results, _ = RecordLog.open(out)
    errors, _ = RecordLog.open(err, fresh=True)
    items = [Item(str(i), t) for i, t in enumerate(["ok", "flaky", "broken", "never", "ok2"])]
    items.append(Item("bad", "", source="in.jsonl:9", line=9, problem="malformed JSON"))
    batch = Batch(task, limiter=AdaptiveLimiter(3), results=results, errors=errors, max_requeues=2, backoff=lambda n: 0)
    run_batch(batch, enumerate(items), skip=lambda index, item: item.id == "4")
    results.close()
    errors.close()
    assert runs == {"0": 1, "1": 3, "2": 1, "3": 3}
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(written, key=lambda r: r["id"]) == [
        {"id": "0", "result": {"echo": "ok"}, "estimated_cost": 1.0},
        {"id": "1", "result": {"echo": "flaky"}, "estimated_cost": 1.0},
    ]
    failed = {r["id"]: r for r in map(json.loads, err.read_text().splitlines())}
    assert failed["2"]["error"] == {"type": "ConstraintError", "message": "no valid answer"}
    assert failed["3"]["error"]["type"] == "RateLimitError"
    assert "this input was tried 3 times" in failed["3"]["error"]["message"]
    assert failed["3"]["attempts"] == 3
    assert failed["bad"] == {
        "id": "bad",
        "source": "in.jsonl:9",
        "line": 9,
        "attempts": 0,
        "error": {"type": "InvalidInput", "message": "malformed JSON"},
    }
    counts = batch.counts
    assert (counts.done, counts.failed, counts.resumed, counts.requeued) == (2, 3, 1, 4)
    assert counts.estimated_cost == pytest.approx(1.0 + 0.5 * 2 + 1.0 + 0.25)


def test_many_records_finished_together_share_writes_and_each_is_written_once(tmp_path: Path) -> None:
    async def task(item: Item, slot: Slot) -> Done:
        await asyncio.sleep(0.001)
        return Done(item.text)

    results, _ = RecordLog.open(tmp_path / "out.jsonl")
    batch = Batch(task, limiter=AdaptiveLimiter(100), results=results)
    run_batch(batch, ((i, Item(str(i), f"t{i}")) for i in range(1000)))
    results.close()
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(int(r["id"]) for r in records) == list(range(1000))
    assert all(r["result"] == f"t{r['id']}" for r in records)
    assert batch.counts.done == 1000 and batch.limiter.max_in_flight <= 100


def test_an_exception_from_the_task_stops_the_batch_and_is_raised() -> None:
    started: list[str] = []

    async def task(item: Item, slot: Slot) -> Done:
        started.append(item.id)
        await asyncio.sleep(0)
        if item.id == "2":
            raise ConfigurationError("wrong key")
        return Done(item.text)

    batch = Batch(task, limiter=AdaptiveLimiter(1))
    with pytest.raises(ConfigurationError, match="wrong key"):
        run_batch(batch, ((i, Item(str(i), "t")) for i in range(1000)))
    assert started == ["0", "1", "2"]
    assert batch.counts.done == 2


def test_a_record_that_cannot_be_written_stops_the_batch_instead_of_hanging(tmp_path: Path) -> None:
    results, _ = RecordLog.open(tmp_path / "out.jsonl")
    results.close()  # every write now fails, as on a full or vanished disk

    async def task(item: Item, slot: Slot) -> Done:
        return Done(item.text)

    batch = Batch(task, limiter=AdaptiveLimiter(4), results=results)
    with pytest.raises(OSError):
        run_batch(batch, ((i, Item(str(i), "t")) for i in range(100)))
    assert batch.counts.done == 0


def test_an_answered_input_starts_the_next_request_before_other_answers_are_checked() -> None:
    """Two answers arrive together: the first one's worker sends the next input's request before the second
    answer is checked (a handoff through another task would check both first, then send both)."""
    log: list[str] = []
    answers: dict[str, asyncio.Future[None]] = {}

    async def task(item: Item, slot: Slot) -> Done:
        log.append(f"send {item.id}")
        answers[item.id] = asyncio.get_running_loop().create_future()
        if item.id in "ab":
            if len(answers) == 2:  # both answers arrive in the same pass of the event loop
                asyncio.get_running_loop().call_later(0.01, lambda: [f.set_result(None) for f in answers.values()])
            await answers[item.id]
        slot.release(answered=True)
        log.append(f"check {item.id}")
        return Done(item.text)

    batch = Batch(task, limiter=AdaptiveLimiter(2))
    run_batch(batch, enumerate(Item(name, name) for name in "abcd"))
    assert log[:4] == ["send a", "send b", "check a", "send c"], log
    assert batch.counts.done == 4


@pytest.mark.slow  # measures the elapsed time
def test_a_task_waiting_out_a_backoff_is_replaced_so_the_window_stays_full() -> None:
    """With two slots, one input waits 0.3 s inside its request (a retry's backoff): the other slot and the
    waiting input's slot keep two requests of other inputs in flight meanwhile."""
    in_flight: list[int] = []
    running = 0

    async def task(item: Item, slot: Slot) -> Done:
        nonlocal running
        if item.id == "0":
            await slot.wait(0.3)
            return Done(item.text)
        running += 1
        in_flight.append(running)
        await asyncio.sleep(0.02)
        running -= 1
        return Done(item.text)

    batch = Batch(task, limiter=AdaptiveLimiter(2))
    started = time.monotonic()
    run_batch(batch, enumerate(Item(str(i), "t") for i in range(12)))
    assert batch.counts.done == 12 and batch.limiter.max_in_flight <= 2
    assert max(in_flight) == 2, in_flight  # one worker alone would never have two requests in flight
    assert time.monotonic() - started < 0.3 + 11 * 0.02  # the eleven other inputs did not queue behind the wait


def test_objects_older_than_a_batch_are_left_out_of_collections_until_the_last_batch_ends() -> None:
    """While batches run, the objects that existed before them are frozen (a full collection would otherwise
    walk them all and stop every request in flight); they are handed back when the last batch ends, even
    when batches overlap and end in another order than they began."""
    import gc

    seen: dict[str, int] = {}
    first_may_end = asyncio.Event()

    async def first(item: Item, slot: Slot) -> Done:
        seen["first, alone"] = gc.get_freeze_count()
        await first_may_end.wait()
        return Done(item.text)

    async def second(item: Item, slot: Slot) -> Done:
        seen["second, beside the first"] = gc.get_freeze_count()
        first_may_end.set()
        await asyncio.sleep(0.05)
        seen["second, after the first ended"] = gc.get_freeze_count()
        return Done(item.text)

    async def main() -> None:
        one = asyncio.ensure_future(Batch(first, limiter=AdaptiveLimiter(1)).run([(0, Item("a", "a"))], skip))
        await asyncio.sleep(0.01)
        await Batch(second, limiter=AdaptiveLimiter(1)).run([(0, Item("b", "b"))], skip)
        await one

    def skip(index: int, item: Item) -> bool:
        return False

    assert gc.get_freeze_count() == 0
    asyncio.run(main())
    # (objects freed meanwhile by reference counting leave the frozen set: its size is not compared)
    assert seen["first, alone"] > 0
    assert seen["second, beside the first"] > 0
    assert seen["second, after the first ended"] > 0  # still frozen: a batch runs
    assert gc.get_freeze_count() == 0


def test_a_failing_batch_unfreezes_too() -> None:
    import gc

    async def broken(item: Item, slot: Slot) -> Done:
        raise RuntimeError("a bug in the task")

    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError):
        run_batch(Batch(broken, limiter=AdaptiveLimiter(1)), [(0, Item("a", "a"))])
    assert gc.get_freeze_count() == 0
