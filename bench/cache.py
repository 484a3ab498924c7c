"""The request cache against the fake server: a hit beside a live call, and extraction with the cache on and off.

    python bench/cache.py            # both tables (about three minutes)
    python bench/cache.py --quick    # fewer calls and inputs

The fake server runs in a process of its own (`bench/extract.py`'s), so the client's figures are its own.

1. Per call, one plain ``gen()`` through `DeepInfra`, answered at once: without a cache (live), with a cache
   that does not hold the answer (live, then stored: a miss) and with one that does (replayed: a hit). The
   three run in turns, a round of each after the other, in one process; the table gives the median of the
   rounds' milliseconds per call.
2. `extract()` on the fast path at 200 in flight, 200 ms per answer: the cache off, on and empty (every request
   a miss, its answer stored), and on and full (every request a hit: the same inputs again into a new
   output). Each run is a fresh client process; the three run in turns, for several rounds, and the table
   gives the median records per second and the median over rounds of each run's ratio to the same round's
   run without a cache (the machine's load drifts between rounds). The cache must not cost more than 5% of
   the throughput on misses.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...
from extract import CONCURRENCY, SCHEMA, Server, machine, texts

MODES = ("off", "miss", "hit")


def per_call(base_url: str, calls: int, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per plain gen() call in each mode, one figure per round."""
    from guidance import assistant, gen, user

    from guidance_deepinfra import DeepInfra

    folder = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    options: dict[str, Any] = dict(api_key="bench", base_url=base_url, echo=False, logprobs=False)

    def run(lm: DeepInfra, prompts: list[str]) -> float:
        start = time.perf_counter()
        for prompt in prompts:
            s = lm
            with user():
                s += prompt
            with assistant():
                s += gen("c", max_tokens=16)
        return (time.perf_counter() - start) / len(prompts) * 1000

    run(DeepInfra("bench/model", **options), [f"warm-up {i}" for i in range(20)])
    found: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        prompts = [f"Round {r}, question {i}: name a colour." for i in range(calls)]
        path = folder / f"round-{r}.sqlite3"
        found["off"].append(run(DeepInfra("bench/model", **options), prompts))
        found["miss"].append(run(DeepInfra("bench/model", cache=path, **options), prompts))
        found["hit"].append(run(DeepInfra("bench/model", cache=path, **options), prompts))
    return found


def client(mode: str, base_url: str, n: int, cache: str) -> None:
    """One extraction run (a process of its own); prints wall time, CPU and results checked."""
    from guidance_deepinfra.extraction.api import extract

    options: dict[str, Any] = dict(model="bench/model", api_key="bench", base_url=base_url)
    if mode != "off":
        options["cache"] = cache
    extract(texts(4), SCHEMA, concurrency=4, **{**options, "cache": False})  # warm up, outside the cache
    start = time.perf_counter(), time.process_time()
    results = extract(texts(n), SCHEMA, concurrency=CONCURRENCY, **options)
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    wrong = sum(r != {"name": f"P{i}", "age": i} for i, r in enumerate(results))
    print(json.dumps({"wall": wall, "cpu": cpu, "wrong": wrong, "n": n, "cached": results.cached_calls}), flush=True)


def extraction(n: int, rounds: int, latency: float) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    folder = Path(tempfile.mkdtemp(prefix="bench-cache-extract-"))
    for r in range(rounds):
        cache = str(folder / f"round-{r}.sqlite3")
        server = Server(latency)  # one per round: the key holds the base URL, so miss and hit share the server
        try:
            for mode in MODES:  # off, then miss (fills the file), then hit (reads it)
                _, figures = _run(server, mode, n, cache)
                found[mode].append(figures)
                print(
                    f"  round {r + 1} {mode}: {figures['rate']:.0f} rec/s, {figures['requests']} requests", flush=True
                )
        finally:
            server.close()
    return found


