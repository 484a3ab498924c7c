"""Programs on a reasoning model give a local run's text and captures, whichever way the reasoning arrives.

Each construct runs on the fake server with its answer after reasoning in ``reasoning_content``
(``field``), inline as ``<think>...</think>`` (``inline``) and inline with only the closing tag for a model
known to reason inline (``closing``), streamed in one-character pieces and in large ones; the captures and the
program text are compared with guidance's local engine given the answer alone (`tests/_local_reference.py`).
"""

from __future__ import annotations

import json as pyjson
import urllib.request
from typing import Any

import pytest
from _local_reference import local_model
from guidance import assistant, gen, json, lark, select, user
from pydantic import BaseModel

from guidance_deepinfra import ModelProfile, UnclosedReasoningError, extract
from guidance_deepinfra.cli import main
from guidance_deepinfra.enforcement.ladder import LadderOptions
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

REASONING = "Let me think.\nThe user asks for something. I answer it, then stop. OK."
SHAPES = ["field", "inline", "closing"]


class Person(BaseModel):
    name: str
    age: int


#: name -> (program, the local model's answer, the replies the fake server sends in turn)
CONSTRUCTS: dict[str, tuple[Any, str, list[str]]] = {
    "json": (json("c", schema=Person), '{"name": "Ann", "age": 3}', ['{"name": "Ann", "age": 3}']),
    "select": (select(["yes", "no"], name="c"), "yes", ['"yes"']),
    "gen": (gen("c"), "Paris", ["Paris"]),
    "gen-stop": (gen("c", stop="\n"), "Paris\n", ["Paris\nis the capital."]),
    "gen-regex": (gen("c", regex=r"\d+"), "42", ["42"]),
    "prefill-gen-stop": ("The capital is " + gen("c", stop="."), "The capital is Paris.", ["Paris. Yes."]),
    "lark": (lark('start: "x" num\nnum[capture="c"]: /[0-9]+/'), "x42", ["42"]),
    "mixed": (
        "Name: " + gen("c", stop=",") + " age " + gen("age", regex=r"\d+"), "Name: Alice, age 42", ["Alice, age 42"]
    ),
    "repair": (gen("c", regex=r"\d{3}-\d{4}"), "555-1234", ["555-12x9", "34"]),
}  # fmt: skip


#: The first reply of a model not yet known to reason, whose server stop fired inside the inline reasoning (or,
#: in the field shape, on the blank line before the answer): nothing was written, and the request is sent again
#: without it. The model is known to reason from then on, and is sent no server stops.
RESENT = {("inline", "gen-stop"), ("inline", "prefill-gen-stop"), ("field", "gen-stop")}


def local_run(program: Any, answer: str) -> tuple[str, dict[str, Any]]:
    lm, _ = local_model([answer])
    lm += program
    return str(lm), {name: lm.get(name) for name in ("c", "age") if lm.get(name) is not None}


def model_for(make_model, shape: str):
    profile = ModelProfile(reasoning="inline") if shape == "closing" else None
    lm = make_model(profile=profile)
    lm._interpreter.grammar_options = LadderOptions(server=False)
    return lm


def assistant_text(lm) -> str:
    return str(lm).split("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n")


