"""Reasoning models: the budget their reasoning spends, the settings that control it, and what is kept of it.

Every test runs a program through the real SDK on the fake server; the replies are scripted as a reasoning model
answers, with its reasoning in ``reasoning_content`` (``field``) or inline as ``<think>...</think>``.
"""

from __future__ import annotations

import warnings

import pytest
from guidance import assistant, gen, json, select, user
from pydantic import BaseModel

import guidance_deepinfra
from guidance_deepinfra import ConstraintError, InvalidProgramError, ModelProfile
from guidance_deepinfra.errors import ReasoningBudgetWarning
from guidance_deepinfra.testing import Reply

SHAPES = ["field", "inline"]
THOUGHT = "Let me think about it for a while."


class Person(BaseModel):
    name: str
    age: int


def spent(shape: str) -> Reply:
    """A reply whose whole budget went into reasoning: the reasoning closed, no answer, cut by its length."""
    return Reply.text("", reasoning=THOUGHT, reasoning_as=shape, finish_reason="length")  # type: ignore[arg-type]


def answer(text: str, shape: str) -> Reply:
    return Reply.text(text, reasoning=THOUGHT, reasoning_as=shape)  # type: ignore[arg-type]


def run(lm, program):
    with user():
        lm += "Go."
    with assistant():
        lm += program
    return lm


# --------------------------------------------------------------------------- the budget


@pytest.mark.parametrize("shape", SHAPES)
def test_json_whose_budget_went_into_reasoning_says_so_and_is_not_continued(fake, make_model, shape) -> None:
    fake.push(spent(shape))
    lm = make_model()
    with user():
        lm += "Go."
    before = str(lm)
    with pytest.raises(ConstraintError, match="spent its 64 max_tokens reasoning and wrote no answer") as caught:
        with assistant():
            lm += json("c", schema=Person, max_tokens=64)
    assert "reasoning_effort='low' or 'none'" in str(caught.value)
    assert len(fake.requests) == 1 and str(lm) == before  # no continuation of an empty answer, nothing written


def test_json_without_max_tokens_names_the_models_output_limit(fake, make_model) -> None:
    fake.push(spent("field"))
    with pytest.raises(ConstraintError, match="spent its output limit reasoning"):
        run(make_model(), json("c", schema=Person))
    assert len(fake.requests) == 1


@pytest.mark.parametrize("shape", SHAPES)
def test_a_select_bound_spent_reasoning_is_asked_again_without_it(fake, make_model, shape) -> None:
    fake.push(spent(shape), answer('"yes"', shape))
    lm = run(make_model(), select(["yes", "no"], name="c"))
    assert lm["c"] == "yes"
    first, second = fake.requests
    assert "max_tokens" in first and "max_tokens" not in second
    assert lm._interpreter.profile.reasoning == shape  # learned from the first reply


