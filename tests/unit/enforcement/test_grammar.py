"""The grammar ladder on the fake server: request bodies, program text and captures for each rung and limit."""

from __future__ import annotations

import json

import pytest
from guidance import assistant, gen, lark, select, substring, user

from guidance_deepinfra import ConstraintError, InvalidProgramError, ModelProfile, UnsupportedFeatureWarning, limits
from guidance_deepinfra.enforcement.ladder import LADDER, LadderOptions
from guidance_deepinfra.testing import Reply

CLIENT_ONLY = LadderOptions(server=False)
PHONE = r"\d{3}-\d{4}"
KEY_VALUES = lark(
    r"""
    start: line+
    line: KEY "=" VALUE "\n"
    KEY: /[a-z_]+/
    VALUE: /[0-9]+/
    """
)


def ask(lm, question: str = "Give it."):
    with user():
        lm += question
    return lm


def model(make_model, options: LadderOptions = LADDER, **kwargs):
    lm = make_model(**kwargs)
    lm._interpreter.grammar_options = options
    return ask(lm)


def last_assistant(body: dict) -> str:
    assert body["messages"][-1]["role"] == "assistant"
    return body["messages"][-1]["content"]


# ----------------------------------------------------------------------------- server rung


def test_regular_regex_goes_to_the_server_as_json_schema_pattern(fake, make_model) -> None:
    fake.push(Reply.text('"555-1234"'))
    lm = model(make_model)
    with assistant():
        lm += "Call " + gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234"
    assert str(lm).endswith("Call 555-1234")
    body = fake.last
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "constrained_text",
            "schema": {"type": "string", "pattern": "^(?:(?:[0-9]{3}-[0-9]{4}))$"},
        },
    }
    assert last_assistant(body) == "Call "
    stats = lm.usage.constraints["regex"]
    assert (stats.satisfied, stats.round_trips, stats.prompt_tokens) == (1, 1, 20)


def test_regex_response_format_only_when_the_profile_says_so_and_learned_on_refusal(fake, make_model) -> None:
    fake.push(Reply.unsupported("regex response format", "test/model"), Reply.text("555-1234"))
    lm = model(make_model, profile=ModelProfile(regex_format=True))
    with pytest.warns(UnsupportedFeatureWarning, match="regex_format"), assistant():
        lm += gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234"
    first, second = fake.requests
    assert first["response_format"] == {"type": "regex", "regex": "(?:[0-9]{3}-[0-9]{4})"}
    assert "response_format" not in second
    stats = lm.usage.constraints["regex"]
    assert stats.round_trips == 2 and stats.satisfied == 1


def test_learned_refusal_skips_the_regex_format_next_time(fake, make_model) -> None:
    fake.push(
        Reply.unsupported("regex response format", "test/model"), Reply.text("555-1234"), Reply.text('"555-9876"')
    )
    lm = model(make_model)
    lm._interpreter.profiles._learned[(lm.transport.base_url, "test/model")] = ModelProfile(regex_format=True)
    with pytest.warns(UnsupportedFeatureWarning, match="regex_format"), assistant():
        lm += gen("a", regex=PHONE)
    with user():
        lm += "Another."
    with assistant():
        lm += gen("b", regex=PHONE)
    assert (lm["a"], lm["b"]) == ("555-1234", "555-9876")
    assert fake.requests[2]["response_format"]["type"] == "json_schema"


def test_finite_language_is_sent_as_enum(fake, make_model) -> None:
    fake.push(Reply.text('"maybe"'))
    lm = model(make_model)
    with assistant():
        lm += gen("answer", regex="yes|no|maybe")
    assert lm["answer"] == "maybe"
    assert fake.last["response_format"]["json_schema"]["schema"] == {"type": "string", "enum": ["maybe", "no", "yes"]}


