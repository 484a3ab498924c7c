"""Grammar ladder benchmark on the fake server: each rung alone vs the full ladder, side by side.

    /work/devenv/bin/python bench/grammar.py [--runs 10]

Each of the corpus's cases (regexes, Lark grammars, mixed programs with literal text and captures) is run
`--runs` times per strategy against a scripted model on the loopback fake server. The scripted model is
imperfect the way chat models are: a fresh answer has the case's flaw (right answer wrapped in prose, a typo
in the middle, cut off, extra trailing text) with probability 0.7; after feedback it is right with
probability 0.85; a continuation is right with probability 0.9. Token counts are estimated from text length
(4 characters a token) and reported by the fake server as DeepInfra would. A run succeeds when the program
ends with the right text and captures; a wrong accepted value counts as a failure (and is reported). Round
trips and tokens per success divide everything spent, failed runs included, by the successes: the cost of
one satisfied constraint.

The server rung is measured twice: with the server ignoring the pattern (the reply is the model's JSON string
of its flawed answer; DeepInfra's enforcement is unverified) and, simulated, with the server enforcing it.
Then the per-check validation cost: guidance's `GrammarNode.match` (builds grammar and parser every call)
against the compiled, cached matcher.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _results import table, write_results  # bench/ is on the path when run as python bench/...
from guidance import assistant, gen, lark, select, substring, user

from guidance_deepinfra import ConstraintError, DeepInfra, RetryPolicy
from guidance_deepinfra.enforcement.ladder import LADDER, PLAIN_RETRY, LadderOptions
from guidance_deepinfra.enforcement.matcher import clear_cache, compile_node
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

Flaw = str  # "wrapped" | "typo" | "truncated" | "trailing"


@dataclass
class Case:
    name: str
    node: Any
    answer: str  # the text the node should add to the program
    flaw: Flaw
    captures: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""  # assistant text written before the node


def _g(name: str, pattern: str) -> Any:
    return gen(name, regex=pattern)


ARITH = r"""
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]+/
"""
KV = r"""
start: line+
line: KEY "=" VALUE "\n"
KEY: /[a-z_]+/
VALUE: /[A-Za-z0-9.]+/
"""
CSV = r"""
start: header row+
header: FIELD ("," FIELD)* "\n"
row: FIELD ("," FIELD)* "\n"
FIELD: /[A-Za-z0-9 .-]+/
"""
JSONISH = r"""
start: "[" item ("," item)* "]"
item: /"[a-z]+"/ ":" /[0-9]+/
"""

CASES: list[Case] = [
    Case("us-phone", _g("v", r"\(\d{3}\) \d{3}-\d{4}"), "(415) 555-0132", "wrapped", {"v": "(415) 555-0132"}),
    Case("phone-typo", _g("v", r"\d{3}-\d{3}-\d{4}"), "415-555-0132", "typo", {"v": "415-555-0132"}),
    Case("iso-date", _g("v", r"\d{4}-\d{2}-\d{2}"), "2024-03-15", "trailing", {"v": "2024-03-15"}),
    Case("iso-date-typo", _g("v", r"\d{4}-\d{2}-\d{2}"), "1999-12-31", "typo", {"v": "1999-12-31"}),
    Case(
        "iso-datetime",
        _g("v", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"),
        "2024-03-15T09:30:00Z",
        "truncated",
        {"v": "2024-03-15T09:30:00Z"},
    ),
    Case(
        "ipv4",
        _g("v", r"((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)"),
        "192.168.10.254",
        "wrapped",
        {"v": "192.168.10.254"},
    ),
    Case("ipv4-trunc", _g("v", r"(\d{1,3}\.){3}\d{1,3}"), "10.0.0.1", "truncated", {"v": "10.0.0.1"}),
    Case(
        "email",
        _g("v", r"[a-z0-9._]+@[a-z0-9]+\.(com|org|net)"),
        "ada.lovelace@example.org",
        "wrapped",
        {"v": "ada.lovelace@example.org"},
    ),
    Case(
        "email-trailing",
        _g("v", r"[a-z0-9._]+@[a-z0-9]+\.(com|org|net)"),
        "bob@corp.net",
        "trailing",
        {"v": "bob@corp.net"},
    ),
    Case("weight", _g("v", r"\d+(\.\d+)? (kg|g|lb)"), "72.5 kg", "wrapped", {"v": "72.5 kg"}),
    Case("speed", _g("v", r"\d+ (km/h|mph)"), "120 km/h", "typo", {"v": "120 km/h"}),
    Case("price", _g("v", r"\$\d{1,3}(,\d{3})*\.\d{2}"), "$1,249.99", "truncated", {"v": "$1,249.99"}),
    Case("percent", _g("v", r"-?\d+(\.\d)?%"), "-3.5%", "trailing", {"v": "-3.5%"}),
    Case("hex-color", _g("v", r"#[0-9a-f]{6}"), "#1a2b3c", "wrapped", {"v": "#1a2b3c"}),
    Case(
        "uuid",
        _g("v", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        "123e4567-e89b-12d3-a456-426614174000",
        "typo",
        {"v": "123e4567-e89b-12d3-a456-426614174000"},
    ),
    Case("semver", _g("v", r"\d+\.\d+\.\d+"), "2.14.0", "trailing", {"v": "2.14.0"}),
    Case("zip", _g("v", r"\d{5}(-\d{4})?"), "94103-1234", "truncated", {"v": "94103-1234"}),
    Case("time", _g("v", r"([01]\d|2[0-3]):[0-5]\d"), "23:05", "wrapped", {"v": "23:05"}),
    Case("arith", lark(ARITH, name="v"), "(3+4)*12-5", "trailing", {"v": "(3+4)*12-5"}),
    Case("arith-typo", lark(ARITH, name="v"), "2*(8+13)/7", "typo", {"v": "2*(8+13)/7"}),
    Case("arith-trunc", lark(ARITH, name="v"), "100-(20*3)+4", "truncated", {"v": "100-(20*3)+4"}),
    Case("kv", lark(KV, name="v"), "host=db1\nport=5432\n", "wrapped", {"v": "host=db1\nport=5432\n"}),
    Case(
        "kv-typo",
        lark(KV, name="v"),
        "user=ada\nrole=admin\nttl=3.5\n",
        "typo",
        {"v": "user=ada\nrole=admin\nttl=3.5\n"},
    ),
    Case("csv", lark(CSV, name="v"), "name,age\nAda,36\nAlan,41\n", "truncated", {"v": "name,age\nAda,36\nAlan,41\n"}),
    Case("csv-trailing", lark(CSV, name="v"), "city,pop\nOslo,709000\n", "trailing", {"v": "city,pop\nOslo,709000\n"}),
    Case("pairs", lark(JSONISH, name="v"), '["a":1,"bc":22]', "typo", {"v": '["a":1,"bc":22]'}),
    Case(
        "person",
        "Name: " + gen(regex=r"[A-Z][a-z]+", name="name") + ", age " + gen(regex=r"\d+", name="age") + ".",
        "Name: Grace, age 85.",
        "typo",
        {"name": "Grace", "age": "85"},
    ),
    Case(
        "digits-dash-word",
        gen(regex=r"\d+", name="n") + "-" + gen(regex=r"[a-z]+", name="w"),
        "42-answer",
        "trailing",
        {"n": "42", "w": "answer"},
    ),
    Case(
        "order",
        "Order #" + gen(regex=r"\d{5}", name="id") + " ships on " + gen(regex=r"\d{4}-\d{2}-\d{2}", name="date"),
        "Order #12345 ships on 2024-07-01",
        "truncated",
        {"id": "12345", "date": "2024-07-01"},
    ),
    Case(
        "measure",
        "Result: "
        + select([gen(regex=r"\d+", name="num") + " " + select(["cm", "m"], name="unit"), "unknown"], name="res"),
        "Result: 180 cm",
        "wrapped",
        {"num": "180", "unit": "cm", "res": "180 cm"},
    ),
    Case(
        "substring",
        substring("the quick brown fox jumps over the lazy dog", name="v"),
        "brown fox jumps",
        "trailing",
        {"v": "brown fox jumps"},
    ),
    Case(
        "coords",
        "(" + gen(regex=r"-?\d+\.\d+", name="lat") + ", " + gen(regex=r"-?\d+\.\d+", name="lon") + ")",
        "(48.8566, 2.3522)",
        "typo",
        {"lat": "48.8566", "lon": "2.3522"},
    ),
]


# --------------------------------------------------------------------------- the scripted model


def _flawed(node: Any, answer: str, flaw: Flaw) -> tuple[str, str]:
    """(text, finish_reason) of a flawed answer."""
    if flaw == "wrapped":
        return f"Sure! Here it is:\n{answer}\nLet me know if you need anything else.", "stop"
    if flaw == "trailing":
        return answer + ("\n\nThis follows the requested format." if not answer.endswith("\n") else "Done."), "stop"
    if flaw == "truncated":
        return answer[: max(1, len(answer) * 2 // 3)], "length"
    # a typo in the middle that the grammar rejects (a typo the grammar allows cannot be caught by anyone)
    i = len(answer) // 2
    for wrong in "x7?#":
        flawed = answer[:i] + wrong + answer[i + 1 :]
        if wrong != answer[i] and compile_node(node).check(flawed).viable <= i:
            return flawed, "stop"
    return answer[:i] + "\u00a7" + answer[i + 1 :], "stop"


@dataclass
class ScriptedModel:
    """Answers like an imperfect chat model; `enforce` simulates a server that applies response_format."""

    case: Case
    rng: random.Random
    enforce: bool = False
    requests: int = 0
    tokens: int = 0

    def __post_init__(self) -> None:
        self.forced = compile_node(self.case.node).forced_prefix

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        trailing = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        written = trailing[len(self.case.prefix) :] if trailing.startswith(self.case.prefix) else ""
        answer = self.case.answer
        fmt = body.get("response_format")
        feedback = any(m["role"] == "user" and "does not have the required form" in str(m["content"]) for m in messages)
        if fmt is not None and self.enforce:
            text, finish = answer, "stop"
        elif len(written) > len(self.forced) and answer.startswith(written):
            # asked to continue an accepted prefix: mostly right, sometimes another typo
            text, finish = (answer, "stop") if self.rng.random() < 0.9 else _flawed(self.case.node, answer, "typo")
        elif feedback:
            text, finish = (
                (answer, "stop") if self.rng.random() < 0.85 else _flawed(self.case.node, answer, self.case.flaw)
            )
        else:
            text, finish = (
                (answer, "stop") if self.rng.random() < 0.3 else _flawed(self.case.node, answer, self.case.flaw)
            )
        if written:
            if text.startswith(written):
                text = text[len(written) :]
            elif answer.startswith(written):
                # the written start steers the model into the answer; a wrapping flaw keeps only its tail
                text = answer[len(written) :] + (
                    "\nLet me know if you need anything else." if self.case.flaw == "wrapped" else ""
                )
        if fmt is not None and fmt.get("type") == "json_schema":
            text = json.dumps(text)
        prompt_tokens = len(json.dumps(messages)) // 4
        self.requests += 1
        self.tokens += prompt_tokens + max(1, len(text) // 4)
        return Reply.text(
            text, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=max(1, len(text) // 4)
        )


# --------------------------------------------------------------------------- running


@dataclass
class Tally:
    runs: int = 0
    successes: int = 0
    wrong: int = 0
    round_trips: int = 0
    tokens: int = 0

    def cells(self, label: str) -> list[str]:
        rate = self.successes / self.runs if self.runs else 0.0
        rt = self.round_trips / self.successes if self.successes else float("nan")
        tok = self.tokens / self.successes if self.successes else float("nan")
        return [label, f"{rate:.1%}", f"{rt:.2f}", f"{tok:.1f}", str(self.wrong)]


STRATEGIES: list[tuple[str, LadderOptions, bool]] = [
    ("plain retry", PLAIN_RETRY, False),
    ("forced prefix only", LadderOptions(server=False, trim=False, repair=False, feedback=False), False),
    ("trim/extract only", LadderOptions(server=False, forced_prefix=False, repair=False, feedback=False), False),
    ("repair only", LadderOptions(server=False, forced_prefix=False, trim=False, feedback=False), False),
    ("feedback only", LadderOptions(server=False, forced_prefix=False, trim=False, repair=False), False),
    (
        "server only, enforced (simulated)",
        LadderOptions(forced_prefix=False, trim=False, repair=False, feedback=False),
        True,
    ),
    ("ladder, server ignores pattern", LADDER, False),
    ("ladder, server enforces (simulated)", LADDER, True),
]


def run_once(
    case: Case, options: LadderOptions, enforce: bool, seed: int, max_attempts: int
) -> tuple[bool, bool, int, int]:
    """(success, wrong value accepted, round trips, tokens) of one run; failed runs' requests count too."""
    model = ScriptedModel(case, random.Random(seed), enforce)
    with FakeDeepInfra(model) as fake:
        lm = DeepInfra(
            "bench/model",
            api_key="bench",
            base_url=fake.base_url,
            echo=False,
            profiles=ProfileRegistry(),
            logprobs=False,
            max_attempts=max_attempts,
            retry=RetryPolicy(max_retries=0),
        )
        lm._interpreter.grammar_options = options  # type: ignore[attr-defined]
        with user():
            lm += f"Give the {case.name}."
        try:
            with assistant():
                lm += case.prefix
                lm += case.node
        except ConstraintError:
            return False, False, model.requests, model.tokens
        right = str(lm).endswith(case.prefix + case.answer) and all(lm.get(k) == v for k, v in case.captures.items())
        return right, not right, model.requests, model.tokens


