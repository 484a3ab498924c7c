"""Demo scenarios (and cassettes) for grammar constraints; the demo reads `SCENARIOS` (see demo/__init__.py)."""

from __future__ import annotations

from typing import Any

from guidance import assistant, gen, lark, system, user

from ..model import DeepInfra
from ..testing.fake_server import Reply
from .scenario import ScenarioSet

SCENARIOS = ScenarioSet()
scenario = SCENARIOS.scenario

ARITHMETIC = r"""
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]+/
"""


def _check_regex(result: dict[str, Any]) -> None:
    assert result["date"] == "1969-07-20", result["date"]
    assert result["text"].endswith("Apollo 11 landed on 1969-07-20")
    assert result["round_trips"] == 1


@scenario(
    "regex_date",
    "gen(regex=ISO date): sent as a JSON Schema string pattern, the decoded string checked by llguidance.",
    synthetic=[Reply.text('"1969-07-20"', prompt_tokens=34, completion_tokens=7)],
    check=_check_regex,
)
def regex_date(lm: DeepInfra) -> dict[str, Any]:
    with user():
        lm += "On what date did Apollo 11 land on the Moon? Answer with the date only."
    with assistant():
        lm += "Apollo 11 landed on " + gen("date", regex=r"\d{4}-\d{2}-\d{2}", temperature=0)
    stats = lm.usage.constraints["regex"]
    return {"date": lm["date"], "text": str(lm), "round_trips": stats.round_trips, "usage": lm.usage.summary()}


def _check_lark(result: dict[str, Any]) -> None:
    assert result["expr"] == "(3+4)*12", result["expr"]
    assert result["round_trips"] == 2


@scenario(
    "lark_arithmetic",
    "A Lark grammar: the reply goes wrong midway, the accepted prefix is continued (repair by continuation).",
    synthetic=[
        Reply.text("(3+4)x12", prompt_tokens=41, completion_tokens=5),
        Reply.text("*12", prompt_tokens=47, completion_tokens=2),
    ],
    check=_check_lark,
)
def lark_arithmetic(lm: DeepInfra) -> dict[str, Any]:
    with system():
        lm += "You write arithmetic expressions using only digits, + - * / and parentheses."
    with user():
        lm += "Write an expression for: add three and four, then multiply by twelve."
    with assistant():
        lm += lark(ARITHMETIC, name="expr", temperature=0)
    stats = lm.usage.constraints["grammar"]
    return {"expr": lm["expr"], "text": str(lm), "round_trips": stats.round_trips, "usage": lm.usage.summary()}


def _check_mixed(result: dict[str, Any]) -> None:
    assert (result["name"], result["age"]) == ("Grace", "85"), result
    assert result["text"].endswith("Name: Grace, age 85.")


@scenario(
    "mixed_captures",
    "Literal text and two regex captures in one grammar: forced prefix sent, prose after the match cut off.",
    synthetic=[Reply.text('"Grace, age 85. She was a computer scientist."', prompt_tokens=38, completion_tokens=12)],
    check=_check_mixed,
)
def mixed_captures(lm: DeepInfra) -> dict[str, Any]:
    with user():
        lm += "Give the name and age at death of the inventor of the first compiler."
    with assistant():
        lm += "Name: " + gen(regex=r"[A-Z][a-z]+", name="name") + ", age " + gen(regex=r"\d+", name="age") + "."
    return {"name": lm["name"], "age": lm["age"], "text": str(lm), "usage": lm.usage.summary()}
