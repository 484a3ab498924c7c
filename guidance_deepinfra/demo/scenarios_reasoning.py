"""Demo scenarios (and cassettes) for reasoning models; the demo reads `SCENARIOS` (see demo/__init__.py)."""

from __future__ import annotations

from typing import Any

import pydantic
from guidance import assistant, select, user
from guidance import json as guidance_json

from ..model import DeepInfra
from ..testing.fake_server import Reply
from ..thinking import reasoning
from .scenario import ScenarioSet

SCENARIOS = ScenarioSet()
scenario = SCENARIOS.scenario

REASONING_MODEL = "deepseek-ai/DeepSeek-R1-0528"


class City(pydantic.BaseModel):
    city: str
    country: str


def _check_reasoning(result: dict[str, Any]) -> None:
    City.model_validate_json(result["answer"])
    assert "think" not in result["text"], "reasoning leaked into the program text"
    assert result["capital"] in ("yes", "no")
    assert result["reasoning"], "the reasoning was not kept"


@scenario(
    "reasoning_json",
    "A reasoning model thinking inline (<think>...</think>) before a json() answer, then a select() with "
    "reasoning turned off for its block.",
    synthetic=[
        Reply.text(
            '{"city": "Lyon", "country": "France"}',
            reasoning="The user wants a French city that is not the capital. Lyon is the third largest. "
            "The schema needs city and country.",
            reasoning_as="inline",
            prompt_tokens=52,
        ),
        Reply.text('"no"', prompt_tokens=80, completion_tokens=2),
    ],
    check=_check_reasoning,
    model=REASONING_MODEL,
)
def reasoning_json(lm: DeepInfra) -> dict[str, Any]:
    with user():
        lm += "Name a French city that is not the capital, as JSON."
    with assistant():
        lm += guidance_json("answer", schema=City, temperature=0)
    with user():
        lm += "Is that city the capital of France?"
    with assistant(), reasoning("none"):
        lm += select(["yes", "no"], name="capital")
    entries = [f"{e.capture} attempt {e.attempt} ({e.source}, accepted={e.accepted})" for e in lm.reasoning]
    return {
        "answer": lm["answer"],
        "capital": lm["capital"],
        "reasoning": entries,
        "reasoning_tokens": lm.usage.reasoning_tokens,
        "text": str(lm),
        "usage": lm.usage.summary(),
    }
