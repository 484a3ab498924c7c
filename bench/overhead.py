"""Per-call overhead: raw openai SDK vs guidance.models.OpenAI vs guidance_deepinfra.DeepInfra.

All three stream the same scripted answer from the loopback fake DeepInfra server in one run, interleaved
round by round so machine noise hits them alike. Prints the median wall time per call and the ratio to the
raw SDK. Usage: python bench/overhead.py [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import openai
from guidance import assistant, gen, models, user

from guidance_deepinfra import DeepInfra
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

ANSWER = "The quick brown fox jumps over the lazy dog. " * 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    with FakeDeepInfra(lambda body: Reply.text(ANSWER, chunk_size=6)) as fake:
        client = openai.OpenAI(api_key="bench", base_url=fake.base_url, max_retries=0)
        base_openai = models.OpenAI("gpt-4o-mini", api_key="bench", base_url=fake.base_url, echo=False)
        base_deepinfra = DeepInfra(
            "bench/model", api_key="bench", base_url=fake.base_url, echo=False, profiles=ProfileRegistry()
        )

        def raw_sdk() -> None:
            stream = client.chat.completions.create(
                model="bench/model", messages=[{"role": "user", "content": "Say it."}], max_tokens=60, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == ANSWER

        def program(base) -> Callable[[], None]:
            def run() -> None:
                lm = base
                with user():
                    lm += "Say it."
                with assistant():
                    lm += gen("out", max_tokens=60)
                assert lm["out"] == ANSWER

            return run

        runners = {
            "raw openai SDK": raw_sdk,
            "guidance.models.OpenAI": program(base_openai),
            "guidance_deepinfra.DeepInfra": program(base_deepinfra),
        }
        for run in runners.values():  # warm up connections and imports
            for _ in range(5):
                run()
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.calls):
            for name, run in runners.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)

    raw = statistics.median(times["raw openai SDK"])
    print(f"{args.calls} calls each, streamed answer of {len(ANSWER)} chars in {len(ANSWER) // 6 + 1} chunks")
    print(f"{'backend':32} {'median ms/call':>15} {'ratio to raw SDK':>17}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:32} {med * 1000:15.2f} {med / raw:17.2f}")


if __name__ == "__main__":
    main()
