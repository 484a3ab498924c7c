"""Client stop scanning on a long reply: a literal stop against stop_regex, side by side in one run.

The fake server streams the same 100,000-character reply for every row, with the stop only at its very end,
and ignores the request's ``stop`` (as a model overrunning it would), so every row scans the whole reply on
the client. Rows are interleaved round by round so machine noise hits them alike. Prints, per row, the
median wall time and client CPU of one ``gen`` call, the ratio to the literal stop, and the time the stop
scanner alone spends on the reply. Usage: python bench/stops.py [--rounds 5] [--chars 100000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...
from guidance import assistant, gen, user

from guidance_deepinfra import DeepInfra
from guidance_deepinfra.interpreter.stops import StopScanner, StopSpec, stop_spec_for
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

CHUNK = 8  # characters per streamed piece, about two tokens
PROSE = "The committee met on a grey morning and read the minutes of the previous session aloud. "

ROWS: dict[str, dict[str, Any]] = {
    "literal stop `END.`": {"stop": "END."},
    "`stop_regex` `E[N]D\\.`": {"stop_regex": r"E[N]D\."},
    "`stop_regex` `\\p{Lu}{3}\\.`": {"stop_regex": r"\p{Lu}{3}\."},
    "`stop_regex` `[[:alpha:]]* ?END\\.`": {"stop_regex": r"[[:alpha:]]* ?END\."},
}


def reply_text(chars: int) -> str:
    body = (PROSE * (chars // len(PROSE) + 1))[: chars - len(" END.")]
    return body + " END."


def scanner_seconds(text: str, kwargs: dict[str, Any]) -> float:
    """Time of the stop scanner alone over the reply, fed in the stream's pieces."""
    node = gen("g", **kwargs)
    spec = stop_spec_for(node.stop, node.suffix)
    assert spec is not None
    pieces = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]
    t0 = time.perf_counter()
    scanner = StopScanner(StopSpec(spec.literals, spec.regex, spec.emit_suffix))
    for piece in pieces:
        scanner.feed(piece)
        if scanner.done:
            break
    elapsed = time.perf_counter() - t0
    assert scanner.done and scanner.text == text[: -len("END.")]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chars", type=int, default=100_000)
    args = parser.parse_args()
    text = reply_text(args.chars)
    expected = text[: -len("END.")]

    with FakeDeepInfra(lambda body: Reply.text(text, chunk_size=CHUNK, honour_stop=False)) as fake:
        base = DeepInfra(
            "bench/model",
            api_key="bench",
            base_url=fake.base_url,
            echo=False,
            logprobs=False,
            profiles=ProfileRegistry(),
        )

        def program(kwargs: dict[str, Any]) -> Callable[[], None]:
            def run() -> None:
                lm = base
                with user():
                    lm += "Read the minutes."
                with assistant():
                    lm += gen("g", **kwargs)
                assert lm["g"] == expected

            return run

        runners = {name: program(kwargs) for name, kwargs in ROWS.items()}
        for run in runners.values():  # warm up: connections, imports, compiled matchers
            run()
        wall: dict[str, list[float]] = {name: [] for name in runners}
        cpu: dict[str, list[float]] = {name: [] for name in runners}
        scan: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                w0, c0 = time.perf_counter(), time.process_time()
                run()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
                scan[name].append(scanner_seconds(text, ROWS[name]))

    literal = next(iter(ROWS))
    base_wall = statistics.median(wall[literal])
    base_cpu = statistics.median(cpu[literal])
    print(
        f"reply of {len(text)} chars in {len(text) // CHUNK + 1} pieces, stop at the end, "
        f"{args.rounds} rounds interleaved (CPU includes the in-process fake server)"
    )
    rows = []
    for name in ROWS:
        w, c, s = (statistics.median(v[name]) for v in (wall, cpu, scan))
        rows.append([name, f"{w:.2f}", f"{w / base_wall:.2f}", f"{c:.2f}", f"{c / base_cpu:.2f}", f"{s * 1000:.1f}"])
    long_reply = table(["stop", "wall s", "ratio", "CPU s", "ratio", "scanner alone ms"], rows)
    print(markdown(long_reply))
    write_results("stops", {"long_reply": long_reply})


if __name__ == "__main__":
    main()
