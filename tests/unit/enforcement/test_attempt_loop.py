"""The one attempt loop (`AttemptLoop`) and the one conversation builder (`conversation`, `continuing`).

The loop is free of I/O, so its bounds, stats and errors are first checked with a small scripted strategy;
then both of its callers (json/select and the grammar ladder) are checked through the fake server.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from guidance import assistant, gen, json, select, user

from guidance_deepinfra import ConstraintError, InvalidProgramError, limits
from guidance_deepinfra.enforcement.attempts import AttemptLoop, Stop, run_attempts
from guidance_deepinfra.enforcement.ladder import LadderOptions
from guidance_deepinfra.errors import Attempt, InvalidParameterError, UnsupportedFeatureError
from guidance_deepinfra.interpreter import stops
from guidance_deepinfra.lowering.prompts import continuing, conversation, json_reply
from guidance_deepinfra.testing import Reply
from guidance_deepinfra.transport import body as request_body
from guidance_deepinfra.usage import DeepInfraUsage

# ----------------------------------------------------------------------------- the loop, scripted


class Scripted:
    """A strategy accepting the answer "ok"; it records every request it was asked for."""

    error_type = ConstraintError

    def __init__(self, *, hopeless: bool = False, refusals_taken: int = 0) -> None:
        self.attempts: list[Attempt] = []
        self.requests: list[int | None] = []
        self.hopeless = hopeless
        self.refusals_taken = refusals_taken

    def kind(self) -> str:
        return "scripted"

    def describe(self) -> str:
        return "the scripted constraint"

    def next_request(self, remaining_tokens: int | None) -> dict[str, Any]:
        self.requests.append(remaining_tokens)
        return {"n": len(self.requests)}

    def judge(self, answer: str) -> tuple[str | None, bool]:
        if answer == "ok":
            return answer, False
        self.attempts.append(Attempt(answer, (f"{answer!r} is not ok",), "scripted"))
        return None, self.hopeless

    def format_refused(self, exc: UnsupportedFeatureError | InvalidParameterError) -> bool:
        if self.refusals_taken:
            self.refusals_taken -= 1
            return True
        return False

    def failure(self, stop: Stop) -> str:
        return f"stopped by {stop.reason} after {stop.answers} answer(s), {stop.spent} token(s)"


def drive(loop: AttemptLoop[str, str], replies: list[Any], usage: DeepInfraUsage, tokens: int = 0) -> str:
    """Run `loop` to its end, answering each request with the next reply (an exception is raised)."""

    def attempt(body: dict[str, Any]) -> Generator[Any, None, str]:
        yield from ()
        reply = replies.pop(0)
        usage.prompt_tokens += tokens
        if isinstance(reply, BaseException):
            raise reply
        return str(reply)

    gen_ = run_attempts(loop, attempt)
    try:
        while True:
            next(gen_)
    except StopIteration as done:
        return str(done.value)


def make_loop(strategy: Scripted, usage: DeepInfraUsage, **bounds: Any) -> AttemptLoop[str, str]:
    bounds.setdefault("max_attempts", 3)
    bounds.setdefault("token_budget", None)
    return AttemptLoop(strategy, usage=usage, model="test/model", **bounds)


def test_loop_stops_at_max_attempts_and_its_error_names_the_last_answer() -> None:
    usage = DeepInfraUsage()
    strategy = Scripted()
    replies = ["first", "second", "third", "ok"]
    with pytest.raises(ConstraintError, match="stopped by attempts after 3 answer") as caught:
        drive(make_loop(strategy, usage), replies, usage)
    assert replies == ["ok"]  # the fourth request was never made
    assert caught.value.last_output == "third"
    assert [a.text for a in caught.value.attempts] == ["first", "second", "third"]
    assert caught.value.constraint == "the scripted constraint"
    stats = usage.constraints["scripted"]
    assert (stats.satisfied, stats.failed, stats.round_trips) == (0, 1, 3)


def test_loop_returns_the_accepted_answer_and_records_it_once() -> None:
    usage = DeepInfraUsage()
    assert drive(make_loop(Scripted(), usage), ["no", "ok"], usage, tokens=7) == "ok"
    stats = usage.constraints["scripted"]
    assert (stats.satisfied, stats.failed, stats.round_trips, stats.prompt_tokens) == (1, 0, 2, 14)


def test_loop_stops_when_the_token_budget_is_spent_and_passes_what_is_left() -> None:
    usage = DeepInfraUsage()
    strategy = Scripted()
    with pytest.raises(ConstraintError, match="stopped by budget after 2 answer.*, 30 token"):
        drive(make_loop(strategy, usage, max_attempts=5, token_budget=25), ["a", "b", "c"], usage, tokens=15)
    assert strategy.requests == [25, 10]  # the second request may spend only what is left


def test_a_hopeless_answer_stops_the_loop_before_the_next_request() -> None:
    usage = DeepInfraUsage()
    strategy = Scripted(hopeless=True)
    with pytest.raises(ConstraintError, match="stopped by hopeless after 1 answer"):
        drive(make_loop(strategy, usage), ["cut", "ok"], usage)
    assert len(strategy.requests) == 1


def test_a_refused_format_is_a_round_trip_not_an_attempt_and_an_untaken_refusal_fails() -> None:
    usage = DeepInfraUsage()
    refusal = UnsupportedFeatureError("no such format", feature="response_format")
    strategy = Scripted(refusals_taken=1)
    assert drive(make_loop(strategy, usage, max_attempts=1), [refusal, "ok"], usage) == "ok"
    assert usage.constraints["scripted"].round_trips == 2

    usage = DeepInfraUsage()
    with pytest.raises(UnsupportedFeatureError):
        drive(make_loop(Scripted(), usage), [refusal, "ok"], usage)
    stats = usage.constraints["scripted"]
    assert (stats.failed, stats.round_trips) == (1, 1)


def test_an_error_that_is_not_the_constraints_counts_its_requests_but_no_verdict() -> None:
    usage = DeepInfraUsage()
    with pytest.raises(ConnectionError):
        drive(make_loop(Scripted(), usage), ["no", ConnectionError("network down")], usage, tokens=5)
    stats = usage.constraints["scripted"]
    assert (stats.satisfied, stats.failed, stats.round_trips, stats.prompt_tokens) == (0, 0, 1, 10)


# ----------------------------------------------------------------------------- the conversation builder

BASE = [{"role": "user", "content": "Go."}]


def test_a_retry_shows_the_rejected_answer_then_the_feedback_then_the_text_to_continue() -> None:
    built = conversation(BASE, rejected="Name: 12", feedback="Not a name.", trailing="Name: ")
    assert built == [
        *BASE,
        {"role": "assistant", "content": "Name: 12"},
        {"role": "user", "content": "Not a name."},
        {"role": "assistant", "content": "Name: "},
    ]
    assert BASE == [{"role": "user", "content": "Go."}]  # the input is not changed


def test_no_empty_assistant_turn_is_built() -> None:
    assert conversation(BASE) == BASE
    assert conversation(BASE, rejected="", feedback="Again.") == [*BASE, {"role": "user", "content": "Again."}]


def test_a_continuation_joins_the_partial_answer_to_the_trailing_assistant_message() -> None:
    first = continuing(BASE, '{"a": ')
    assert first == [*BASE, {"role": "assistant", "content": '{"a": '}]
    assert continuing(first, "1, ") == [*BASE, {"role": "assistant", "content": '{"a": 1, '}]


def test_json_reply_reads_a_json_string_and_one_cut_before_its_closing_quote() -> None:
    assert json_reply(' "555-12" ') == "555-12"
    assert json_reply('"555-12') is None
    assert json_reply('"555-12', cut_off=True) == "555-12"
    assert json_reply('{"choice": "b"}') == {"choice": "b"}


def test_the_stop_limit_is_one_constant() -> None:
    assert stops.API_STOP_LIMIT is request_body.API_STOP_LIMIT == 4
    request_body.chat_body(model="m", messages=BASE, stop=["a", "b", "c", "d"])
    with pytest.raises(InvalidProgramError, match="at most 4 stop strings"):
        request_body.chat_body(model="m", messages=BASE, stop=["a", "b", "c", "d", "e"])


# ----------------------------------------------------------------------------- both callers, on the wire


def ask(lm: Any) -> Any:
    with user():
        lm += "Go."
    return lm


def test_json_stops_at_max_attempts_with_the_last_answer_and_fed_back_errors(fake, make_model) -> None:
    fake.push(Reply.text('{"n": "one"}'), Reply.text('{"n": "two"}'), Reply.text('{"n": 3}'))
    lm = ask(make_model())
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with limits(max_attempts=2), assistant(), pytest.raises(ConstraintError, match="in 2 attempt") as caught:
        lm += json("doc", schema=schema)
    assert len(fake.requests) == 2
    assert caught.value.last_output == '{"n": "two"}'
    retry = fake.requests[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": '{"n": "one"}'}
    assert retry[-1]["role"] == "user" and "'one' is not of type 'integer'" in retry[-1]["content"]


def test_json_cut_off_by_the_server_is_continued_as_a_trailing_assistant_message(fake, make_model) -> None:
    fake.push(Reply.text('{"n": ', finish_reason="length"), Reply.text("7}"))
    lm = ask(make_model())
    with assistant():
        lm += json("doc", schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    assert lm["doc"] == '{"n": 7}'
    first, second = fake.requests
    assert "response_format" in first and "response_format" not in second
    assert second["messages"] == [*BASE, {"role": "assistant", "content": '{"n": '}]
    stats = lm.usage.constraints["json_schema"]
    assert (stats.satisfied, stats.round_trips) == (1, 1)  # a continuation is part of its attempt


def test_select_reads_its_option_from_the_json_string_the_server_returns(fake, make_model) -> None:
    fake.push(Reply.text('"blue"'))
    lm = ask(make_model())
    with assistant():
        lm += select(["red", "blue"], name="colour")
    assert lm["colour"] == "blue"


def test_grammar_stops_at_max_attempts_with_the_last_answer(fake, make_model) -> None:
    fake.push(Reply.text("no digits"), Reply.text("still none"), Reply.text("42"))
    lm = ask(make_model())
    lm._interpreter.grammar_options = LadderOptions(server=False)
    with limits(max_attempts=2), assistant(), pytest.raises(ConstraintError, match="in 2 attempt") as caught:
        lm += gen("n", regex=r"\d+")
    assert len(fake.requests) == 2
    assert caught.value.last_output == "still none"
    assert 'Rejected answer: "no digits"' in fake.requests[1]["messages"][-1]["content"]


def test_grammar_repair_continues_the_accepted_start_after_the_program_text(fake, make_model) -> None:
    fake.push(Reply.text("555-12x4"), Reply.text("34"))
    lm = ask(make_model())
    lm._interpreter.grammar_options = LadderOptions(server=False)
    with assistant():
        lm += "Call " + gen("phone", regex=r"\d{3}-\d{4}")
    assert lm["phone"] == "555-1234"
    repair = fake.requests[1]["messages"]
    assert repair == [*BASE, {"role": "assistant", "content": "Call 555-12"}]