def test_a_select_on_a_model_known_to_reason_is_not_bounded_to_the_option(fake, make_model) -> None:
    fake.push(answer('"no"', "field"))
    lm = run(make_model(profile=ModelProfile(reasoning="field")), select(["yes", "no"], name="c"))
    assert lm["c"] == "no" and "max_tokens" not in fake.requests[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_gen_whose_budget_went_into_reasoning_warns(fake, make_model, shape) -> None:
    fake.push(spent(shape))
    with pytest.warns(ReasoningBudgetWarning, match=r"gen\('c'\).*spent its 16 max_tokens reasoning"):
        lm = run(make_model(), gen("c", max_tokens=16))
    assert lm["c"] == ""


def test_a_gen_that_answered_does_not_warn(fake, make_model) -> None:
    fake.push(Reply.text("Paris", reasoning=THOUGHT, finish_reason="length"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReasoningBudgetWarning)
        lm = run(make_model(), gen("c", max_tokens=16))
    assert lm["c"] == "Paris"


@pytest.mark.parametrize("shape", SHAPES)
def test_a_regex_whose_budget_went_into_reasoning_is_not_retried(fake, make_model, shape) -> None:
    fake.push(spent(shape))
    with pytest.raises(ConstraintError, match="spent its 12 max_tokens reasoning"):
        run(make_model(), gen("c", regex=r"\d+", max_tokens=12))
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- what is kept


@pytest.mark.parametrize("shape", SHAPES)
def test_each_entry_says_its_capture_attempt_and_whether_it_was_accepted(fake, make_model, shape) -> None:
    fake.push(
        answer('{"name": "Ann"}', shape),  # refused: no age
        answer('{"name": "Ann", "age": 3}', shape),
        answer("Paris", shape),
    )
    lm = run(make_model(), json("person", schema=Person) + gen("city"))
    labels = [(e.capture, e.attempt, e.accepted, e.source) for e in lm.reasoning]
    assert labels == [("person", 1, False, shape), ("person", 2, True, shape), ("city", 1, True, shape)]
    assert all(e == THOUGHT for e in lm.reasoning)  # an entry reads as its text


def test_a_failed_constraint_leaves_every_entry_refused(fake, make_model) -> None:
    fake.push(*[answer("no digits", "inline") for _ in range(2)])
    lm = make_model(max_attempts=2)
    with pytest.raises(ConstraintError):
        run(lm, gen("n", regex=r"\d+"))
    # the program state behind `lm` is the one before the failed node; the ledger counts its calls
    assert lm.total_usage.calls == 2


@pytest.mark.parametrize("shape", SHAPES)
def test_reasoning_is_not_sent_back_in_later_turns(fake, make_model, shape) -> None:
    fake.push(answer("Paris", shape), answer("France", shape))
    lm = run(make_model(), gen("city"))
    with user():
        lm += "And the country?"
    with assistant():
        lm += gen("country")
    assert (lm["city"], lm["country"]) == ("Paris", "France")
    later = str(fake.requests[1]["messages"])
    assert "think" not in later and THOUGHT not in later and "Paris" in later


@pytest.mark.parametrize("shape", SHAPES)
def test_usage_counts_reasoning_tokens_and_their_cost_apart(fake, make_model, shape) -> None:
    fake.push(
        Reply.text("Paris", reasoning=THOUGHT, reasoning_as=shape, reasoning_tokens=30, completion_tokens=32)  # type: ignore[arg-type]
    )
    lm = run(make_model(), gen("c"))
    usage = lm.usage
    assert (usage.reasoning_tokens, usage.completion_tokens, usage.prompt_tokens) == (30, 32, 20)
    assert usage.reasoning_cost == pytest.approx(usage.estimated_cost * 30 / 52)
    assert "reasoning: 30 of the completion tokens" in usage.summary()
    assert lm.total_usage.reasoning_tokens == 30


# --------------------------------------------------------------------------- the settings


def test_model_settings_are_sent_as_documented(fake, make_model) -> None:
    fake.push(Reply.text("a"), Reply.text("b"), Reply.text("c"))
    run(make_model(reasoning_effort="low"), gen("c"))
    run(make_model(reasoning={"enabled": False}), gen("c"))
    run(make_model(reasoning={"effort": "medium", "enabled": True}, chat_template_kwargs={"x": 1}), gen("c"))
    fields = [
        {k: v for k, v in b.items() if k in ("reasoning_effort", "reasoning", "chat_template_kwargs")}
        for b in fake.requests
    ]
    assert fields == [
        {"reasoning_effort": "low"},
        {"reasoning": {"enabled": False}},
        {"reasoning": {"enabled": True, "effort": "medium"}, "chat_template_kwargs": {"x": 1}},
    ]


def test_a_block_overrides_the_models_setting_for_the_nodes_inside(fake, make_model) -> None:
    fake.push(Reply.text("a"), Reply.text("b"), Reply.text("c"))
    lm = make_model(reasoning_effort="high", chat_template_kwargs={"a": 1})
    with user():
        lm += "Go."
    with assistant():
        lm += gen("x", max_tokens=3)
        with guidance_deepinfra.reasoning("none", chat_template_kwargs={"b": 2}):
            lm += gen("y", max_tokens=3)
        lm += gen("z", max_tokens=3)
    sent = [(b.get("reasoning_effort"), b.get("chat_template_kwargs")) for b in fake.requests]
    assert sent == [("high", {"a": 1}), ("none", {"a": 1, "b": 2}), ("high", {"a": 1})]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reasoning_effort": "hgih"},
        {"reasoning": {"effort": "max"}},
        {"reasoning": {"enabled": "no"}},
        {"reasoning": {"enabled": False, "effort": "high"}},
        {"reasoning": {"budget": 100}},
        {"chat_template_kwargs": {"x": object()}},
        {"request_defaults": {"reasoning_effort": "hgih"}},
    ],
)
def test_bad_settings_are_refused_before_any_request(fake, make_model, kwargs) -> None:
    with pytest.raises(InvalidProgramError, match="reasoning|chat_template_kwargs") as caught:
        make_model(**kwargs)
    assert fake.requests == []
    if "hgih" in str(kwargs):
        assert "['none', 'low', 'medium', 'high']" in str(caught.value)


def test_a_bad_block_is_refused_before_any_request(fake, make_model) -> None:
    lm = make_model()
    with pytest.raises(InvalidProgramError, match="'hgih' is not one DeepInfra accepts"):
        with guidance_deepinfra.reasoning("hgih"):
            run(lm, gen("c"))
    assert fake.requests == []
