"""The extraction fast path's bounds (answer size, no decompression, proxy decision, detached errors): what
they cost, measured side by side against the code before them.

    python bench/fastpath_bounds.py --before 87adf10 --after d1242c2 --rounds 6   # the README's run (5 minutes)
    python bench/fastpath_bounds.py --before REV --quick                          # against this tree

`--before` (and `--after`, else this tree) names a commit; its ``guidance_deepinfra`` is exported to a temporary
folder and put first on the client's ``PYTHONPATH``, so that each row runs that package, with the same bench
code, server and interpreter. The rows alternate in ABBA order (before, after, after, before, ...), each client
in a fresh process against a fresh server process, so that both see the same machine load and neither always
runs first.

Tables:

1. throughput: `extract()` at 200 in flight, 200 ms per answer (the first row of ``bench/extract.py``);
2. memory: `extract()` at 200 in flight, each answer a 1 MB body (the JSON answer plus 1 MB of padding the
   client must read and parse, so that the records stay small): the client's peak resident memory, and how
   far it rose above the resident memory before the batch.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...

HERE = Path(__file__).resolve()
EXTRACT = HERE.parent / "extract.py"
CONCURRENCY = 200
LATENCY = 0.2
PADDING = 1_000_000
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


# --------------------------------------------------------------------------- the 1 MB server


def serve_big(latency: float) -> None:
    """The fake server answering every request with a 1 MB completion; print its URL; answer ``stats``."""
    import re

    from guidance_deepinfra.testing import FakeDeepInfra, Reply

    pad = b"x" * PADDING
    counts = {"requests": 0}

    def responder(body: dict[str, Any]) -> Reply:
        counts["requests"] += 1
        text = next(m["content"] for m in body["messages"] if m["role"] == "user")
        match = re.search(r"name=(\w+) age=(\d+)", text)
        answer = json.dumps({"name": match.group(1), "age": int(match.group(2))}) if match else "{}"
        head = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
        }
        raw = json.dumps(head).encode()[:-1] + b', "padding": "' + pad + b'"}'
        return Reply(status=200, body=raw, headers={"content-type": "application/json"}, delay=latency)

    gc.freeze()
    with FakeDeepInfra(responder) as server:
        print(server.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps({**counts, "cpu": time.process_time()}), flush=True)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def client_memory(base_url: str, n: int) -> None:
    from guidance_deepinfra.extraction.api import extract

    options: dict[str, Any] = dict(model="bench/model", api_key="bench", base_url=base_url)
    extract([f"name=P{i} age={i}" for i in range(4)], SCHEMA, concurrency=4, **options)  # warm up
    gc.collect()
    before = resident_mb()
    start = time.perf_counter()
    results = extract([f"name=P{i} age={i}" for i in range(n)], SCHEMA, concurrency=CONCURRENCY, **options)
    wall = time.perf_counter() - start
    wrong = sum(r != {"name": f"P{i}", "age": i} for i, r in enumerate(results))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "n": n, "wrong": wrong, "before": before, "peak": peak}), flush=True)


# --------------------------------------------------------------------------- measuring


class Server:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.base_url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(10)


def export(commit: str) -> tuple[Path, str]:
    """`commit`'s package in a temporary folder (for PYTHONPATH), and the commit's short id."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=HERE.parent, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", commit, "guidance_deepinfra"], cwd=HERE.parent.parent, capture_output=True, check=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix=f"bench-before-{short}-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder, short


