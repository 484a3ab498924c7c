"""Round trips and tokens per satisfied constraint on a reasoning model: reasoning inline, in its own field, off.

Each constraint runs `--calls` times in one process against the loopback fake server, on three models that
answer the same texts: one that reasons inline (``<think>...</think>`` before the answer), one that sends its
reasoning in ``reasoning_content``, and one run with ``reasoning_effort="none"`` that answers without reasoning.
The regex is checked on the client (its model is declared without json_schema, so no server-side rung is
tried). Every 4th call's first answer is imperfect (json: a string where an integer belongs; select: an option
that is not on the list; regex: a date written out in words) and is retried. The replies are synthesized; the
reasoning is 240 characters, reported as 60 reasoning tokens. Prompt tokens are the characters of the messages
(plus any response_format) / 4 and answer tokens the answer's characters / 4, so the rows compare what each
shape costs in requests and tokens, not what a real model would write.

Usage: ``python bench/reasoning_cost.py [--calls N]``
"""

from __future__ import annotations

import argparse
import json
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...
from guidance import assistant, gen, select, user
from guidance import json as guidance_json

from guidance_deepinfra import DeepInfra, ModelProfile, RetryPolicy
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

THOUGHT = ("The user wants a structured answer. I check each field against what was asked, then answer. " * 3)[:240]
REASONING_TOKENS = 60
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
#: constraint -> (program, good answer, imperfect answer)
CONSTRAINTS: dict[str, tuple[Callable[[], Any], str, str]] = {
    "json (schema, 2 fields)": (
        lambda: guidance_json("c", schema=SCHEMA),
        '{"city": "Paris", "population": 2102650}',
        '{"city": "Paris", "population": "about two million"}',
    ),
    "select (3 options)": (lambda: select(["Paris", "Lyon", "Nice"], name="c"), '"Paris"', '"Marseille"'),
    "regex (a date)": (lambda: gen("c", regex=r"\d{4}-\d{2}-\d{2}"), "2024-07-14", "July 14, 2024"),
}
SHAPES = ("inline", "field", "none")


class Server:
    """The fake server answering from a queue of answers, as the model of `shape` would send them."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()
        self.shape = "inline"
        self.fake = FakeDeepInfra(responder=self._answer)

    def _answer(self, body: dict[str, Any]) -> Reply:
        text = self.queue.popleft()
        sent = json.dumps(body["messages"]) + json.dumps(body.get("response_format") or "")
        prompt, completion = math.ceil(len(sent) / 4), math.ceil(len(text) / 4)
        if self.shape == "none":
            assert body.get("reasoning_effort") == "none", body
            return Reply.text(text, prompt_tokens=prompt, completion_tokens=completion)
        return Reply.text(
            text,
            reasoning=THOUGHT,
            reasoning_as=self.shape,  # type: ignore[arg-type]
            reasoning_tokens=REASONING_TOKENS,
            prompt_tokens=prompt,
            completion_tokens=completion + REASONING_TOKENS,
        )

    def model(self, profile: ModelProfile | None) -> DeepInfra:
        return DeepInfra(
            "bench/reasoning-model",
            api_key="bench",
            base_url=self.fake.base_url,
            echo=False,
            logprobs=False,
            profiles=ProfileRegistry(),
            retry=RetryPolicy(sleep=lambda _s: None),
            reasoning_effort="none" if self.shape == "none" else None,
            profile=profile,
        )


def measure(server: Server, shape: str, constraint: str, calls: int) -> tuple[float, float, float]:
    """Round trips, tokens and reasoning tokens per satisfied constraint."""
    program, good, bad = CONSTRAINTS[constraint]
    server.shape = shape
    round_trips = tokens = thought = satisfied = 0
    for i in range(calls):
        server.queue.extend([bad, good] if i % 4 == 3 else [good])
        # the regex is generated and checked on the client (its answers are scripted as free text)
        lm = server.model(ModelProfile(json_schema=False) if constraint.startswith("regex") else None)
        before = len(server.fake.requests)
        with user():
            lm += "Answer the question."
        with assistant():
            lm += program()
        assert lm["c"] is not None and not server.queue, "a scripted reply was not used"
        satisfied += 1
        round_trips += len(server.fake.requests) - before
        tokens += lm.usage.total_tokens
        thought += lm.usage.reasoning_tokens
    return round_trips / satisfied, tokens / satisfied, thought / satisfied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    server = Server()
    rows = []
    with server.fake:
        for constraint in CONSTRAINTS:
            results = {shape: measure(server, shape, constraint, args.calls) for shape in SHAPES}
            cells = [constraint]
            for index, unit in ((0, "{:.2f}"), (1, "{:.0f}")):
                cells += [unit.format(results[shape][index]) for shape in SHAPES]
            cells.append(f"{results['inline'][2]:.0f}")
            rows.append(cells)
    columns = [
        "constraint",
        "round trips/success: inline",
        "reasoning_content",
        "reasoning off",
        "tokens/success: inline",
        "reasoning_content",
        "reasoning off",
        "of which reasoning (inline)",
    ]
    costs = table(columns, rows)
    print(f"{args.calls} satisfied calls per cell, every 4th call's first answer imperfect (synthesized replies)")
    print(markdown(costs))
    write_results("reasoning_cost", {"costs": costs})


if __name__ == "__main__":
    main()
