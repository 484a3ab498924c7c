"""Batch extraction against the fake server: `extract()` beside raw openai clients, 429s, a kill and a resume.

    python bench/extract.py            # every table (about five minutes)
    python bench/extract.py --quick    # fewer inputs, no 2 s row
    python bench/extract.py --python PY312 --instructor-python PY_WITH_INSTRUCTOR   # the README's run

The fake server runs in a process of its own and answers every request after a fixed latency, echoing the
input into the JSON answer so that every result can be checked; it reports its own CPU time, printed as its
share of one core during each run. Its start-up objects are frozen out of the garbage collector, whose full
passes would otherwise stop it for about 150 ms, holding back every answer due meanwhile. Each client runs
in a fresh process of its own, one after the other, so that the figures of one run are measured side by side
on the same machine: records per second, the ratio to the ideal ``concurrency / latency``, and the client's
CPU per record. Every client validates every answer with jsonschema (or pydantic, for instructor) and counts
wrong results.

Tables:

1. clients at 200 in flight, 200 ms per answer: `extract()` (fast path and guidance path), two bare aiohttp
   loops that check nothing (what any asyncio client gets on this machine: one worker per slot, and the
   common ``gather`` of one task per input behind a semaphore), raw ``openai.AsyncOpenAI`` (not
   streamed), raw ``openai.OpenAI`` on 200 threads (not streamed), and instructor (JSON_SCHEMA mode) when
   it is installed; then `extract()` at 2 s per answer;
2. 429s: 10% of answers are 429s at random, and a server that answers 429 above 40 requests in flight;
3. the real CLI with 10% of 429s, killed with SIGKILL mid-run and resumed: every record exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
CONCURRENCY = 200


# --------------------------------------------------------------------------- the server process


def serve(latency: float, rate_limited: float, cap: int, seed: int) -> None:
    """Run the fake server; print its base URL; answer ``stats`` lines on stdin with counters as JSON."""
    from guidance_deepinfra.testing import FakeDeepInfra, Reply

    rng = random.Random(seed)
    counts = {"requests": 0, "rate_limited": 0, "busy": 0}

    def responder(body: dict[str, Any]) -> Reply:
        counts["requests"] += 1
        if cap and counts["busy"] >= cap:
            counts["rate_limited"] += 1
            return Reply.error(429, {"error": {"message": "Model busy, retry later"}})
        if rng.random() < rate_limited:
            counts["rate_limited"] += 1
            return Reply.error(429, {"error": {"message": "Model busy, retry later"}}, delay=latency / 4)
        if cap:  # the answer occupies the model for `latency` (responders run on the server's event loop)
            counts["busy"] += 1
            asyncio.get_running_loop().call_later(latency, lambda: counts.__setitem__("busy", counts["busy"] - 1))
        text = next(m["content"] for m in body["messages"] if m["role"] == "user")
        match = re.search(r"name=(\w+) age=(\d+)", text)
        answer = {"name": match.group(1), "age": int(match.group(2))} if match else {"name": "?", "age": 0}
        return Reply.text(json.dumps(answer), delay=latency, prompt_tokens=40, completion_tokens=12)

    # The server process imports the package (and guidance with it): a full garbage collection would walk
    # all of that and stop the server for about 150 ms, holding back every answer due meanwhile. Frozen,
    # the collector walks only what the server allocates while it serves.
    gc.freeze()
    with FakeDeepInfra(responder) as server:
        print(server.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps({**counts, "cpu": time.process_time()}), flush=True)


class Server:
    def __init__(self, latency: float, rate_limited: float = 0.0, cap: int = 0, seed: int = 7) -> None:
        argv = [sys.executable, __file__, "serve", str(latency), str(rate_limited), str(cap), str(seed)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.base_url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]

    def stats(self) -> dict[str, Any]:
        self.proc.stdin.write("stats\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(10)


# --------------------------------------------------------------------------- the clients (one process each)


def texts(n: int) -> list[str]:
    return [f"name=P{i} age={i}" for i in range(n)]


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Extract the person as JSON."}, {"role": "user", "content": text}]


RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}


def client_extract(base_url: str, inputs: list[str], fast: bool) -> list[Any]:
    from guidance_deepinfra.extraction.api import extract

    options = dict(model="bench/model", api_key="bench", base_url=base_url, fast=fast)
    extract(texts(4), SCHEMA, concurrency=4, **options)  # warm up (imports, first connections)
    start = time.perf_counter(), time.process_time()
    results = extract(inputs, SCHEMA, concurrency=CONCURRENCY, **options)
    report(start, list(results))
    return list(results)


def client_async_openai(base_url: str, inputs: list[str]) -> None:
    import jsonschema
    import openai

    validator = jsonschema.Draft202012Validator(SCHEMA)
    client = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=3)

    async def one(text: str, gate: asyncio.Semaphore) -> Any:
        async with gate:
            reply = await client.chat.completions.create(
                model="bench/model",
                messages=messages(text),
                response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
            )
        value = json.loads(reply.choices[0].message.content or "")
        validator.validate(value)
        return value

    async def run(batch: list[str]) -> list[Any]:
        gate = asyncio.Semaphore(CONCURRENCY)
        return await asyncio.gather(*(one(text, gate) for text in batch))

    async def main() -> None:
        await run(texts(4))
        start = time.perf_counter(), time.process_time()
        report(start, await run(inputs))

    asyncio.run(main())


def client_threaded_openai(base_url: str, inputs: list[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import jsonschema
    import openai

    from guidance_deepinfra.transport.client import _httpx_module

    httpx = _httpx_module()  # the HTTP library the installed SDK is built on
    validator = jsonschema.Draft202012Validator(SCHEMA)
    limits = httpx.Limits(max_connections=CONCURRENCY + 8, max_keepalive_connections=CONCURRENCY + 8)
    http = openai.DefaultHttpxClient(limits=limits)
    client = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=3, http_client=http)

    def one(text: str) -> Any:
        reply = client.chat.completions.create(
            model="bench/model",
            messages=messages(text),
            response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
        )
        value = json.loads(reply.choices[0].message.content or "")
        validator.validate(value)
        return value

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, texts(4)))
        start = time.perf_counter(), time.process_time()
        report(start, list(pool.map(one, inputs)))


def client_instructor(base_url: str, inputs: list[str]) -> None:
    import instructor
    import openai
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    client = instructor.from_openai(
        openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=3), mode=instructor.Mode.JSON_SCHEMA
    )

    async def one(text: str, gate: asyncio.Semaphore) -> Any:
        async with gate:
            person = await client.chat.completions.create(
                model="bench/model",
                messages=messages(text),
                response_model=Person,  # type: ignore[arg-type]
            )
        return person.model_dump()

    async def run(batch: list[str]) -> list[Any]:
        gate = asyncio.Semaphore(CONCURRENCY)
        return await asyncio.gather(*(one(text, gate) for text in batch))

    async def main() -> None:
        await run(texts(4))
        start = time.perf_counter(), time.process_time()
        report(start, await run(inputs))

    asyncio.run(main())


def client_bare_aiohttp(base_url: str, inputs: list[str]) -> None:
    """No SDK, no checks: one POST per input and ``json.loads`` of the answer, the floor of any asyncio client."""
    import aiohttp

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY + 8)
        async with aiohttp.ClientSession(connector=connector) as session:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(text: str) -> Any:
                body = {"model": "bench/model", "messages": messages(text), "response_format": RESPONSE_FORMAT}
                async with gate, session.post(base_url + "/chat/completions", json=body) as response:
                    reply = await response.json()
                return json.loads(reply["choices"][0]["message"]["content"])

            await asyncio.gather(*(one(text) for text in texts(4)))
            start = time.perf_counter(), time.process_time()
            report(start, await asyncio.gather(*(one(text) for text in inputs)))

    asyncio.run(main())


def client_bare_aiohttp_workers(base_url: str, inputs: list[str]) -> None:
    """The same bare loop with one worker per slot: an answered worker sends its next request at once."""
    import aiohttp

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY + 8)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def run(batch: list[str]) -> list[Any]:
                results: list[Any] = [None] * len(batch)
                todo = iter(enumerate(batch))

                async def worker() -> None:
                    for index, text in todo:
                        body = {"model": "bench/model", "messages": messages(text), "response_format": RESPONSE_FORMAT}
                        async with session.post(base_url + "/chat/completions", json=body) as response:
                            reply = await response.json()
                        results[index] = json.loads(reply["choices"][0]["message"]["content"])

                await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
                return results

            await run(texts(4))
            start = time.perf_counter(), time.process_time()
            report(start, await run(inputs))

    asyncio.run(main())


def report(start: tuple[float, float], results: list[Any]) -> None:
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    wrong = sum(r != {"name": f"P{i}", "age": i} for i, r in enumerate(results))
    print(json.dumps({"wall": wall, "cpu": cpu, "wrong": wrong, "n": len(results)}), flush=True)


def client(name: str, base_url: str, n: int) -> None:
    inputs = texts(n)
    if name == "extract":
        client_extract(base_url, inputs, fast=True)
    elif name == "extract-guidance":
        client_extract(base_url, inputs, fast=False)
    elif name == "async-openai":
        client_async_openai(base_url, inputs)
    elif name == "threaded-openai":
        client_threaded_openai(base_url, inputs)
    elif name == "instructor":
        client_instructor(base_url, inputs)
    elif name == "bare-aiohttp":
        client_bare_aiohttp(base_url, inputs)
    elif name == "bare-aiohttp-workers":
        client_bare_aiohttp_workers(base_url, inputs)
    else:
        raise SystemExit(f"unknown client {name}")


# --------------------------------------------------------------------------- measuring


LABELS = {
    "extract": "`extract()` (fast path: aiohttp, not streamed)",
    "extract-guidance": "`extract(fast=False)` (guidance program, streamed)",
    "async-openai": "raw `openai.AsyncOpenAI`, not streamed",
    "threaded-openai": "raw `openai.OpenAI` + 200 threads, not streamed",
    "instructor": "instructor (AsyncOpenAI, JSON_SCHEMA mode)",
    "bare-aiohttp": "reference: bare aiohttp, no checks, gather + semaphore",
    "bare-aiohttp-workers": "reference: bare aiohttp, no checks, one worker per slot",
}


def measure(name: str, latency: float, n: int, python: str = "", **server_options: Any) -> dict[str, Any]:
    """Run client `name` over `n` inputs against a fresh server; the client's and the server's figures.

    `python` runs the client on another interpreter (whose environment has the package installed); the
    server always runs on this one, so that rows differ only by the client.
    """
    server = Server(latency, **server_options)
    try:
        before = server.stats()
        argv = [python or sys.executable, __file__, "client", name, server.base_url, str(n)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        after = server.stats()
    finally:
        server.close()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"name": name, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    figures = json.loads(lines[-1])
    figures["rate"] = figures["n"] / figures["wall"]
    figures["server_cpu"] = (after["cpu"] - before["cpu"]) / figures["wall"]  # includes the warm-up: an upper bound
    figures["rate_limited"] = after["rate_limited"] - before["rate_limited"]
    figures["requests"] = after["requests"] - before["requests"]
    figures["name"] = name
    if python:
        probe = "import platform; from importlib.metadata import version as v; "
        probe += "print(platform.python_version(), v('openai'), v('instructor') if NAME == 'instructor' else '')"
        probe = probe.replace("NAME", repr(name))
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.split()
        if name == "instructor" and len(found) == 3:
            where = f"in its own environment (Python {found[0]}, instructor {found[2]}, openai {found[1]})"
        else:
            where = f"client on Python {found[0] if found else '?'}"
        figures["name"] = f"{LABELS.get(name, name)}, {where}"
    return figures


def row(figures: dict[str, Any], ideal: float, latency: float, baseline: float | None = None) -> tuple[Any, ...]:
    label = LABELS.get(figures["name"], figures["name"])
    if "error" in figures:
        return (label, f"{latency * 1000:.0f}", "-", "-", "-", "-", "-", figures["error"][:60])
    cells: tuple[Any, ...] = (
        label,
        f"{latency * 1000:.0f}",
        figures["n"],
        f"{figures['rate']:.0f}",
        f"{figures['rate'] / ideal:.2f}",
        f"{figures['cpu'] / figures['n'] * 1000:.2f}",
        f"{figures['server_cpu']:.0%}",
        figures["wrong"],
    )
    if baseline is not None:
        cells += (f"{figures['rate'] / baseline:.2f}", f"{figures['rate_limited']}/{figures['requests']}")
    return cells


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- part 3: 429s and a kill


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


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, load average {load:.1f} at start"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs, no 2 s row")
    parser.add_argument("--only", default="", help="run only these tables, e.g. 1,2")
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        help="also run table 1's extract() and bare worker rows with their client on this interpreter (its "
        "environment must have the package installed); repeatable",
    )
    parser.add_argument(
        "--instructor-python",
        default="",
        help="run the instructor row on this interpreter (an environment with instructor installed) when the "
        "bench's own environment lacks it",
    )
    args = parser.parse_args()
    parts = set(args.only.split(",")) if args.only else {"1", "2", "3"}
    big, small = (1000, 500) if args.quick else (4000, 2000)
    on = machine()
    print(f"machine: {on}\n")
    tables: dict[str, dict[str, Any]] = {}
    load_start = f"{os.getloadavg()[0]:.1f}"
    header = ("client", "latency ms", "inputs", "rec/s", "ratio to ideal", "client CPU ms/rec", "server CPU", "wrong")
    if "1" in parts:
        latency = 0.2
        ideal = CONCURRENCY / latency
        rows = []
        clients = [("extract", big), ("bare-aiohttp-workers", big), ("bare-aiohttp", big), ("async-openai", big)]
        clients.append(("threaded-openai", small))
        clients.append(("extract-guidance", small))
        if installed("instructor"):
            clients.append(("instructor", small))
        elif args.instructor_python:
            clients.append((f"instructor@{args.instructor_python}", small))
        else:
            clients.append(("instructor (not installed)", 0))
        clients += [(f"{name}@{python}", big) for python in args.python for name in ("extract", "bare-aiohttp-workers")]
        for name, n in clients:
            name, _, python = name.partition("@")
            figures = measure(name, latency, n, python) if n else {"name": name, "error": "not installed"}
            rows.append(row(figures, ideal, latency))
            print(" ", rows[-1], flush=True)
        if not args.quick:
            figures = measure("extract", 2.0, big)
            rows.append(row(figures, CONCURRENCY / 2.0, 2.0))
        print(f"\n1. {CONCURRENCY} in flight, ideal = {CONCURRENCY} / latency (one client process each):\n")
        tables["clients"] = table(header, rows)
        print(markdown(tables["clients"]))
        print()
    if "2" in parts:
        latency = 0.2
        ideal = CONCURRENCY / latency
        plain = measure("extract", latency, big)
        random429 = measure("extract", latency, big, rate_limited=0.10)
        capped = measure("extract", latency, small, cap=40)
        rows = [
            ("none (the reference)", *row(plain, ideal, latency, plain["rate"])[2:]),
            ("10% of answers are 429s, at random", *row(random429, ideal, latency, plain["rate"])[2:]),
            (
                "server answering 429 above 40 in flight (reference: its ideal, 200 rec/s)",
                *row(capped, 40 / latency, latency, 40 / latency)[2:],
            ),
        ]
        print(f"2. extract() at concurrency {CONCURRENCY}, {latency * 1000:.0f} ms per answer, with 429s:\n")
        columns = [f"429s, `extract()` at {CONCURRENCY} in flight, {latency * 1000:.0f} ms", "inputs", "rec/s"]
        columns += ["ratio to ideal", "client CPU ms/rec", "server CPU", "wrong", "ratio to reference"]
        tables["rate_limits"] = table([*columns, "429s/requests"], rows)
        print(markdown(tables["rate_limits"]))
        print("\n(reference: the run without 429s; for the capped server, its ideal 40 / latency)\n")
    if "3" in parts:
        n, level = (400, 32) if args.quick else (2000, 200)
        print(f"3. the CLI with 10% 429s, SIGKILL at ~40% and resume (200 ms per answer, concurrency {level}):\n")
        rows3, summary = kill_and_resume(n, level, 0.2)
        tables["kill_resume"] = table(("measure", "value"), rows3)
        print(markdown(tables["kill_resume"]))
        print("\nresumed run's own report:", *summary, sep="\n  ")
    if args.quick or args.only:
        return  # the README's tables come from one full run
    figures = {"machine": on, "load_start": load_start, "load_end": f"{os.getloadavg()[0]:.1f}"}
    write_results("extract", tables, figures=figures)


if __name__ == "__main__":
    main()