def reply(answer: str, shape: str, size: int) -> Reply:
    """The answer after reasoning; in the field shape the content starts with the blank line a reasoning model's
    template writes after its reasoning, which is not the answer's either."""
    content = "\n\n" + answer if shape == "field" else answer
    return Reply.text(content, reasoning=REASONING, reasoning_as=shape, chunk_size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1, 64], ids=["1-char-pieces", "64-char-pieces"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("construct", list(CONSTRUCTS))
def test_each_construct_gives_the_local_run(fake, make_model, construct: str, shape: str, size: int) -> None:
    program, local_answer, answers = CONSTRUCTS[construct]
    replies = [reply(a, shape, size) for a in answers]
    if (shape, construct) in RESENT:
        replies = [replies[0], *replies]
    fake.push(*replies)
    lm = model_for(make_model, shape)
    with user():
        lm += "Go."
    with assistant():
        lm += program
    text, captures = local_run(program, local_answer)
    assert {name: lm.get(name) for name in captures} == captures
    assert assistant_text(lm) == text
    assert "think" not in str(lm) and "Let me think" not in str(lm)
    assert lm.reasoning and all(r == REASONING.strip() or REASONING.startswith(r) for r in lm.reasoning)
    for body in fake.requests:  # reasoning is never sent back, not even as the assistant text a repair continues
        assert all("think" not in str(m.get("content")) for m in body["messages"])
    assert len(fake.requests) == len(replies)


def test_repair_continues_the_answer_without_its_reasoning(fake, make_model) -> None:
    fake.push(reply("555-12x9", "inline", 5), reply("34", "inline", 5))
    lm = model_for(make_model, "inline")
    with user():
        lm += "Call me."
    with assistant():
        lm += "Phone: " + gen("c", regex=r"\d{3}-\d{4}")
    assert lm["c"] == "555-1234"
    assert fake.requests[1]["messages"][-1] == {"role": "assistant", "content": "Phone: 555-12"}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_json_answer_cut_by_length_is_continued_after_the_continuations_reasoning(fake, make_model, shape) -> None:
    fake.push(
        Reply.text('{"name": "An', reasoning=REASONING, reasoning_as=shape, finish_reason="length"),  # type: ignore[arg-type]
        Reply.text('n", "age": 3}', reasoning=REASONING, reasoning_as=shape),  # type: ignore[arg-type]
    )
    lm = model_for(make_model, shape)
    with user():
        lm += "Who?"
    with assistant():
        lm += json("c", schema=Person)
    assert pyjson.loads(lm["c"]) == {"name": "Ann", "age": 3}
    assert fake.requests[1]["messages"][-1] == {"role": "assistant", "content": '{"name": "An'}
    assert assistant_text(lm) == lm["c"]
    assert lm.reasoning == [REASONING, REASONING]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_servers_json_string_rung_reads_the_answer_after_the_reasoning(fake, make_model, shape) -> None:
    fake.push(Reply.text('"555-1234"', reasoning=REASONING, reasoning_as=shape))  # type: ignore[arg-type]
    lm = make_model(profile=ModelProfile(reasoning="inline") if shape == "closing" else None)
    with user():
        lm += "Call me."
    with assistant():
        lm += "Phone: " + gen("c", regex=r"\d{3}-\d{4}")
    assert fake.last["response_format"]["type"] == "json_schema"  # the ladder's server rung
    assert lm["c"] == "555-1234" and assistant_text(lm) == "Phone: 555-1234"
    assert len(fake.requests) == 1 and lm.reasoning == [REASONING]


@pytest.mark.parametrize("shape", ["inline", "field"])
def test_a_model_seen_reasoning_is_learned_and_sent_no_server_stops(fake, make_model, shape: str) -> None:
    fake.push(reply("Paris", shape, 8), reply("Rome\nmore", shape, 8))
    lm = make_model()
    with user():
        lm += "Capitals?"
    with assistant():
        lm += gen("a") + " and " + gen("b", stop="\n")
    assert (lm["a"], lm["b"]) == ("Paris", "Rome")
    assert lm._interpreter.profile.reasoning == shape
    assert "stop" not in fake.requests[1] and len(fake.requests) == 2


def test_closing_tag_only_is_reasoning_once_the_model_is_known_to_reason_inline(fake, make_model) -> None:
    fake.push(reply("Paris", "inline", 8), reply("Rome", "closing", 8))
    lm = make_model()
    with user():
        lm += "Capitals?"
    with assistant():
        lm += gen("a") + " " + gen("b")
    assert (lm["a"], lm["b"]) == ("Paris", "Rome")
    assert lm.reasoning == [REASONING, REASONING]


def test_a_literal_think_later_in_an_ordinary_answer_stays_the_answer(fake, make_model) -> None:
    fake.push(Reply.text("Use the <think> tag, then </think>."))
    lm = make_model()
    with user():
        lm += "How?"
    with assistant():
        lm += gen("c")
    assert lm["c"] == "Use the <think> tag, then </think>."
    assert lm.reasoning == []


@pytest.mark.parametrize("construct", ["json", "gen", "gen-regex", "select"])
def test_reasoning_that_never_closes_within_the_budget_is_a_typed_error(fake, make_model, construct: str) -> None:
    fake.push(
        Reply.text("", reasoning="a long chain", reasoning_as="inline", reasoning_closed=False, finish_reason="length")
    )
    lm = make_model()
    with user():
        lm += "Go."
    before = str(lm)
    program = CONSTRUCTS[construct][0]
    with pytest.raises(UnclosedReasoningError, match="opened <think> and did not close it") as caught:
        with assistant():
            lm += program
    assert caught.value.finish_reason == "length" and caught.value.reasoning == "a long chain"
    assert str(lm) == before and len(fake.requests) == 1  # nothing written, no continuation or retry


def test_log_probabilities_score_the_answer_tokens_only(fake, make_model) -> None:
    tokens = [("<think>", -5.0), ("hm", -5.0), ("</think>", -5.0), ("\n\n", -5.0), ("4", -0.5), ("2", -0.25)]
    fake.push(Reply.text("".join(t for t, _ in tokens), token_logprobs=tokens))
    lm = make_model(logprobs=True)
    with user():
        lm += "6*7?"
    with assistant():
        lm += gen("c")
    assert lm["c"] == "42"
    assert lm.log_prob("c") == pytest.approx(-0.75)


def test_the_fake_reports_reasoning_tokens_in_usage(fake) -> None:
    for shape in ("field", "inline", "closing"):
        fake.push(Reply.text("ok", reasoning="x" * 40, reasoning_as=shape, reasoning_tokens=10, completion_tokens=11))
        request = urllib.request.Request(
            f"{fake.base_url}/chat/completions", data=b'{"model": "m", "messages": []}', method="POST"
        )
        with urllib.request.urlopen(request) as answer:
            body = pyjson.loads(answer.read())
        assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 10}
        content = body["choices"][0]["message"]["content"]
        expected = {
            "field": "ok",
            "inline": "<think>" + "x" * 40 + "</think>\n\nok",
            "closing": "x" * 40 + "</think>\n\nok",
        }
        assert content == expected[shape]
        assert body["choices"][0]["message"].get("reasoning_content") == ("x" * 40 if shape == "field" else None)


