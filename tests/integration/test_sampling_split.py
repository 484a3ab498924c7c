"""Sampling that differs inside one statement is split where it changes, giving a local run's captures.

A local model samples each gen (and each Lark rule with ``temperature=``) at its own temperature; one DeepInfra
request has one. So a join whose top-level parts ask for different temperatures, or a Lark grammar whose
``start`` sequence does, is sent as consecutive requests, each with its own temperature and the text before it
as the assistant message it continues. The program text and captures are compared with guidance's local engine
given the whole answer (`tests/_local_reference.py`); only a mix no request can carry is refused, before any
request.
"""

from __future__ import annotations

from typing import Any

import pytest
from _local_reference import local_model
from guidance import assistant, capture, gen, lark, select, user

from guidance_deepinfra import InvalidProgramError
from guidance_deepinfra.enforcement.ladder import LadderOptions
from guidance_deepinfra.testing import Reply

LARK = """start: "Answer: " num " (" word ")"
num[capture="num", temperature=1.0]: /[0-9]+/
word[capture="word", temperature=0.7]: /[a-z]+/
"""

#: name -> (program, the local model's whole answer, the replies in turn, the temperature of each request)
CASES: dict[str, tuple[Any, str, list[str], list[float]]] = {
    "regex then gen": (
        gen("n", regex=r"\d+", temperature=0.2) + " and " + gen("rest", temperature=0.9, stop="."),
        "42 and more.",
        ["42", "more."],
        [0.2, 0.9],
    ),
    "two runs of one temperature": (
        select(["x", "y"], name="s") + gen("a", regex=r"\d", temperature=0.5) + "-"
        + gen("b", regex=r"\d", temperature=0.5) + " " + gen("c", regex="[a-z]+", temperature=0.1),
        "x5-6 abc",
        ["x5-6", "abc"],
        [0.5, 0.1],
    ),
    "lark rules with their own temperatures": (lark(LARK), "Answer: 42 (abc)", ["42", "abc)"], [1.0, 0.7]),
}  # fmt: skip


def local_run(program: Any, answer: str) -> tuple[str, dict[str, Any]]:
    lm, _ = local_model([answer])
    lm += program
    names = ("n", "rest", "s", "a", "b", "c", "num", "word")
    return str(lm).split("<|im_start|>assistant\n", 1)[-1], {n: lm.get(n) for n in names if lm.get(n) is not None}


def assistant_text(lm) -> str:
    return str(lm).split("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n")


def run_split(make_model, program: Any):
    """The program in an assistant turn, its grammar checked on the client (no server-side pattern)."""
    lm = make_model()
    lm._interpreter.grammar_options = LadderOptions(server=False)
    with user():
        lm += "Go."
    with assistant():
        lm += program
    return lm


@pytest.mark.parametrize("case", list(CASES))
def test_each_part_is_sampled_at_its_own_temperature(fake, make_model, case: str) -> None:
    program, answer, replies, sent = CASES[case]
    fake.push(*(Reply.text(r) for r in replies))
    lm = run_split(make_model, program)
    text, captures = local_run(program, answer)
    assert {name: lm.get(name) for name in captures} == captures
    assert assistant_text(lm) == text.removesuffix("<|im_end|>\n")
    assert [b.get("temperature") for b in fake.requests] == sent
    for body in fake.requests[1:]:  # each later request continues the program's text so far
        continued = body["messages"][-1]
        assert continued["role"] == "assistant" and text.startswith(continued["content"])


def test_the_second_request_continues_the_text_before_it(fake, make_model) -> None:
    program, _, replies, _ = CASES["regex then gen"]
    fake.push(*(Reply.text(r) for r in replies))
    run_split(make_model, program)
    assert fake.requests[1]["messages"][-1] == {"role": "assistant", "content": "42 and "}


@pytest.mark.parametrize("shape", ["field", "inline"])
def test_split_requests_on_a_reasoning_model(fake, make_model, shape: str) -> None:
    program, answer, replies, sent = CASES["lark rules with their own temperatures"]
    fake.push(*(Reply.text(r, reasoning="Hmm, let me think.", reasoning_as=shape) for r in replies))  # type: ignore[arg-type]
    lm = run_split(make_model, program)
    assert (lm["num"], lm["word"]) == ("42", "abc")
    assert "think" not in str(fake.requests[1]["messages"]) and len(lm.reasoning) == 2


@pytest.mark.parametrize(
    "program",
    [
        capture(gen(regex=r"\d+", temperature=0.2) + " " + gen(regex="[a-z]+", temperature=0.9), "both"),
        lark("start: a | b\na[temperature=1.0]: /[0-9]+/\nb[temperature=0.7]: /[a-z]+/"),
        select([gen(regex=r"\d", temperature=0.2), gen(regex="[a-z]", temperature=0.9)], name="one"),
    ],
    ids=["inside a capture", "lark alternatives", "select of gens"],
)
def test_a_mix_no_request_can_carry_is_refused_before_any_request(fake, make_model, program) -> None:
    lm = make_model()
    with user():
        lm += "Go."
    with pytest.raises(InvalidProgramError, match="mixes different temperatures"):
        with assistant():
            lm += program
    assert fake.requests == []
