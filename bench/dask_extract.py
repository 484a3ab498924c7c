"""Extraction in one process against extraction on Dask (8 shards, 2 and 4 single-thread workers).

The fake server runs in its own process and answers each request after 200 ms, so the ideal rate is
``budget / 0.2`` records per second; it counts the requests in flight and reports their peak. Each row
extracts the same JSONL file into a fresh output: ``extract()`` at ``concurrency=budget`` reading the file,
and ``extract_on_dask(..., shards=8, budget=budget)`` on a LocalCluster started before the clock starts.
Rows: records/s, its ratio to the ideal, to the one-process row, and the peak in flight at the server.

Usage: ``python bench/dask_extract.py [--inputs 4000] [--budget 200] [--latency 0.2]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import table, write_results  # noqa: E402 - bench/ is not a package

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def serve(latency: float) -> None:
    """The fake server: print its base URL; on ``stats`` print and reset the peak in flight and requests."""
    import gc

    from guidance_deepinfra.testing import FakeDeepInfra, Reply

    def responder(body: dict[str, Any]) -> Reply:
        return Reply.text(json.dumps({"name": "P", "age": 1}), delay=latency, prompt_tokens=40, completion_tokens=12)

    gc.freeze()
    with FakeDeepInfra(responder) as server:
        print(server.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps({"peak": server.max_active, "requests": len(server.requests)}), flush=True)
                server.max_active = 0
                server.requests.clear()


class Server:
    def __init__(self, latency: float) -> None:
        argv = [sys.executable, __file__, "serve", str(latency)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.base_url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]

    def stats(self) -> dict[str, Any]:
        self.proc.stdin.write("stats\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(10)


def one_process(inputs: Path, out: Path, base_url: str, budget: int) -> int:
    from guidance_deepinfra import extract
    from guidance_deepinfra.extraction.inputs import read_inputs

    results = extract(
        read_inputs(inputs), SCHEMA, model="bench/model", base_url=base_url, api_key="sk-bench",
        concurrency=budget, output=out / "one.jsonl", logprobs=False,
    )  # fmt: skip
    return sum(1 for r in results if r)


def on_dask(client: Any, inputs: Path, out: Path, base_url: str, budget: int) -> int:
    from guidance_deepinfra.extract_dask import extract_on_dask

    summary = extract_on_dask(
        client, inputs, SCHEMA, out, shards=8, budget=budget,
        model="bench/model", base_url=base_url, api_key="sk-bench", logprobs=False,
    )  # fmt: skip
    return int(summary["done"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=4000)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    import distributed

    server = Server(args.latency)
    ideal = args.budget / args.latency
    rows: list[list[str]] = []
    figures: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            inputs = Path(tmp) / "in.jsonl"
            inputs.write_text(
                "".join(json.dumps({"id": f"r{i}", "text": f"name=P{i} age={i}"}) + "\n" for i in range(args.inputs))
            )
            measured: list[tuple[str, float, int, int]] = []
            server.stats()
            start = time.perf_counter()
            done = one_process(inputs, Path(tmp), server.base_url, args.budget)
            measured.append(("one process, extract()", time.perf_counter() - start, done, server.stats()["peak"]))
            for workers in (2, 4):
                cluster = distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
                )
                client = distributed.Client(cluster)
                try:
                    client.run(lambda: __import__("guidance_deepinfra.extraction.api"))  # imports before the clock
                    out = Path(tmp) / f"dask-{workers}"
                    start = time.perf_counter()
                    done = on_dask(client, inputs, out, server.base_url, args.budget)
                    elapsed = time.perf_counter() - start
                    measured.append((f"Dask, {workers} workers, 8 shards", elapsed, done, server.stats()["peak"]))
                finally:
                    client.close()
                    cluster.close()
    finally:
        server.close()
    baseline = args.inputs / measured[0][1]
    for name, elapsed, done, peak in measured:
        rate = args.inputs / elapsed
        rows.append(
            [name, str(done), f"{rate:.0f}", f"{rate / ideal:.2f}", f"{rate / baseline:.2f}", f"{peak} / {args.budget}"]
        )
        key = name.split(",")[0].replace(" ", "_") + ("" if "workers" not in name else f"_{name.split()[1]}")
        figures[f"{key}_ratio"] = f"{rate / ideal:.2f}"
    header = ["run", "records", "rec/s", "ratio to ideal", "ratio to one process", "peak in flight / budget"]
    for row in [header, *rows]:
        print(" | ".join(row))
    write_results("dask_extract", {"runs": table(header, rows)}, figures=figures)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(float(sys.argv[2]))
    else:
        main()