# ----------------------------------------------------------------------------- extraction on a reasoning model


def person_after_reasoning(shape: str, *, size: int = 8, first_inline: list[bool] | None = None):
    """Echo ``name=X age=N`` as JSON after reasoning in `shape`; with `first_inline`, the first reply of the run
    reasons inline (``<think>``) and the rest only close the tag, as a template that opens it in the prompt."""

    def respond(body: dict[str, Any]) -> Reply:
        text = next(m["content"] for m in body["messages"] if m["role"] == "user")
        name, age = text.split()[0].split("=")[1], int(text.split()[1].split("=")[1])
        answer = pyjson.dumps({"name": name, "age": age})
        how = shape
        if first_inline is not None:
            how = "inline" if not first_inline else "closing"
            first_inline.append(True)
        return Reply.text(answer, reasoning=REASONING, reasoning_as=how, chunk_size=size)  # type: ignore[arg-type]

    return respond


PEOPLE = [f"name=P{i} age={i}" for i in range(6)]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "guidance-path"])
@pytest.mark.parametrize("shape", ["field", "inline", "learned-closing", "declared-closing"])
def test_extract_on_a_reasoning_model_gives_the_answers(fast: bool, shape: str, make_model) -> None:
    learned = [] if shape == "learned-closing" else None
    wire_shape = "closing" if shape.endswith("closing") else shape
    with FakeDeepInfra(person_after_reasoning(wire_shape, first_inline=learned)) as fake:
        profile = ModelProfile(reasoning="inline") if shape == "declared-closing" else None
        model = make_model(base_url=fake.base_url, profiles=ProfileRegistry(), profile=profile)
        concurrency = 1 if learned is not None else 3  # the inline reply comes first, then the closing ones
        results = extract(PEOPLE, Person, model=model, concurrency=concurrency, fast=fast)
        streamed = {bool(b.get("stream")) for b in fake.requests}
    assert results == [Person(name=f"P{i}", age=i) for i in range(6)]
    assert results.failures == [] and len(fake.requests) == 6
    assert streamed == {not fast}
    assert model._interpreter.profile.reasoning == ("field" if shape == "field" else "inline")  # learned or declared


def test_extract_reports_reasoning_that_never_closes_as_a_failure_of_that_input(make_model) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        if "P1 " in next(m["content"] for m in body["messages"] if m["role"] == "user"):
            return Reply.text(
                "", reasoning="on and on", reasoning_as="inline", reasoning_closed=False, finish_reason="length"
            )
        return person_after_reasoning("inline")(body)

    for fast in (True, False):
        with FakeDeepInfra(respond) as fake:
            results = extract(PEOPLE[:3], Person, model=make_model(base_url=fake.base_url), fast=fast)
            failed = results.by_id()["1"]
            assert failed.error_type == "UnclosedReasoningError" and "did not close it" in failed.message
            assert [r for r in results if r] == [Person(name="P0", age=0), Person(name="P2", age=2)]
            assert len(fake.requests) == 3  # the unclosed reply is not continued or retried


@pytest.mark.parametrize("shape", ["inline", "learned-closing"])
def test_the_extract_command_on_a_reasoning_model(tmp_path, monkeypatch, capsys, shape: str) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-cli-reasoning")
    (tmp_path / "schema.json").write_text(pyjson.dumps(Person.model_json_schema()), encoding="utf-8")
    lines = [pyjson.dumps({"id": f"r{i}", "text": text}) for i, text in enumerate(PEOPLE)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    learned = [] if shape == "learned-closing" else None
    wire_shape = "closing" if learned is not None else shape
    with FakeDeepInfra(person_after_reasoning(wire_shape, first_inline=learned)) as fake:
        argv = [
            "extract", "--schema", str(tmp_path / "schema.json"), "--input", str(tmp_path / "in.jsonl"),
            "--output", str(tmp_path / "out.jsonl"), "--base-url", fake.base_url,
            "--model", f"test/reasoning-{shape}", "--concurrency", "1",
        ]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
    records = [pyjson.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["id"]: r["result"] for r in records} == {f"r{i}": {"name": f"P{i}", "age": i} for i in range(6)}
