"""Per-call overhead: the raw openai SDK against guidance.models.OpenAI and guidance_deepinfra.DeepInfra.

Every backend streams the same scripted answer from a loopback server in one run, one token per streamed
chunk, interleaved call by call so that the machine's noise hits them alike. Four calls are measured: a plain
``gen()`` answering 20 and 200 tokens, a ``json(schema=...)`` and a ``select`` over four options. The raw SDK
does what a careful caller needs for the same guarantee: it streams the same request (``response_format``
for json and select), joins the text and, for json and select, parses it and checks it against the schema
(a validator built once) or the options. guidance's own OpenAI backend has no ``select``.

The server is the package's ``FakeDeepInfra`` by default, or ``--server independent``: a server written
here on the standard library's ``http.server`` (threads, TCP_NODELAY on every connection) that shares no code
with the package, to show the figures are the client's.

Prints the median wall time per call and the ratio to the raw SDK in the same run. With ``--quick`` (40 calls,
for ``.ci/run``) it writes no results file and exits 1 when a DeepInfra row is above ``--max-ratio`` (2.0).
Usage: python bench/overhead.py [--calls 200] [--server fake|independent] [--quick] [--max-ratio 2.0]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import openai
from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...
from guidance import assistant, gen, models, select, user
from guidance import json as guidance_json

from guidance_deepinfra import DeepInfra
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

TOKEN = "fox "  # one streamed chunk per token, as DeepInfra streams
PLAIN_SHORT = TOKEN * 20
PLAIN_LONG = TOKEN * 200
SCHEMA = {
    "type": "object",
    "properties": {
        "team": {"enum": ["billing", "technical", "sales", "other"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string", "maxLength": 200},
        "urgent": {"type": "boolean"},
    },
    "required": ["team", "priority", "summary", "urgent"],
    "additionalProperties": False,
}
JSON_ANSWER = json.dumps({"team": "technical", "priority": 2, "summary": "Router drops at night.", "urgent": False})
OPTIONS = ["billing", "technical", "sales", "other"]
SELECT_ANSWER = json.dumps("technical")
MESSAGES = [{"role": "user", "content": "Say it."}]


def answer_for(body: dict[str, Any]) -> str:
    """The scripted answer to a request, chosen from what it asks for (the same for every backend)."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return SELECT_ANSWER if response_format["json_schema"]["schema"].get("type") == "string" else JSON_ANSWER
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return PLAIN_LONG if limit > 100 else PLAIN_SHORT


# ------------------------------------------------------------------ the independent server


def _sse(answer: str) -> Iterator[bytes]:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    yield f"data: {json.dumps(first)}\n\n".encode()
    for i in range(0, len(answer), len(TOKEN)):
        delta = {"index": 0, "delta": {"content": answer[i : i + len(TOKEN)]}, "finish_reason": None}
        yield f"data: {json.dumps({**base, 'choices': [delta]})}\n\n".encode()
    usage = {"prompt_tokens": 10, "completion_tokens": len(answer) // 4, "total_tokens": 10 + len(answer) // 4}
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
    yield f"data: {json.dumps(last)}\n\n".encode()
    yield b"data: [DONE]\n\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in _sse(answer_for(body)):
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client closing its idle keep-alive connection at the end of the run


@contextmanager
def server(kind: str) -> Iterator[str]:
    """The base URL of a running server of that kind."""
    if kind == "fake":
        with FakeDeepInfra(lambda body: Reply.text(answer_for(body), chunk_size=len(TOKEN))) as fake:
            yield fake.base_url
        return
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/openai"
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------ the callers


def raw_calls(client: openai.OpenAI) -> dict[str, Callable[[], None]]:
    validator = jsonschema.Draft202012Validator(SCHEMA)

    def stream(**extra: Any) -> str:
        chunks = client.chat.completions.create(model="bench/model", messages=MESSAGES, stream=True, **extra)  # type: ignore[call-overload]
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    def schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}

    def plain(tokens: int, expected: str) -> Callable[[], None]:
        def run() -> None:
            assert stream(max_tokens=tokens + 10) == expected

        return run

    def as_json() -> None:
        value = json.loads(stream(response_format=schema_format("response", SCHEMA)))
        validator.validate(value)

    def as_select() -> None:
        value = json.loads(stream(response_format=schema_format("select", {"type": "string", "enum": OPTIONS})))
        assert value in OPTIONS

    return {
        "plain_20": plain(20, PLAIN_SHORT),
        "plain_200": plain(200, PLAIN_LONG),
        "json": as_json,
        "select": as_select,
    }