def _run(server: Server, mode: str, n: int, cache: str) -> tuple[list[str], dict[str, Any]]:
    before = server.stats()
    argv = [sys.executable, __file__, "client", mode, server.base_url, str(n), cache]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    after = server.stats()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{mode}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    figures = json.loads(lines[-1])
    figures["rate"] = figures["n"] / figures["wall"]
    figures["requests"] = after["requests"] - before["requests"] - 4  # the warm-up's four
    return lines, figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and inputs")
    args = parser.parse_args()
    calls, call_rounds, n, rounds = (100, 3, 1000, 1) if args.quick else (300, 7, 4000, 5)
    on = machine()
    print(f"machine: {on}\n")
    load_start = f"{os.getloadavg()[0]:.1f}"
    tables: dict[str, dict[str, Any]] = {}

    server = Server(0.0)
    try:
        costs = per_call(server.base_url, calls, call_rounds)
    finally:
        server.close()
    live = statistics.median(costs["off"])
    labels = {"off": "no cache (live)", "miss": "cache miss (live, then stored)", "hit": "cache hit (replayed)"}
    rows = []
    for mode in MODES:
        median = statistics.median(costs[mode])
        spread = f"{min(costs[mode]):.2f}-{max(costs[mode]):.2f}"
        rows.append((labels[mode], calls, call_rounds, f"{median:.2f}", spread, f"{median / live:.2f}"))
    columns = ("plain gen(), answered at once", "calls per round", "rounds", "median ms/call", "range", "to live")
    tables["per_call"] = table(columns, rows)
    print(f"1. per call, {calls} calls per round, {call_rounds} rounds in turns:\n")
    print(markdown(tables["per_call"]), "\n", flush=True)

    latency = 0.2
    print(f"2. extract() at {CONCURRENCY} in flight, {latency * 1000:.0f} ms per answer, {n} inputs:\n", flush=True)
    runs = extraction(n, rounds, latency)
    labels = {
        "off": "cache off",
        "miss": "cache on, empty: every request a miss",
        "hit": "cache on, full: every request a hit",
    }
    rows = []
    for mode in MODES:
        rate = statistics.median(f["rate"] for f in runs[mode])
        spread = "-".join(f"{x:.0f}" for x in (min(f["rate"] for f in runs[mode]), max(f["rate"] for f in runs[mode])))
        cpu = statistics.median(f["cpu"] / f["n"] * 1000 for f in runs[mode])
        requests = max(f["requests"] for f in runs[mode])
        wrong = sum(f["wrong"] for f in runs[mode])
        # Each run beside the same round's run without the cache: the machine's load drifts between rounds.
        paired = statistics.median(f["rate"] / o["rate"] for f, o in zip(runs[mode], runs["off"], strict=True))
        rows.append((labels[mode], n, rounds, f"{rate:.0f}", spread, f"{paired:.2f}", f"{cpu:.2f}", requests, wrong))
    columns = ("`extract()`, fast path", "inputs", "rounds", "median rec/s", "range", "to cache off, same round")
    tables["extraction"] = table((*columns, "client CPU ms/rec", "requests sent", "wrong"), rows)
    print()
    print(markdown(tables["extraction"]))
    miss_ratio = statistics.median(f["rate"] / o["rate"] for f, o in zip(runs["miss"], runs["off"], strict=True))
    figures = {
        "machine": on,
        "load_start": load_start,
        "load_end": f"{os.getloadavg()[0]:.1f}",
        "miss_ratio": f"{miss_ratio:.2f}",
        "hit_ms": f"{statistics.median(costs['hit']):.2f}",
        "miss_ms": f"{statistics.median(costs['miss']):.2f}",
        "live_ms": f"{live:.2f}",
    }
    print(f"\nthroughput with misses: {miss_ratio:.2f} of the cache off (bound: 0.95)")
    if not args.quick:
        write_results("cache", tables, figures=figures)


if __name__ == "__main__":
    main()
