"""Demo scenarios (and cassettes) for json constraints; the demo reads `SCENARIOS` (see demo/__init__.py)."""

from __future__ import annotations

import json
from typing import Any, Literal

import pydantic
from guidance import assistant, gen, select, system, user
from guidance import json as guidance_json

from ..model import DeepInfra
from ..testing.fake_server import Reply
from .scenario import ScenarioSet

SCENARIOS = ScenarioSet()
scenario = SCENARIOS.scenario


class Book(pydantic.BaseModel):
    """A pydantic model with a nested model, an enum and an array, sent as DeepInfra's json_schema."""

    class Author(pydantic.BaseModel):
        name: str
        born: int

    title: str
    genre: Literal["novel", "poetry", "essay"]
    authors: list[Author]


def _check_json_object(result: dict[str, Any]) -> None:
    value = json.loads(result["answer"])
    assert isinstance(value, dict) and value, "not a non-empty JSON object"
    assert result["text"].endswith(result["answer"])


@scenario(
    "json_object",
    "json() without a schema: response_format json_object, plus a system line asking for JSON.",
    synthetic=[Reply.text('{"city": "Paris", "country": "France"}', prompt_tokens=34, completion_tokens=12)],
    check=_check_json_object,
)
def json_object(lm: DeepInfra) -> dict[str, Any]:
    with user():
        lm += "Name a European capital and its country."
    with assistant():
        lm += guidance_json("answer", temperature=0)
    return {"answer": lm["answer"], "text": str(lm), "usage": lm.usage.summary()}


def _check_book(result: dict[str, Any]) -> None:
    book = Book.model_validate_json(result["book"])
    assert book.authors, "no authors"


@scenario(
    "json_schema_pydantic",
    "json(schema=<pydantic model>) with a nested model ($defs/$ref), an enum and an array.",
    synthetic=[
        Reply.text(
            json.dumps(
                {
                    "title": "Les Fleurs du mal",
                    "genre": "poetry",
                    "authors": [{"name": "Charles Baudelaire", "born": 1821}],
                }
            ),
            prompt_tokens=41,
            completion_tokens=30,
        )
    ],
    check=_check_book,
)
def json_schema_pydantic(lm: DeepInfra) -> dict[str, Any]:
    with system():
        lm += "You are a librarian."
    with user():
        lm += "Describe one famous French book."
    with assistant():
        lm += guidance_json("book", schema=Book, temperature=0)
    return {"book": lm["book"], "usage": lm.usage.summary()}


def _check_select(result: dict[str, Any]) -> None:
    assert result["sentiment"] in ("positive", "negative", "neutral")
    assert result["text"].endswith(result["sentiment"])


@scenario(
    "select_enum",
    "select() over literal strings: a json_schema enum, the JSON string decoded into the option.",
    synthetic=[Reply.text('"positive"', prompt_tokens=30, completion_tokens=3)],
    check=_check_select,
)
def select_enum(lm: DeepInfra) -> dict[str, Any]:
    with user():
        lm += "Sentiment of: 'The soup was wonderful.'"
    with assistant():
        lm += select(["positive", "negative", "neutral"], name="sentiment")
    return {"sentiment": lm["sentiment"], "text": str(lm), "usage": lm.usage.summary()}


def _check_verdict(result: dict[str, Any]) -> None:
    assert result["verdict"] in ("guilty", "innocent")
    assert f"Verdict: {result['verdict']}\nReason: " in result["text"]
    assert result["reason"].strip()


@scenario(
    "mixed_verdict",
    "An assistant turn mixing text, a select and a gen: the prefix is sent before the constrained part.",
    synthetic=[
        Reply.text('"innocent"', prompt_tokens=52, completion_tokens=3),
        Reply.text("The alibi was confirmed by two witnesses.", prompt_tokens=58, completion_tokens=9),
    ],
    check=_check_verdict,
)
def mixed_verdict(lm: DeepInfra) -> dict[str, Any]:
    with user():
        lm += "The accused was seen in another city at the time of the theft. Give a verdict and a reason."
    with assistant():
        lm += "Verdict: " + select(["guilty", "innocent"], name="verdict") + "\nReason: " + gen("reason", max_tokens=20)
    return {"verdict": lm["verdict"], "reason": lm["reason"], "text": str(lm), "usage": lm.usage.summary()}
