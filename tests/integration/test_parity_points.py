"""Each departure from a local run that the grammar path once had, pinned on the fake server.

Every expected value here is what guidance's local engine gives for the same program and model answer (the
differential suite in test_parity_differential.py checks that relation in general); the request counts show
the answer was taken as the model gave it, in one request.
"""

from __future__ import annotations

import pytest
from guidance import assistant, capture, gen, lark, select, user

from guidance_deepinfra import ConstraintError, InvalidProgramError
from guidance_deepinfra.enforcement.ladder import LadderOptions
from guidance_deepinfra.enforcement.matcher import clear_cache, compile_node
from guidance_deepinfra.testing import Reply

CLIENT_ONLY = LadderOptions(server=False)


def run(fake, make_model, program, *replies: str):
    fake.push(*(Reply.text(r) for r in replies))
    lm = make_model()
    lm._interpreter.grammar_options = CLIENT_ONLY
    with user():
        lm += "Go."
    with assistant():
        lm += program
    return lm


def assistant_text(lm) -> str:
    return str(lm).split("Go.")[-1].split("assistant", 1)[-1].strip()


def test_stop_gen_then_regex_sets_both_captures_and_hides_the_stop(fake, make_model) -> None:
    program = "Name: " + gen("name", stop=",") + " age " + gen("age", regex=r"\d+")
    lm = run(fake, make_model, program, "Alice, age 42")
    assert (lm["name"], lm["age"]) == ("Alice", "42")
    assert str(lm).endswith("Name: Alice age 42")
    assert len(fake.requests) == 1


def test_forced_text_the_answer_leaves_out_is_inserted_as_locally(fake, make_model) -> None:
    lm = run(fake, make_model, "Name: " + gen("name", stop=",") + " age " + gen("age", regex=r"\d+"), "Alice,42")
    assert (lm["name"], lm["age"]) == ("Alice", "42")
    assert str(lm).endswith("Name: Alice age 42")
    assert len(fake.requests) == 1


def test_hidden_stop_stays_out_of_text_and_enclosing_capture(fake, make_model) -> None:
    lm = run(fake, make_model, capture("Hi " + gen(stop="."), "greet"), "there.")
    assert lm["greet"] == "Hi there"
    assert str(lm).endswith("Hi there")
    assert not str(lm).endswith(".")


def test_save_stop_text_inside_a_grammar(fake, make_model) -> None:
    lm = run(fake, make_model, gen(regex=r"\d+") + gen(stop="!", save_stop_text="s"), "12ab!zz")
    assert lm["s"] == "!"
    assert str(lm).endswith("12ab")


def test_lark_capture_after_another_attribute(fake, make_model) -> None:
    grammar = lark('start: "x" num\nnum[max_tokens=8, capture="n"]: /[0-9]+/')
    lm = run(fake, make_model, grammar, "x42")
    assert lm["n"] == "42"


def test_attributes_of_a_gen_inside_a_join_are_sent(fake, make_model) -> None:
    run(fake, make_model, "Call " + gen("phone", regex=r"\d{3}-\d{4}", temperature=0, max_tokens=12), "555-1234")
    body = fake.last
    assert body["temperature"] == 0
    assert body["max_tokens"] == 12 + len("Call ")


def test_max_tokens_of_a_gen_inside_a_select_is_sent(fake, make_model) -> None:
    run(fake, make_model, select(["no", gen(regex="y+", max_tokens=3)], name="c"), "yy")
    assert fake.last["max_tokens"] == 3


def test_lark_rule_temperature_is_sent(fake, make_model) -> None:
    run(fake, make_model, lark("start: n\nn[temperature=0.3]: /[0-9]+/"), "7")
    assert fake.last["temperature"] == 0.3


def test_gens_with_different_temperatures_inside_one_capture_are_refused_before_any_request(fake, make_model) -> None:
    # (at the top level of a join they are split into requests: tests/integration/test_sampling_split.py)
    program = capture(gen(regex="a+", temperature=0.2) + "," + gen(regex="b+", temperature=0.9), "both")
    with pytest.raises(InvalidProgramError, match="different temperatures"):
        run(fake, make_model, program, "a,b")
    assert fake.requests == []


def test_tutorial_shape_stop_then_forced_text_then_regex_in_one_request(fake, make_model) -> None:
    # The proverb tutorial's shape: the stop is the first byte of the text the grammar forces next.
    program = "Where there is no guidance" + gen("rewrite", stop="\n") + "\n- GPT " + gen("chapter", regex="[0-9]+")
    answer = ", a model falls, but in an abundance of instructions there is safety.\n- GPT 4"
    lm = run(fake, make_model, program, answer)
    assert lm["rewrite"] == ", a model falls, but in an abundance of instructions there is safety."
    assert lm["chapter"] == "4"
    assert str(lm).endswith("safety.\n- GPT 4")
    assert len(fake.requests) == 1


