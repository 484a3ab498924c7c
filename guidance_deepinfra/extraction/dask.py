"""Extraction past one process: shards as tasks on Dask's distributed scheduler.

One process already holds DeepInfra's 200 concurrent requests per model (see the README), and that limit
is shared by every process using the key, so more processes help only when something else is the bound:
validation heavy enough to fill a core, several models (each has its own limit), or several accounts. For
those cases::

    from dask.distributed import Client
    from guidance_deepinfra.extract_dask import extract_on_dask

    client = Client("scheduler-address:8786")          # or Client(LocalCluster(...))
    summary = extract_on_dask(client, "inputs.jsonl", "schema.json", "results/", shards=8, budget=200)

Each shard is one task over its own part of the input (`extraction.partition`: a byte range of a JSONL
file aligned to line starts, or a run of a directory's files), so the input is read once over all tasks.
It writes its own durable output ``results/shard-K-of-N.jsonl``, so no two tasks write one file. The
budget is leased (`extraction.leases.LeasedWindow`): the shards running at a moment split it, so with
more shards than worker threads the ones that run hold all of it, and together they never pass it. When
a worker dies, Dask runs its tasks again on another worker; a task resumes from its output file (records
written stay, a torn last line is cut, the rest is redone), so nothing is lost or written twice. Paths
must be readable and writable from every worker (checked on each before any request), and the key is read
by each worker from its own ``DEEPINFRA_API_KEY`` unless passed (a key passed here travels in the task).

Needs the ``dask`` extra: ``pip install "guidance-deepinfra[dask]"``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .api import load_schema, run_extraction
from .engine import Counts
from .leases import LeasedWindow
from .limiter import DEEPINFRA_MAX_CONCURRENCY, AdaptiveLimiter
from .partition import partition
from .records import read_records

_TOTALS = ("done", "failed", "resumed", "rate_limited", "estimated_cost", "lines_read", "bytes_read")


def shard_output(output_dir: str | Path, shard: int, shards: int) -> Path:
    """The output file of one shard."""
    return Path(output_dir) / f"shard-{shard}-of-{shards}.jsonl"


def extract_shard(
    inputs: str | Path,
    schema: Any,
    output_dir: str | Path,
    shard: int,
    shards: int,
    *,
    run: str,
    budget: int,
    ordered: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Run one shard (the task body); returns its counts. Rerunning it resumes from its output file.

    `schema` is a JSON schema (dict) or a `load_schema` spec (``schema.json``, ``module:Class``), so that
    it travels to workers as plain data. `run` names the budget's semaphores and the progress topic.
    With `ordered`, the shard's records are also written in input order beside its output, for the merge.
    """
    parsed = load_schema(schema) if isinstance(schema, str) else schema
    output = shard_output(output_dir, shard, shards)
    part = partition(inputs, shard, shards)
    order: list[str] = []

    def items() -> Any:
        for item in part.items:
            if ordered:
                order.append(item.id)
            yield item

    window = LeasedWindow(run, budget, most=min(budget, DEEPINFRA_MAX_CONCURRENCY))
    report = _reporter(run, shard)
    results = run_extraction(
        items(),
        parsed,
        output=output,
        errors=output.with_name(output.stem + ".errors.jsonl"),
        collect=False,
        window=window,
        on_progress=report,
        **options,
    )
    if ordered:
        by_id = {str(r.get("id")): r for r in read_records(output) if "result" in r}
        _write_records(output.with_suffix(".ordered.jsonl"), (by_id[i] for i in order if i in by_id))
    summary = {
        "shard": shard,
        "output": str(output),
        "done": results.done,
        "failed": results.failed,
        "resumed": results.resumed,
        "rate_limited": results.rate_limited,
        "estimated_cost": results.estimated_cost,
        "partition": part.kind,
        "lines_read": part.span.lines_read if part.span is not None else None,
        "bytes_read": part.span.bytes_read if part.span is not None else None,
        "leases_peak": window.peak,
    }
    report(None, None, 0, final=summary)
    return summary


def _reporter(run: str, shard: int) -> Callable[..., None]:
    """Progress sent to the client as Dask events (`log_event`), at most every 0.2 s and at the end."""
    from distributed import get_worker

    worker = get_worker()
    last = [0.0]

    def report(counts: Counts | None, limiter: AdaptiveLimiter | None, rate_limited: int, final: Any = None) -> None:
        now = time.monotonic()
        if final is None and now - last[0] < 0.2:
            return
        last[0] = now
        if final is not None:
            message = {"shard": shard, **{k: final[k] for k in ("done", "failed", "resumed", "estimated_cost")}}
        else:
            assert counts is not None
            with counts.lock:
                message = {
                    "shard": shard,
                    "done": counts.done,
                    "failed": counts.failed,
                    "resumed": counts.resumed,
                    "estimated_cost": counts.estimated_cost,
                }
        worker.log_event(f"{run}-progress", message)

    return report


