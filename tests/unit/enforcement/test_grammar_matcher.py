"""llguidance checks compiled once: verdicts, embedded matches, captures equal to guidance's own match."""

from __future__ import annotations

import pytest
from guidance import gen, lark, regex, select, substring
from guidance._ast import RuleNode
from hypothesis import given, settings
from hypothesis import strategies as st

from guidance_deepinfra.enforcement.matcher import compile_node
from guidance_deepinfra.errors import InvalidProgramError
from guidance_deepinfra.lowering.pattern import server_form, translate_regex

PHONE = gen("phone", regex=r"\d{3}-\d{4}")
PERSON = "Name: " + gen(regex=r"[A-Z][a-z]+", name="name") + ", age " + gen(regex=r"\d+", name="age") + "."
ARITH = lark(
    r"""
    start: expr
    expr: term (("+" | "-") term)*
    term: factor (("*" | "/") factor)*
    factor: NUMBER | "(" expr ")"
    NUMBER: /[0-9]+/
    """
)


def test_verdict_reports_viable_prefix_longest_match_and_forced_bytes() -> None:
    compiled = compile_node(PHONE)
    assert compiled.check("555-1234").complete
    typo = compiled.check("555-12a4")
    assert (typo.complete, typo.viable_text, typo.longest_match) == (False, "555-12", None)
    extra = compiled.check("555-1234. Anything else?")
    assert not extra.complete and extra.matched_text == "555-1234"
    assert compiled.check("555").forced_next == "-"


def test_forced_prefix_comes_from_the_grammar() -> None:
    assert compile_node(PERSON).forced_prefix == "Name: "
    assert compile_node(PHONE).forced_prefix == ""


def test_one_compiled_grammar_per_grammar_string() -> None:
    assert compile_node(gen("phone", regex=r"\d{3}-\d{4}")) is compile_node(PHONE)


def test_embedded_match_only_when_unambiguous() -> None:
    compiled = compile_node(PHONE)
    text = "Sure! The number is 555-1234, call anytime."
    span = compiled.find_embedded(text)
    assert span is not None and text[span[0] : span[1]] == "555-1234"
    assert compiled.find_embedded("Either 555-1234 or 555-9876.") is None
    assert compiled.find_embedded("no number here") is None


@pytest.mark.parametrize(
    ("node", "text"),
    [
        (PHONE, "555-1234"),
        (PERSON, "Name: Bob, age 42."),
        ("a" + select([gen(regex=r"\d+", name="num"), gen(regex="[a-z]+", name="word")], name="which"), "a77"),
        (
            gen("items", regex=r"[a-z]+", list_append=True) + "," + gen("items", regex=r"[a-z]+", list_append=True),
            "ab,cd",
        ),
        (RuleNode(name="r", value=substring("the quick brown fox"), capture="sub"), "quick brown"),
        (ARITH, "(1+2)*3"),
        (lark('start: key "=" val\nkey[capture="k"]: /[a-z]+/\nval[capture="v"]: /[0-9]+/'), "x=10"),
    ],
)
def test_captures_equal_guidance_match(node, text) -> None:
    expected = node.match(text, enforce_max_tokens=False)
    assert expected is not None
    compiled = compile_node(node)
    assert compiled.is_match(text)
    assert compiled.captures(text) == dict(expected.captures)


def test_invalid_regex_and_grammar_are_program_errors() -> None:
    with pytest.raises(InvalidProgramError, match="unclosed"):
        compile_node(gen(regex="(ab"))
    with pytest.raises(InvalidProgramError):
        compile_node(lark("start: undefined_rule"))


@pytest.mark.parametrize(
    ("source", "ecma"),
    [
        (r"\d{3}-\d{4}", "[0-9]{3}-[0-9]{4}"),
        (r"(?P<y>\d{4})-\d\d", "(?:[0-9]{4})-[0-9][0-9]"),
        (r"[\w.]+@[a-z]+\.com", r"[A-Za-z0-9_.]+@[a-z]+\.com"),
        (r"[]a-]+?", r"[\]a-]+"),
    ],
)
def test_regex_translation_narrows_to_ecma(source: str, ecma: str) -> None:
    assert translate_regex(source) == ecma


@pytest.mark.parametrize("source", [r"\D+", r"[^\d]", r"(?i)abc", r"\p{L}+", r"\bword", r"^a$", r"[a-z&&[^x]]", "😀+"])
def test_regex_translation_refuses_what_would_widen_or_change_meaning(source: str) -> None:
    assert server_form(gen(regex=source)) is None


def test_server_form_of_joins_and_finite_languages() -> None:
    form = server_form(PERSON)
    assert form is not None and form.anchored == r"^(?:Name: (?:[A-Z][a-z]+), age (?:[0-9]+)\.)$"
    finite = server_form(select(["yes", "no"]) + "!")
    assert finite is not None and finite.json_schema() == {"type": "string", "enum": ["no!", "yes!"]}
    assert server_form(ARITH) is None


TRANSLATED = [r"\d{3}-\d{4}", r"[A-Z][a-z]+ [0-9]{1,3}(\.\d+)?", r"(ab|c[de])*x?", r"\w+@\w+\.(com|org)", r"\s?-?\d+"]


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(data=st.data(), source=st.sampled_from(TRANSLATED))
def test_every_string_the_translation_allows_is_accepted_by_llguidance(data, source: str) -> None:
    form = server_form(regex(source))
    assert form is not None
    text = data.draw(st.from_regex(form.anchored, fullmatch=True))
    assert compile_node(regex(source)).is_match(text), (source, text)