def run_client(argv: list[str], pythonpath: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"client failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def throughput(pythonpath: Path | None, n: int) -> dict[str, Any]:
    server = Server([sys.executable, str(EXTRACT), "serve", str(LATENCY), "0", "0", "7"])
    try:
        figures = run_client([sys.executable, str(EXTRACT), "client", "extract", server.base_url, str(n)], pythonpath)
    finally:
        server.close()
    figures["rate"] = figures["n"] / figures["wall"]
    return figures


def memory(pythonpath: Path | None, n: int) -> dict[str, Any]:
    server = Server([sys.executable, str(HERE), "serve-big", str(LATENCY)])
    try:
        figures = run_client([sys.executable, str(HERE), "client-memory", server.base_url, str(n)], pythonpath)
    finally:
        server.close()
    figures["rate"] = figures["n"] / figures["wall"]
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve-big":
        serve_big(float(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "client-memory":
        client_memory(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to measure against (its package is exported)")
    parser.add_argument("--after", default="", help="the commit measured as after (default: this tree)")
    parser.add_argument("--rounds", type=int, default=4, help="before/after pairs per table")
    parser.add_argument("--only", choices=("throughput", "memory"), help="one table only (nothing written)")
    parser.add_argument("--quick", action="store_true", help="fewer inputs, one round, nothing written")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    big, small = (1000, 400) if args.quick else (4000, 1000)
    folder, before_id = export(args.before)
    after_folder: Path | None = None
    if args.after:
        after_folder, after_id = export(args.after)
        after_label = f"after ({after_id})"
    else:
        after_id = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True
        ).stdout.strip()
        after_label = f"after (this tree, {after_id})"
    labels = {True: f"before ({before_id})", False: after_label}
    paths = {True: folder, False: after_folder}
    load_start = f"{os.getloadavg()[0]:.1f}"
    ideal = CONCURRENCY / LATENCY

    rates: dict[bool, list[float]] = {True: [float("nan")], False: [float("nan")]}
    rows: list[tuple[Any, ...]] = []
    for round_ in range(1, rounds + 1 if args.only != "memory" else 1):
        for before in (True, False) if round_ % 2 else (False, True):
            if round_ == 1 and before:
                rates = {True: [], False: []}
            figures = throughput(paths[before], big)
            rates[before].append(figures["rate"])
            rows.append(
                (
                    labels[before],
                    round_,
                    figures["n"],
                    f"{figures['rate']:.0f}",
                    f"{figures['rate'] / ideal:.2f}",
                    f"{figures['cpu'] / figures['n'] * 1000:.2f}",
                    figures["wrong"],
                )
            )
            print(" ", rows[-1], flush=True)
    columns: tuple[str, ...] = ("code", "round", "inputs", "rec/s", "ratio to ideal", "client CPU ms/rec", "wrong")
    tables = {"throughput": table(columns, rows)}
    median = {b: statistics.median(r) for b, r in rates.items()}
    ratio = median[False] / median[True]

    peaks: dict[bool, list[float]] = {True: [float("nan")], False: [float("nan")]}
    rows = []
    for round_ in range(1, rounds + 1 if args.only != "throughput" else 1):
        for before in (True, False) if round_ % 2 else (False, True):
            if round_ == 1 and before:
                peaks = {True: [], False: []}
            figures = memory(paths[before], small)
            peaks[before].append(figures["peak"] - figures["before"])
            rows.append(
                (
                    labels[before],
                    round_,
                    figures["n"],
                    f"{figures['rate']:.0f}",
                    f"{figures['before']:.0f}",
                    f"{figures['peak']:.0f}",
                    f"{figures['peak'] - figures['before']:.0f}",
                    figures["wrong"],
                )
            )
            print(" ", rows[-1], flush=True)
    columns = ("code", "round", "inputs", "rec/s", "RSS before MB", "peak RSS MB", "rise MB", "wrong")
    tables["memory"] = table(columns, rows)

    print(f"\n1. extract() at {CONCURRENCY} in flight, {LATENCY * 1000:.0f} ms per answer:\n")
    print(markdown(tables["throughput"]))
    print(f"\nmedian rec/s: before {median[True]:.0f}, after {median[False]:.0f} (after/before {ratio:.2f})")
    print(f"\n2. extract() at {CONCURRENCY} in flight, 1 MB answers:\n")
    print(markdown(tables["memory"]))
    if args.quick or args.only:
        return
    figures_out = {
        "before": before_id,
        "after": after_id,
        "median_before": f"{median[True]:.0f}",
        "median_after": f"{median[False]:.0f}",
        "ratio": f"{ratio:.2f}",
        "rise_before": f"{statistics.median(peaks[True]):.0f}",
        "rise_after": f"{statistics.median(peaks[False]):.0f}",
        "load_start": load_start,
        "load_end": f"{os.getloadavg()[0]:.1f}",
        "cores": str(os.cpu_count()),
    }
    write_results("fastpath_bounds", tables, figures=figures_out)


if __name__ == "__main__":
    main()
