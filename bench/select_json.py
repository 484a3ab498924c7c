"""Round trips and tokens per successful json()/select() call: ours against naive alternatives.

All four run in one process against the loopback fake server with scripted replies, some imperfect:

- select, ours: one request with a json_schema ``enum``; every 4th call the first reply is off-list
  (``"Technical support"``) and is retried with feedback.
- select, naive: one yes/no request per option (what a program without server-side constraints does to
  keep the answer inside the list); every 4th call the first "yes" is phrased ``"Yes."`` and still counts.
- json, ours: one request with the schema as response_format, validated with jsonschema; every 4th call
  the first reply breaks the schema (a string where an integer belongs) and is retried with the errors.
- json, naive: the schema pasted into the prompt, plain generation, parse and validate, retry with the
  error; every 4th call the first reply wraps the JSON in prose and is retried.
- option scores, ours: the select above with logprobs on; ``option_probs`` reads every option's probability
  from the answer's ``top_logprobs`` (no further request). Exact mode adds the continuation requests that
  score each option (one here: every option finishes in the first token after the quote).
- option scores, naive: one request per option asking whether it is the right team, with logprobs and
  ``max_tokens=1``, reading the probability of "yes" (a chat API cannot score a given text otherwise).

The fake server reports prompt tokens as (characters of the messages plus response_format) / 4 and
completion tokens as characters / 4, so a schema sent in response_format is charged like prompt text.

Usage: ``python bench/select_json.py [--calls N]``
"""

from __future__ import annotations

import argparse
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...
from guidance import assistant, gen, select, user
from guidance import json as guidance_json

from guidance_deepinfra import DeepInfra, RetryPolicy, option_probs
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

