"""Batch extraction against the fake server: throughput per concurrency level, and 429s plus a SIGKILL.

    python bench/extract.py            # prints both tables (about a minute)
    python bench/extract.py --quick    # fewer levels and inputs

The fake server runs in its own process (so its work does not share the client's interpreter lock) and
answers every request after a fixed latency, echoing the input into the JSON answer so every result can
be checked. Throughput is printed as a ratio to the ideal ``concurrency / latency``. The second part runs
the real CLI with 10% of answers being 429s, kills it with SIGKILL mid-run, resumes it, and checks that
every record is present exactly once and correct.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


# --------------------------------------------------------------------------- the server process


def serve(latency: float, rate_limited: float, seed: int) -> None:
    """Run the fake server; print its base URL; answer ``stats`` lines on stdin with counters as JSON."""
    from guidance_deepinfra.testing import FakeDeepInfra, Reply

    rng = random.Random(seed)
    lock = threading.Lock()
    counts = {"requests": 0, "rate_limited": 0}

    def responder(body: dict[str, Any]) -> Reply:
        with lock:
            counts["requests"] += 1
            busy = rng.random() < rate_limited
            counts["rate_limited"] += busy
        if busy:
            return Reply.error(429, {"error": {"message": "Model busy, retry later"}}, delay=latency / 4)
        text = next(m["content"] for m in body["messages"] if m["role"] == "user")
        match = re.search(r"name=(\w+) age=(\d+)", text)
        answer = {"name": match.group(1), "age": int(match.group(2))} if match else {"name": "?", "age": 0}
        return Reply.text(json.dumps(answer), delay=latency, prompt_tokens=40, completion_tokens=12)

    with FakeDeepInfra(responder) as server:
        server._server.request_queue_size = 512  # accept bursts of 200 connections
        print(server.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                with lock:
                    print(json.dumps(counts), flush=True)


class Server:
    def __init__(self, latency: float, rate_limited: float = 0.0, seed: int = 7) -> None:
        argv = [sys.executable, __file__, "serve", str(latency), str(rate_limited), str(seed)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.base_url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]

    def stats(self) -> dict[str, int]:
        self.proc.stdin.write("stats\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(10)


# --------------------------------------------------------------------------- part 1: throughput


def texts(n: int) -> list[str]:
    return [f"name=P{i} age={i}" for i in range(n)]


def throughput(levels: list[int], latency: float, per_slot: int) -> list[tuple[Any, ...]]:
    from guidance_deepinfra.extract import extract

    server = Server(latency)
    rows = []
    try:
        extract(texts(4), SCHEMA, model="bench/model", api_key="bench", base_url=server.base_url)  # warm up
        for level in levels:
            n = max(40, per_slot * level)
            start, cpu_start = time.perf_counter(), time.process_time()
            results = extract(
                texts(n), SCHEMA, model="bench/model", api_key="bench", base_url=server.base_url, concurrency=level
            )
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            wrong = sum(r != {"name": f"P{i}", "age": i} for i, r in enumerate(results))
            ideal = level / latency
            rows.append(
                (
                    level,
                    n,
                    f"{elapsed:.2f}",
                    f"{n / elapsed:.1f}",
                    f"{ideal:.1f}",
                    f"{n / elapsed / ideal:.2f}",
                    f"{cpu / elapsed:.0%}",
                    f"{cpu / n * 1000:.1f}",
                    wrong,
                )  # fmt: skip
            )
    finally:
        server.close()
    return rows


# --------------------------------------------------------------------------- part 2: 429s and a kill


def cli(folder: Path, base_url: str, concurrency: int) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "guidance_deepinfra.cli", "extract", "--schema", str(folder / "schema.json"),
        "--input", str(folder / "in.jsonl"), "--output", str(folder / "out.jsonl"), "--base-url", base_url,
        "--model", "bench/model", "--concurrency", str(concurrency), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "DEEPINFRA_API_KEY": "bench"}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_and_resume(n: int, concurrency: int, latency: float) -> tuple[list[tuple[str, Any]], list[str]]:
    folder = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    (folder / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    lines = [json.dumps({"id": f"r{i}", "text": f"name=P{i} age={i}"}) for i in range(n)]
    (folder / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = folder / "out.jsonl"
    server = Server(latency, rate_limited=0.10)
    try:
        start = time.perf_counter()
        first = cli(folder, server.base_url, concurrency)
        while first.poll() is None and (not out.exists() or out.read_bytes().count(b"\n") < n * 2 // 5):
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        data = out.read_bytes()
        at_kill = data.count(b"\n")
        torn = len(data) - (data.rfind(b"\n") + 1)
        before = server.stats()
        second = cli(folder, server.base_url, concurrency)
        _, stderr = second.communicate()
        total = time.perf_counter() - start
        after = server.stats()
    finally:
        server.close()
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids = [r["id"] for r in records]
    wrong = sum(r["result"] != {"name": f"P{r['id'][1:]}", "age": int(r["id"][1:])} for r in records)
    summary = [line for line in stderr.splitlines() if line.startswith("extract: ")]
    return [
        ("inputs", n),
        ("concurrency", concurrency),
        ("first run killed (SIGKILL) with records written", at_kill),
        ("torn bytes at kill", torn),
        ("second run exit code", second.returncode),
        ("requests (both runs)", after["requests"]),
        ("429 answers (both runs)", f"{after['rate_limited']} ({after['rate_limited'] / after['requests']:.1%})"),
        ("requests sent by the resumed run", after["requests"] - before["requests"]),
        ("records in output", len(records)),
        ("distinct ids", len(set(ids))),
        ("missing ids", n - len(set(ids))),
        ("duplicate records", len(ids) - len(set(ids))),
        ("wrong results", wrong),
        ("wall time incl. two process starts (s)", f"{total:.1f}"),
    ], summary


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """A plain-text table: numbers right-aligned, text left-aligned."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]

    def cell(value: Any, width: int) -> str:
        text = str(value)
        return text.rjust(width) if re.fullmatch(r"[-\d.%() ]+", text) else text.ljust(width)

    def line(row: tuple[Any, ...]) -> str:
        return "  ".join(cell(x, w) for x, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    levels = [1, 8, 32] if args.quick else [1, 8, 32, 64, 128, 200]
    rows = throughput(levels, args.latency, per_slot=3 if args.quick else 5)
    print(f"Throughput against the fake server, {args.latency * 1000:.0f} ms per answer (one client process):")
    print(
        table(
            ("concurrency", "inputs", "seconds", "rec/s", "ideal rec/s", "ratio", "client CPU", "CPU ms/rec", "wrong"),
            rows,
        )
    )
    print()
    n, level = (200, 16) if args.quick else (600, 64)
    print(f"10% 429s, SIGKILL at ~40% and resume ({args.latency * 1000:.0f} ms per answer, CLI subprocesses):")
    rows, summary = kill_and_resume(n, level, args.latency)
    print(table(("measure", "value"), rows))
    print("resumed run's own report:", *summary, sep="\n  ")


if __name__ == "__main__":
    main()