def test_multi_byte_stop_repeated_by_the_forced_text_runs_as_two_statements(fake, make_model) -> None:
    # llguidance 1.5 fails internally on `gen(stop="==") + "== "` as one grammar (a local run raises that
    # failure as ValueError). Run as two statements, as a user would split it, the program works: the stop gen
    # is sent with its stop, then the rest continues the text.
    program = gen("lhs", stop="==") + "== " + gen("rhs", regex=r"\d+")
    lm = run(fake, make_model, program, "2+2 == 4", "4")
    first, second = fake.requests
    assert first["stop"] == ["=="]
    assert second["messages"][-1] == {"role": "assistant", "content": "2+2 == "}
    assert (lm["lhs"], lm["rhs"]) == ("2+2 ", "4")
    assert str(lm).endswith("2+2 == 4")


@pytest.mark.parametrize(
    ("wrap", "reply"),
    [
        (lambda g: capture(g, "c"), "Paris"),
        (lambda g: select([g, "x"], name="c"), "Answer: Paris"),
        (lambda g: g + gen(regex=""), "Paris"),
    ],
)
def test_stop_gen_ending_a_capture_option_or_grammar_accepts_an_answer_that_ends(fake, make_model, wrap, reply) -> None:
    lm = run(fake, make_model, wrap("Answer: " + gen("a", stop="\n", save_stop_text="s")), reply)
    assert lm["a"] == "Paris"
    assert lm["s"] == ""
    assert str(lm).endswith("Paris")
    assert len(fake.requests) == 1


def test_an_llguidance_failure_is_typed_and_not_cached(fake, make_model) -> None:
    clear_cache()
    node = gen("lhs", stop="==") + "== " + gen("rhs", regex=r"\d+")
    compiled = compile_node(node)
    with pytest.raises(InvalidProgramError, match="llguidance fails"):
        compiled.check("2+2 ==")
    assert compiled.check("2+2 =").viable == len("2+2 =")  # the compiled template still works


def test_constraint_error_still_reports_every_attempt(fake, make_model) -> None:
    with pytest.raises(ConstraintError) as caught:
        run(fake, make_model, gen("n", regex=r"\d+"), "none", "none", "none")
    assert len(caught.value.attempts) == 3


def test_a_typo_in_place_of_forced_text_is_repaired_not_filled_in(fake, make_model) -> None:
    # Forced text is inserted where the answer leaves it out after a hidden stop only; elsewhere a different
    # byte is a deviation (here a typo for the quote), and the ladder continues the accepted prefix.
    grammar = lark('start: "[" item ("," item)* "]"\nitem: /"[a-z]+"/ ":" /[0-9]+/', name="v")
    lm = run(fake, make_model, grammar, 'a":1,xbc":22]', 'bc":22]')
    assert lm["v"] == '["a":1,"bc":22]'
    assert fake.last["messages"][-1] == {"role": "assistant", "content": '["a":1,"'}


def _local_run(program, answer: str, stop: str | None) -> tuple[str, dict]:
    """guidance's local engine on the same program, its model writing `answer` (see _local_reference)."""
    from _local_reference import local_model

    lm, _ = local_model([answer], [stop])
    lm += program
    return str(lm), lm


def test_a_limited_gen_joined_with_an_unbounded_part_runs_as_a_request_of_its_own(fake, make_model) -> None:
    """One request cannot carry the stop gen's limit beside an unbounded regex gen: that gen is sent alone."""
    program = "Name: " + gen("name", stop=",", max_tokens=8) + " age " + gen("age", regex=r"\d+")
    lm = run(fake, make_model, program, "Alice, age 42", "42")
    first, second = fake.requests
    assert (first["max_tokens"], first["stop"]) == (8, [","])
    assert "max_tokens" not in second
    assert second["messages"][-1] == {"role": "assistant", "content": "Name: Alice age "}
    local_text, local_lm = _local_run(program, "Name: Alice, age 42", ",")
    assert (lm["name"], lm["age"]) == (local_lm["name"], local_lm["age"]) == ("Alice", "42")
    assert local_text.endswith("Name: Alice age 42") and str(lm).endswith("Name: Alice age 42")


def test_a_limit_nested_where_no_request_can_carry_it_is_refused_before_any_request(fake, make_model) -> None:
    program = capture(gen("a", stop=",", max_tokens=5) + gen("b", regex=r"\d+"), "both")
    with pytest.raises(InvalidProgramError, match="max_tokens"):
        run(fake, make_model, program, "x, 1")
    assert fake.requests == []


def test_limits_that_one_request_can_carry_are_not_split(fake, make_model) -> None:
    program = "Name: " + gen("name", stop=",", max_tokens=5) + " age " + gen("age", regex=r"\d{2}", max_tokens=3)
    lm = run(fake, make_model, program, "Alice, age 42")
    assert len(fake.requests) == 1
    assert fake.last["max_tokens"] == len("Name: ") + 5 + 1 + len(" age ") + 3
    assert (lm["name"], lm["age"]) == ("Alice", "42")