OPTIONS = ["billing", "technical", "sales", "other"]
TICKET = "My router keeps dropping the connection every evening. Which team should handle this ticket?"
SCHEMA = {
    "title": "Ticket",
    "type": "object",
    "properties": {
        "team": {"enum": OPTIONS},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string", "maxLength": 80},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["team", "priority", "summary", "tags"],
    "additionalProperties": False,
}
GOOD = json.dumps({"team": "technical", "priority": 3, "summary": "Router drops the connection", "tags": ["wifi"]})
OFF_SCHEMA = GOOD.replace('"priority": 3', '"priority": "high"')


@dataclass
class Tally:
    successes: int = 0
    round_trips: int = 0
    tokens: int = 0

    def per_success(self) -> tuple[float, float]:
        return self.round_trips / self.successes, self.tokens / self.successes


# A scripted answer: its text, or its text with its tokens (text, logprob[, {alternative: logprob}]).
Scripted = str | tuple[str, list[Any]]
SCORED_SELECT = (
    '"technical"',
    [('"', -0.01), ("technical", -0.3, {"technical": -0.3, "billing": -1.9, "sales": -2.6, "other": -3.1}), ('"', 0)],
)
EXACT_FIRST_TOKEN = (
    'technical"',
    [('technical"', -0.3, {'technical"': -0.3, 'billing"': -1.9, 'sales"': -2.6, 'other"': -3.1})],
)


def yes_no(option: str) -> tuple[str, list[Any]]:
    yes = -0.3 if option == "technical" else -2.5
    return ("yes", [("yes", yes, {"yes": yes, "no": math.log(1 - math.exp(yes))})])


class Server:
    """The fake server answering from a queue of texts, with token counts derived from each request."""

    def __init__(self) -> None:
        self.queue: deque[Scripted] = deque()
        self.fake = FakeDeepInfra(responder=self._answer)

    def _answer(self, body: dict[str, Any]) -> Reply:
        item = self.queue.popleft()
        text, tokens = (item, None) if isinstance(item, str) else item
        sent = json.dumps(body["messages"]) + json.dumps(body.get("response_format") or "")
        prompt, completion = math.ceil(len(sent) / 4), math.ceil(len(text) / 4)
        if tokens is not None:
            return Reply.text(text, prompt_tokens=prompt, completion_tokens=completion, token_logprobs=tokens)
        return Reply.text(text, prompt_tokens=prompt, completion_tokens=completion)

    def model(self, logprobs: bool = False) -> DeepInfra:
        return DeepInfra(
            "bench/model",
            api_key="bench",
            base_url=self.fake.base_url,
            echo=False,
            logprobs=logprobs,
            profiles=ProfileRegistry(),
            retry=RetryPolicy(sleep=lambda _s: None),
        )


def measure(
    server: Server,
    calls: int,
    script: Callable[[int], list[Scripted]],
    program: Callable[[DeepInfra], Any],
    *,
    logprobs: bool = False,
) -> Tally:
    tally = Tally()
    for i in range(calls):
        server.queue.extend(script(i))
        lm = server.model(logprobs)
        before = len(server.fake.requests)
        lm = program(lm)
        tally.successes += 1
        tally.round_trips += len(server.fake.requests) - before
        tally.tokens += lm.usage.total_tokens
        assert not server.queue, "a scripted reply was not used"
    return tally


def select_ours(lm: DeepInfra) -> DeepInfra:
    with user():
        lm += TICKET
    with assistant():
        lm += select(OPTIONS, name="team")
    assert lm["team"] == "technical"
    return lm


def select_naive(lm: DeepInfra) -> DeepInfra:
    chosen = None
    for option in OPTIONS:
        trial = lm
        with user():
            trial += f"{TICKET}\nIs the right team {option!r}? Answer yes or no."
        with assistant():
            trial += gen("yes_no", max_tokens=3)
        lm.usage.prompt_tokens += trial.usage.prompt_tokens - lm.usage.prompt_tokens
        lm.usage.completion_tokens += trial.usage.completion_tokens - lm.usage.completion_tokens
        if chosen is None and trial["yes_no"].strip().lower().startswith("yes"):
            chosen = option
    assert chosen == "technical"
    return lm


def scores_ours(lm: DeepInfra, exact: bool = False) -> DeepInfra:
    lm = select_ours(lm)
    scores = option_probs(lm, "team", exact=exact)
    assert scores is not None and max(scores, key=lambda o: scores[o].prob) == "technical"
    assert all(not p.bound for p in scores.values())
    return lm


def scores_naive(lm: DeepInfra) -> DeepInfra:
    scores = {}
    for option in OPTIONS:
        trial = lm
        with user():
            trial += f"{TICKET}\nIs the right team {option!r}? Answer yes or no."
        with assistant():
            trial += gen("yes_no", max_tokens=1)
        scores[option] = math.exp(trial.log_prob("yes_no"))
        lm.usage.prompt_tokens += trial.usage.prompt_tokens - lm.usage.prompt_tokens
        lm.usage.completion_tokens += trial.usage.completion_tokens - lm.usage.completion_tokens
    assert max(scores, key=lambda o: scores[o]) == "technical"
    return lm


def json_ours(lm: DeepInfra) -> DeepInfra:
    with user():
        lm += f"{TICKET} File the ticket."
    with assistant():
        lm += guidance_json("ticket", schema=SCHEMA)
    assert json.loads(lm["ticket"])["team"] == "technical"
    return lm


def json_naive(lm: DeepInfra, max_attempts: int = 3) -> DeepInfra:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    with user():
        lm += f"{TICKET} File the ticket. Reply with only JSON matching this schema: {json.dumps(SCHEMA)}"
    for _ in range(max_attempts):
        with assistant():
            attempt = lm + gen("ticket", max_tokens=200)
        try:
            value = json.loads(attempt["ticket"])
            validator.validate(value)
            return attempt
        except (ValueError, jsonschema.ValidationError) as exc:
            lm = attempt
            with user():
                lm += f"That was not valid: {str(exc).splitlines()[0]}. Reply with only the corrected JSON."
    raise AssertionError("naive JSON failed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="json/select cost: ours against naive alternatives")
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args(argv)
    server = Server()
    imperfect = lambda i: i % 4 == 3  # noqa: E731 - every 4th call starts with an imperfect reply
    with server.fake:
        rows = [
            (
                "select (4 options)",
                measure(
                    server,
                    args.calls,
                    lambda i: (['"Technical support"'] if imperfect(i) else []) + ['"technical"'],
                    select_ours,
                ),
                measure(
                    server, args.calls, lambda i: ["no", "Yes." if imperfect(i) else "yes", "no", "no"], select_naive
                ),
                "one yes/no call per option",
            ),
            (
                "select option scores (4 options)",
                measure(server, args.calls, lambda i: [SCORED_SELECT], scores_ours, logprobs=True),
                measure(server, args.calls, lambda i: [yes_no(o) for o in OPTIONS], scores_naive, logprobs=True),
                "one yes/no call per option, P(yes) from logprobs",
            ),
            (
                "select option scores, exact mode",
                measure(
                    server,
                    args.calls,
                    lambda i: [SCORED_SELECT, EXACT_FIRST_TOKEN],
                    lambda lm: scores_ours(lm, exact=True),
                    logprobs=True,
                ),
                measure(server, args.calls, lambda i: [yes_no(o) for o in OPTIONS], scores_naive, logprobs=True),
                "one yes/no call per option, P(yes) from logprobs",
            ),
            (
                "json (schema, 4 fields)",
                measure(server, args.calls, lambda i: ([OFF_SCHEMA] if imperfect(i) else []) + [GOOD], json_ours),
                measure(
                    server,
                    args.calls,
                    lambda i: ([f"Here is the ticket: {GOOD}"] if imperfect(i) else []) + [GOOD],
                    json_naive,
                ),
                "schema in prompt, parse and retry",
            ),
        ]
    print(f"{args.calls} successful calls per cell; every 4th call's first reply is imperfect (see module docstring)\n")
    header = ["constraint", "naive alternative", "round trips/success: ours", "naive", "ratio"]
    header += ["tokens/success: ours", "naive", "ratio"]
    cells_by_row = []
    for name, ours, naive, how in rows:
        (rt_o, tok_o), (rt_n, tok_n) = ours.per_success(), naive.per_success()
        cells = [name, how, f"{rt_o:.2f}", f"{rt_n:.2f}", f"{rt_n / rt_o:.2f}x"]
        cells += [f"{tok_o:.0f}", f"{tok_n:.0f}", f"{tok_n / tok_o:.2f}x"]
        cells_by_row.append(cells)
    costs = table(header, cells_by_row)
    print(markdown(costs))
    write_results("select_json", {"costs": costs})


if __name__ == "__main__":
    main()
