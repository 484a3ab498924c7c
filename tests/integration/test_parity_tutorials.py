"""Programs of the shapes guidance's README and tutorials use, adapted only to chat roles, on a model's
natural replies: each gives the text and captures guidance's local engine gives for the same answer.

The local side is `_local_reference` (guidance's engine, its model writing the answer); the plugin side runs
on the fake server, one scripted reply per request it makes.
"""

from __future__ import annotations

from typing import Any

from _local_reference import local_model
from guidance import assistant, gen, guidance, lark, one_or_more, select, user
from test_parity_differential import compare, statement

from guidance_deepinfra.enforcement.ladder import LadderOptions
from guidance_deepinfra.testing import Reply

CLIENT_ONLY = LadderOptions(server=False)


def plugin(fake, make_model, program: Any, *replies: str, question: str = "Go.") -> Any:
    fake.push(*(Reply.text(r) for r in replies))
    lm = make_model()
    lm._interpreter.grammar_options = CLIENT_ONLY
    with user():
        lm += question
    with assistant():
        lm += program
    return lm


def assistant_text(lm: Any) -> str:
    return str(lm).split("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n")


def local(program: Any, answer: str, closing: str | None = None) -> Any:
    lm, _ = local_model([answer], [closing])
    return lm + program


# ----------------------------------------------------------------------------- regex constraints


def test_regex_constraint_on_a_numeric_answer(fake, make_model) -> None:
    program = "Answer: " + gen("answer", regex=r"\d+")
    lm = plugin(fake, make_model, program, "7 balls are left.")
    expected = local(program, "Answer: 7 balls are left.")
    assert lm["answer"] == expected["answer"] == "7"
    assert assistant_text(lm) == str(expected) == "Answer: 7"
    assert len(fake.requests) == 1


def test_proverb_rewrite_with_chapter_and_verse() -> None:
    program = (
        "Where there is no guidance"
        + gen("rewrite", stop="\n")
        + "\n- GPT "
        + gen("chapter", regex="[0-9]+")
        + ":"
        + gen("verse", regex="[0-9]+")
    )
    answer = "Where there is no guidance, a model falls,\n- GPT 4:12"
    compare([statement(program, answer, {"rewrite", "chapter", "verse"}, ("\n",))])


def test_proverb_result(fake, make_model) -> None:
    program = "Where there is no guidance" + gen("rewrite", stop="\n") + "\n- GPT " + gen("chapter", regex="[0-9]+")
    lm = plugin(fake, make_model, program, ", a model falls,\n- GPT 4")
    assert (lm["rewrite"], lm["chapter"]) == (", a model falls,", "4")
    assert assistant_text(lm) == "Where there is no guidance, a model falls,\n- GPT 4"


# ----------------------------------------------------------------------------- chat and gen API


def test_chat_gen_with_stop_and_select_in_one_statement(fake, make_model) -> None:
    program = "Expert: " + gen("expert", stop="\n") + "\nVerdict: " + select(["agree", "disagree"], name="verdict")
    replies = ("Ada Lovelace\n", '"agree"')  # the plugin runs the gen, then the select with DeepInfra's enum
    lm = plugin(fake, make_model, program, *replies)
    expected = local(program, "Expert: Ada Lovelace\nVerdict: agree")
    assert (lm["expert"], lm["verdict"]) == (expected["expert"], expected["verdict"]) == ("Ada Lovelace", "agree")
    assert assistant_text(lm) == str(expected)


def test_gen_api_list_append_and_save_stop_text() -> None:
    program = (
        "Items: "
        + gen("items", regex="[a-z]+", list_append=True)
        + ", "
        + gen("items", regex="[a-z]+", list_append=True)
        + "\nNote: "
        + gen("note", stop_regex=r"[.!]", save_stop_text="mark")
    )
    compare([statement(program, "Items: apple, pear\nNote: fresh!", {"items", "note", "mark"})])


def test_gen_with_temperature_and_max_tokens_inside_a_join(fake, make_model) -> None:
    program = "Code: " + gen("code", regex="[A-Z]{3}", temperature=0.2, max_tokens=5)
    lm = plugin(fake, make_model, program, "XYZ")
    assert lm["code"] == "XYZ"
    assert fake.last["temperature"] == 0.2
    assert fake.last["max_tokens"] == 5 + len("Code: ")


# ----------------------------------------------------------------------------- valid syntax, react, rag


def test_guaranteeing_valid_syntax_with_a_lark_grammar() -> None:
    grammar = lark(
        r"""
        start: "[" item ("," item)* "]"
        item[capture="item", list_append]: /[0-9]+/
        """
    )
    compare([statement(grammar, "[1,22,333] is the list.", {"item"})])


def test_react_step(fake, make_model) -> None:
    @guidance(stateless=True)
    def react_step(lm: Any) -> Any:
        return (
            lm
            + "Thought: "
            + gen("thought", stop="\n")
            + "\nAct: "
            + select(["Search", "Finish"], name="act")
            + "["
            + gen("arg", stop="]")
            + "]"
        )

    # A guidance function's program is one grammar: one request, the model's whole step as its answer.
    lm = plugin(fake, make_model, react_step(), "I should look it up.\nAct: Search[capital of France]")
    expected = local(react_step(), "Thought: I should look it up.\nAct: Search[capital of France]")
    assert (lm["thought"], lm["act"], lm["arg"]) == (expected["thought"], expected["act"], expected["arg"])
    assert assistant_text(lm) == str(expected) == "Thought: I should look it up.\nAct: Search[capital of France]"
    assert len(fake.requests) == 1


def test_rag_answer_with_a_citation(fake, make_model) -> None:
    # The stop " [" begins the text forced next: as one grammar llguidance 1.5 fails internally on it, and a
    # local run raises that failure. The plugin runs the stop gen as its own request and continues from there,
    # giving the text the program describes, as the same program split into two statements gives locally.
    program = "Answer: " + gen("answer", stop=" [") + " [" + gen("source", regex=r"\d") + "]"
    lm = plugin(fake, make_model, program, "Paris is the capital [2]", "2]")
    assert (lm["answer"], lm["source"]) == ("Paris is the capital", "2")
    assert assistant_text(lm) == "Answer: Paris is the capital [2]"
    assert len(fake.requests) == 2
    assert fake.requests[0]["stop"] == [" ["]
    assert fake.requests[1]["messages"][-1]["content"] == "Answer: Paris is the capital ["
    split = local(gen("answer", stop=" ["), "Paris is the capital [", " [")
    assert split["answer"] == lm["answer"]


def test_one_or_more_digits_with_a_capture() -> None:
    program = "Digits: " + gen("digits", regex="[0-9]") + one_or_more(select(["0", "1"]))
    compare([statement(program, "Digits: 5101\n", {"digits"})])