def program_calls(base: Any, *, has_select: bool) -> dict[str, Callable[[], None]]:
    def program(node: Any, name: str, check: Callable[[Any], bool]) -> Callable[[], None]:
        def run() -> None:
            lm = base
            with user():
                lm += "Say it."
            with assistant():
                lm += node
            assert check(lm[name])

        return run

    calls = {
        "plain_20": program(gen("out", max_tokens=30), "out", lambda v: v == PLAIN_SHORT),
        "plain_200": program(gen("out", max_tokens=210), "out", lambda v: v == PLAIN_LONG),
        "json": program(guidance_json("out", schema=SCHEMA), "out", lambda v: json.loads(v)["team"] == "technical"),
    }
    if has_select:
        calls["select"] = program(select(OPTIONS, name="out"), "out", lambda v: v == "technical")
    return calls


CALLS = {
    "plain_20": "plain `gen()`, 20 tokens",
    "plain_200": "plain `gen()`, 200 tokens",
    "json": "`json(schema=...)`, 4 fields",
    "select": "`select`, 4 options",
}
BACKENDS = ("raw openai SDK", "`guidance.models.OpenAI`", "`guidance_deepinfra.DeepInfra`")


def measure(base_url: str, calls: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per call, by call kind and backend, interleaved call by call."""
    client = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=0)
    guidance_openai = models.OpenAI("gpt-4o-mini", api_key="bench", base_url=base_url, echo=False)
    deepinfra = DeepInfra("bench/model", api_key="bench", base_url=base_url, echo=False, profiles=ProfileRegistry())
    runners = {
        BACKENDS[0]: raw_calls(client),
        BACKENDS[1]: program_calls(guidance_openai, has_select=False),
        BACKENDS[2]: program_calls(deepinfra, has_select=True),
    }
    times: dict[str, dict[str, list[float]]] = {kind: {} for kind in CALLS}
    for kind in CALLS:
        mine = {backend: calls_of[kind] for backend, calls_of in runners.items() if kind in calls_of}
        for run in mine.values():  # warm up: connections, imports, compiled schemas
            for _ in range(5):
                run()
        times[kind] = {backend: [] for backend in mine}
        for _ in range(calls):
            for backend, run in mine.items():
                started = time.perf_counter()
                run()
                times[kind][backend].append(time.perf_counter() - started)
    return times


def rows(times: dict[str, dict[str, list[float]]]) -> tuple[list[list[str]], dict[str, str]]:
    """The table's rows, and DeepInfra's ratio to the raw SDK per call kind."""
    found, ratios = [], {}
    for kind, by_backend in times.items():
        raw = statistics.median(by_backend[BACKENDS[0]])
        for backend, values in by_backend.items():
            median = statistics.median(values)
            found.append([CALLS[kind], backend, f"{median * 1000:.2f}", f"{median / raw:.2f}"])
            if backend == BACKENDS[2]:
                ratios[kind] = f"{median / raw:.2f}"
    return found, ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=None, help="calls per backend and kind (200; 40 with --quick)")
    parser.add_argument("--server", choices=("fake", "independent"), default="fake")
    parser.add_argument("--quick", action="store_true", help="40 calls, no results file, a ratio bound")
    parser.add_argument("--max-ratio", type=float, default=2.0, help="with --quick: DeepInfra's bound")
    args = parser.parse_args(argv)
    calls = args.calls or (40 if args.quick else 200)
    load_before = os.getloadavg()[0]
    with server(args.server) as base_url:
        times = measure(base_url, calls)
    found, ratios = rows(times)
    result = table(["call", "backend", "median ms/call", "ratio to raw SDK"], found)
    print(f"{calls} calls per backend and kind, interleaved, on the {args.server} server; one token per chunk")
    print(markdown(result))
    if args.quick:
        over = {kind: ratio for kind, ratio in ratios.items() if float(ratio) > args.max_ratio}
        if over:
            print(f"FAILED: DeepInfra above {args.max_ratio}x the raw SDK: {over}", file=sys.stderr)
            return 1
        print(f"ok: every DeepInfra ratio is at most {args.max_ratio}x")
        return 0
    name = "overhead" if args.server == "fake" else "overhead_independent"
    figures = {f"deepinfra_{kind}": ratio for kind, ratio in ratios.items()}
    figures["load_before"] = f"{load_before:.2f}"
    figures["load_after"] = f"{os.getloadavg()[0]:.2f}"
    write_results(name, {"per_call": result}, figures=figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