def _write_records(path: Path, records: Any) -> None:
    import json

    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


def _concatenate(pieces: list[str], target: str) -> str:
    """The merge task: the shards' ordered records, one file, in shard (so input) order."""
    tmp = Path(target).with_suffix(".tmp")
    with tmp.open("wb") as out:
        for piece in pieces:
            out.write(Path(piece).read_bytes())
            Path(piece).unlink()
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(target)
    return target


def _reach(inputs: str, output_dir: str) -> str | None:
    """On a worker: why it cannot read the input or write the output directory, or None."""
    try:
        path = Path(inputs)
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                return f"cannot read the directory {inputs!r}"
        else:
            with path.open("rb") as file:
                file.read(1)
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def extract_on_dask(
    client: Any,
    inputs: str | Path,
    schema: Any,
    output_dir: str | Path,
    *,
    shards: int,
    budget: int = 200,
    merge: bool = False,
    progress: bool = False,
    task_retries: int = 3,
    **options: Any,
) -> dict[str, Any]:
    """Run `shards` shard tasks on a ``dask.distributed.Client``, wait for them, and return the merged summary.

    `budget` is the most requests in flight over all shards (DeepInfra's per-model limit by default),
    leased to the shards that run (`LeasedWindow`); it must be at least the number of shards that can run
    at once (``min(shards, worker threads)``). With `merge`, ``output_dir/merged.jsonl`` holds every result
    in input order (the shard files stay the durable truth); `progress` draws one bar over all shards in
    this process, fed by the workers. `task_retries` is how many more times a failed task (not a lost
    worker: Dask reruns those itself) is run. Other options go to `run_extraction` (``model``,
    ``base_url``, ``max_attempts``...). The summary has the totals, ``shards`` (each shard's counts) and
    ``merged`` (the merged file or None).
    """
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ConfigurationError(f"shards must be a positive integer, got {shards!r}")
    threads = sum(client.nthreads().values())
    running = min(shards, threads)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < max(1, running):
        raise ConfigurationError(
            f"budget must be at least one request per shard that can run at once ({running}: {shards} shards, "
            f"{threads} worker threads), got {budget!r}"
        )
    if "concurrency" in options:
        raise ConfigurationError("pass budget=, not concurrency=: the shards share the budget as they run")
    problems = {w: why for w, why in client.run(_reach, str(inputs), str(output_dir)).items() if why}
    if problems:
        listed = "; ".join(f"{worker}: {why}" for worker, why in sorted(problems.items()))
        raise ConfigurationError(f"not every worker can read {str(inputs)!r} and write {str(output_dir)!r}: {listed}")
    run = f"guidance-deepinfra-{uuid.uuid4().hex[:12]}"
    bar = _Progress(client, run, shards) if progress else None
    try:
        futures = [
            client.submit(
                extract_shard,
                str(inputs),
                schema,
                str(output_dir),
                shard,
                shards,
                run=run,
                budget=budget,
                ordered=merge,
                key=f"{run}-shard-{shard}-of-{shards}",
                pure=False,
                retries=task_retries,
                **options,
            )  # fmt: skip
            for shard in range(shards)
        ]
        summaries = sorted(client.gather(futures), key=lambda s: s["shard"])
        merged = None
        if merge:
            pieces = [str(Path(s["output"]).with_suffix(".ordered.jsonl")) for s in summaries]
            target = str(Path(output_dir) / "merged.jsonl")
            merged = client.submit(_concatenate, pieces, target, key=f"{run}-merge", pure=False).result()
    finally:
        if bar is not None:
            bar.close()
    totals: dict[str, Any] = {k: sum(s[k] or 0 for s in summaries) for k in _TOTALS}
    return {**totals, "shards": summaries, "merged": merged}


class _Progress:
    """One tqdm bar in the client over every shard, from the workers' progress events."""

    def __init__(self, client: Any, run: str, shards: int) -> None:
        from tqdm import tqdm

        self.client = client
        self.topic = f"{run}-progress"
        self.latest: dict[int, dict[str, Any]] = {}
        self.bar = tqdm(unit="rec", desc=f"{shards} shards", dynamic_ncols=True)
        client.subscribe_topic(self.topic, self._event)

    def _event(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        shown = self.latest.get(message["shard"])
        if shown is not None and _finished(shown) > _finished(message):
            return  # an older event (a rerun counts what it resumed)
        self.latest[message["shard"]] = message
        finished = sum(_finished(m) for m in self.latest.values())
        self.bar.set_postfix(
            failed=sum(m["failed"] for m in self.latest.values()),
            cost=f"${sum(m['estimated_cost'] for m in self.latest.values()):.4f}",
            refresh=False,
        )
        self.bar.update(finished - self.bar.n)

    def close(self) -> None:
        self.client.unsubscribe_topic(self.topic)
        self.bar.close()


def _finished(message: dict[str, Any]) -> int:
    return int(message["done"] + message["failed"] + message["resumed"])