def bench_ladder(runs: int, max_attempts: int) -> dict[str, Any]:
    print(f"{len(CASES)} cases x {runs} runs per strategy, max_attempts={max_attempts}\n")
    print(f"{'strategy':<34} {'success':>8} {'round trips':>12} {'tokens':>14} {'wrong':>7}")
    print(f"{'':<34} {'':>8} {'per success':>12} {'per success':>14} {'values':>7}")
    rows = []
    for label, options, enforce in STRATEGIES:
        tally = Tally()
        for case_index, case in enumerate(CASES):
            for run in range(runs):
                ok, wrong, rt, tok = run_once(
                    case, options, enforce, seed=case_index * 1000 + run, max_attempts=max_attempts
                )
                tally.runs += 1
                tally.wrong += wrong
                tally.successes += ok
                tally.round_trips += rt
                tally.tokens += tok
        rows.append(tally.cells(label))
        print(f"{rows[-1][0]:<34} {rows[-1][1]:>8} {rows[-1][2]:>12} {rows[-1][3]:>14} {rows[-1][4]:>7}")
    columns = ["strategy", "success", "round trips per success", "tokens per success", "wrong values"]
    return table(columns, rows)


def _time(fn: Callable[[], Any], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def bench_validation(repeat: int = 30) -> tuple[dict[str, Any], str]:
    print("\nValidation cost per check (microseconds, mean over the corpus):")
    uncached, first, cached, captures = [], [], [], []
    for case in CASES:
        node, text = case.node, case.answer
        uncached.append(_time(lambda node=node, text=text: node.match(text, enforce_max_tokens=False), repeat))
        clear_cache()
        start = time.perf_counter()
        compiled = compile_node(node)
        compiled.check(text)
        first.append((time.perf_counter() - start) * 1e6)
        cached.append(_time(lambda node=node, text=text: compile_node(node).check(text), repeat * 10))
        compiled.captures(text)
        captures.append(_time(lambda compiled=compiled, text=text: compiled.captures(text), repeat))
    rows = [
        ("GrammarNode.match (uncached, with captures)", uncached),
        ("first check (compile + check)", first),
        ("cached check (grammar string lookup + check)", cached),
        ("cached captures of an accepted text", captures),
    ]
    cells = []
    for label, values in rows:
        print(f"  {label:<46} mean {statistics.mean(values):>9.1f}   max {max(values):>9.1f}")
        cells.append([label, f"{statistics.mean(values):.0f}", f"{max(values):.0f}"])
    ratio = f"{statistics.mean(uncached) / statistics.mean(cached):.0f}"
    print(f"  cached check is {ratio}x cheaper than GrammarNode.match")
    return table(["check", "mean µs", "max µs"], cells), ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-attempts", type=int, default=3)
    args = parser.parse_args()
    ladder = bench_ladder(args.runs, args.max_attempts)
    validation, cached_speedup = bench_validation()
    write_results(
        "grammar", {"ladder": ladder, "validation": validation}, figures={"cached_check_speedup": cached_speedup}
    )


if __name__ == "__main__":
    main()