def test_lark_grammar_is_not_sent_to_the_server(fake, make_model) -> None:
    fake.push(Reply.text("a=1\nb=22\n"))
    lm = model(make_model)
    with assistant():
        lm += KEY_VALUES
    assert str(lm).endswith("a=1\nb=22\n")
    assert "response_format" not in fake.last
    assert lm.usage.constraints["grammar"].satisfied == 1


# ----------------------------------------------------------------------------- forced prefix


def test_forced_prefix_is_sent_as_the_trailing_assistant_message(fake, make_model) -> None:
    fake.push(Reply.text("Bob, age 42."))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += "Record: " + (
            "Name: " + gen(regex=r"[A-Z][a-z]+", name="name") + ", age " + gen(regex=r"\d+", name="age") + "."
        )
    assert (lm["name"], lm["age"]) == ("Bob", "42")
    assert str(lm).endswith("Record: Name: Bob, age 42.")
    assert last_assistant(fake.last) == "Record: Name: "
    assert "response_format" not in fake.last


def test_select_over_non_literal_alternatives(fake, make_model) -> None:
    fake.push(Reply.text("42 apples"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += "Count: " + select([gen(regex=r"\d+", name="n") + " apples", "none"], name="count")
    assert lm["count"] == "42 apples" and lm["n"] == "42"
    assert len(fake.requests) == 1


# ----------------------------------------------------------------------------- trim


def test_trailing_prose_is_cut_where_the_match_ends(fake, make_model) -> None:
    fake.push(Reply.text("555-1234. Let me know if you need more."))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += gen("phone", regex=PHONE) + " ok"
    assert lm["phone"] == "555-1234"
    assert str(lm).endswith("555-1234 ok")
    assert len(fake.requests) == 1


def test_one_match_wrapped_in_prose_is_taken(fake, make_model) -> None:
    fake.push(Reply.text("Sure! The number is 555-1234, call anytime."))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234" and str(lm).endswith("\n555-1234")
    assert len(fake.requests) == 1


def test_two_candidate_matches_are_not_guessed_between(fake, make_model) -> None:
    fake.push(Reply.text("Either 555-1234 or 555-9876."), Reply.text("555-9876"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += gen("phone", regex=PHONE)
    assert lm["phone"] == "555-9876"
    rejected, feedback = fake.last["messages"][-2:]
    assert rejected == {"role": "assistant", "content": "Either 555-1234 or 555-9876."}
    assert feedback["role"] == "user" and "does not have the required form" in feedback["content"]


# ----------------------------------------------------------------------------- repair


def test_typo_is_repaired_by_continuing_the_accepted_prefix(fake, make_model) -> None:
    fake.push(Reply.text("555-12a4"), Reply.text("34"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += "Phone: " + gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234"
    assert str(lm).endswith("Phone: 555-1234")
    first, second = fake.requests
    assert last_assistant(first) == "Phone: "
    assert last_assistant(second) == "Phone: 555-12"
    assert second["messages"][:-1] == first["messages"][:-1]


def test_truncated_answer_is_continued_with_forced_bytes_added(fake, make_model) -> None:
    fake.push(Reply.text("555", finish_reason="length"), Reply.text("1234"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234"
    assert last_assistant(fake.last) == "555-"


def test_a_restart_instead_of_a_continuation_is_accepted(fake, make_model) -> None:
    fake.push(Reply.text("555-12a4"), Reply.text("555-1234"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234"


def test_lark_grammar_captures_after_repair(fake, make_model) -> None:
    grammar = lark('start: first ("," pair)*\nfirst[capture="first"]: pair\npair: /[a-z]+/ "=" /[0-9]+/')
    fake.push(Reply.text("a=1,b=x"), Reply.text("2,c=3"))
    lm = model(make_model)
    with assistant():
        lm += grammar
    assert str(lm).endswith("a=1,b=2,c=3")
    assert lm["first"] == "a=1"
    assert last_assistant(fake.last) == "a=1,b="


# ----------------------------------------------------------------------------- feedback


def test_wrong_answer_gets_feedback_that_states_the_regex(fake, make_model) -> None:
    fake.push(Reply.text("I cannot share phone numbers."), Reply.text("555-1234"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += "Phone: " + gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234"
    messages = fake.last["messages"]
    assert messages[-3] == {"role": "assistant", "content": "Phone: I cannot share phone numbers."}
    feedback = messages[-2]["content"]
    assert messages[-2]["role"] == "user"
    assert "[0-9]{3}-[0-9]{4}" in feedback and '"Phone: I cannot share phone numbers."' in feedback
    assert "right up to 'Phone: ' but 'I cannot share" in feedback
    assert messages[-1] == {"role": "assistant", "content": "Phone: "}


def test_feedback_for_a_grammar_quotes_the_lark_rules(fake, make_model) -> None:
    fake.push(Reply.text("Here you go"), Reply.text("a=1\n"))
    lm = model(make_model)
    with assistant():
        lm += KEY_VALUES
    feedback = fake.last["messages"][-1]["content"]
    assert "Lark grammar" in feedback and 'KEY "=" VALUE' in feedback
    assert str(lm).endswith("a=1\n")


def test_substring_is_enforced(fake, make_model) -> None:
    fake.push(Reply.text("quick brown cat"), Reply.text("quick brown"))
    lm = model(make_model, LadderOptions(server=False, trim=False, repair=False))
    with assistant():
        lm += substring("the quick brown fox", name="part")
    assert lm["part"] == "quick brown"


# ----------------------------------------------------------------------------- limits


def test_attempts_exhausted_raise_with_every_attempt(fake, make_model) -> None:
    fake.push(Reply.text("no"), Reply.text("still no"), Reply.text("never"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += "Phone: "
        with pytest.raises(ConstraintError) as info:
            lm += gen("phone", regex=PHONE)
    error = info.value
    assert PHONE in error.constraint and "phone" in error.constraint
    assert [a.text for a in error.attempts] == ["no", "still no", "never"]
    assert [a.strategy for a in error.attempts] == ["generate", "feedback", "feedback"]
    assert all(a.errors for a in error.attempts)
    assert len(fake.requests) == 3
    assert "phone" not in lm and str(lm).endswith("Phone: ")  # the failed += left the program as it was


def test_per_call_max_attempts(fake, make_model) -> None:
    fake.push(Reply.text("no"))
    lm = model(make_model, CLIENT_ONLY, max_attempts=5)
    with assistant(), limits(max_attempts=1), pytest.raises(ConstraintError) as info:
        lm += gen("phone", regex=PHONE)
    assert len(info.value.attempts) == 1 and len(fake.requests) == 1


def test_token_budget_caps_max_tokens_and_stops_the_ladder(fake, make_model) -> None:
    fake.push(
        Reply.text("no", prompt_tokens=40, completion_tokens=5), Reply.text("no", prompt_tokens=40, completion_tokens=5)
    )
    lm = model(make_model, CLIENT_ONLY, max_attempts=10)
    with assistant(), limits(token_budget=60), pytest.raises(ConstraintError, match="token budget of 60"):
        lm += gen("phone", regex=PHONE, max_tokens=30)
    assert [r["max_tokens"] for r in fake.requests] == [30, 15]


def test_invalid_regex_is_refused_before_any_request(fake, make_model) -> None:
    lm = model(make_model)
    with assistant():
        with pytest.raises(InvalidProgramError, match="unclosed"):
            lm += gen("x", regex="(ab")
        with pytest.raises(InvalidProgramError):
            lm += lark("start: missing")
    assert fake.requests == []


def test_plain_retry_resends_the_same_request(fake, make_model) -> None:
    from guidance_deepinfra.enforcement.ladder import PLAIN_RETRY

    fake.push(Reply.text("555-12a4"), Reply.text("555-1234"))
    lm = model(make_model, PLAIN_RETRY)
    with assistant():
        lm += gen("phone", regex=PHONE)
    first, second = fake.requests
    assert first == second and lm["phone"] == "555-1234"


def test_truncated_json_string_from_the_server_is_decoded(fake, make_model) -> None:
    fake.push(Reply.text('"555-12', finish_reason="length"), Reply.text("34"))
    lm = model(make_model)
    with assistant():
        lm += gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234"
    assert "response_format" not in fake.last and last_assistant(fake.last) == "555-12"
    assert json.dumps(lm["phone"]) == '"555-1234"'


def test_join_of_regex_gens_is_one_grammar_and_one_request(fake, make_model) -> None:
    fake.push(Reply.text('"42-answer"'))
    lm = model(make_model)
    with assistant():
        lm += gen(regex=r"\d+", name="n") + "-" + gen(regex=r"[a-z]+", name="w")
    assert (lm["n"], lm["w"]) == ("42", "answer")
    assert len(fake.requests) == 1
    pattern = fake.last["response_format"]["json_schema"]["schema"]["pattern"]
    assert pattern == "^(?:(?:[0-9]+)-(?:[a-z]+))$"
    assert lm.usage.constraints["regex"].satisfied == 1


def test_server_form_skips_the_forced_prefix_sent_as_assistant_text(fake, make_model) -> None:
    fake.push(Reply.text('"Grace, age 85."'))
    lm = model(make_model)
    with assistant():
        lm += "Name: " + gen(regex=r"[A-Z][a-z]+", name="name") + ", age " + gen(regex=r"\d+", name="age") + "."
    assert (lm["name"], lm["age"]) == ("Grace", "85")
    body = fake.last
    assert last_assistant(body) == "Name: "
    assert body["response_format"]["json_schema"]["schema"]["pattern"] == "^(?:(?:[A-Z][a-z]+), age (?:[0-9]+)\\.)$"


def test_a_slip_right_after_a_complete_match_is_continued_not_cut(fake, make_model) -> None:
    arithmetic = lark('start: expr\nexpr: NUM (("+" | "*") NUM)*\nNUM: /[0-9]+/')
    fake.push(Reply.text("3+4x12"), Reply.text("*12"))
    lm = model(make_model)
    with assistant():
        lm += arithmetic
    assert str(lm).endswith("3+4*12")
    assert last_assistant(fake.last) == "3+4"


def test_a_continuation_that_is_another_answer_is_not_taken_for_a_restart(fake, make_model) -> None:
    fake.push(Reply.text("555-12a4"), Reply.text("x"), Reply.text("555-1234"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234"
    assert [m["role"] for m in fake.last["messages"]] == ["user", "assistant", "user"]  # feedback after the repair


def test_nothing_is_continued_once_the_grammar_can_take_no_more(fake, make_model) -> None:
    fake.push(Reply.text("555-12345"))
    lm = model(make_model, CLIENT_ONLY)
    with assistant():
        lm += gen("phone", regex=PHONE)
    assert lm["phone"] == "555-1234" and len(fake.requests) == 1


def test_an_answer_cut_by_the_output_limit_is_continued_even_if_it_matches(fake, make_model) -> None:
    fake.push(Reply.text("a=1\n", finish_reason="length"), Reply.text("b=2\n"))
    lm = model(make_model)
    with assistant():
        lm += KEY_VALUES
    assert str(lm).endswith("a=1\nb=2\n")
    assert last_assistant(fake.last) == "a=1\n"


def test_valid_content_is_never_dropped_to_reach_an_earlier_match(fake, make_model) -> None:
    fake.push(Reply.text("a=1\nb=?\n"), Reply.text("?"), Reply.text("a=1\nb=2\n"))
    lm = model(make_model)
    with assistant():
        lm += KEY_VALUES
    assert str(lm).endswith("a=1\nb=2\n")  # not cut back to "a=1\n"
    assert [last_assistant(r) if r["messages"][-1]["role"] == "assistant" else None for r in fake.requests] == [
        None,
        "a=1\nb=",
        None,
    ]
