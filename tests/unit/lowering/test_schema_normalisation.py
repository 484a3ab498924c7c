"""A user's schema is normalised once (`schema_from_user`), for json() and for `extract` alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

import guidance_deepinfra
from guidance_deepinfra import InvalidProgramError, extract
from guidance_deepinfra.extraction.schema import Schema, load_schema
from guidance_deepinfra.lowering.schema import schema_from_user
from guidance_deepinfra.testing import FakeDeepInfra


class Person(pydantic.BaseModel):
    name: str
    age: int


class IntKeys(pydantic.BaseModel):
    scores: dict[int, str]


@pytest.mark.parametrize(
    "schema",
    [Person, pydantic.TypeAdapter(list[Person]), '{"type": "object", "required": ["a"]}', {"type": "string"}],
    ids=["model", "adapter", "text", "dict"],
)
def test_extraction_sends_the_schema_json_would(schema: Any) -> None:
    parsed = Schema(schema)
    assert parsed.json_schema == schema_from_user(schema)
    assert guidance_deepinfra.json("result", schema=schema).value.schema == parsed.json_schema


@pytest.mark.parametrize(
    "schema",
    ["{not json", "[1, 2]", "[" * 5000 + "]" * 5000, IntKeys, 42],
    ids=["bad-text", "not-an-object", "too-deep", "int-keys", "number"],
)
def test_a_schema_is_refused_by_extract_for_the_reason_json_gives(schema: Any) -> None:
    with pytest.raises(InvalidProgramError) as by_json:
        guidance_deepinfra.json("result", schema=schema)
    with FakeDeepInfra() as fake:
        with pytest.raises(InvalidProgramError) as by_extract:
            extract(["text"], schema, model="test/model", api_key="k", base_url=fake.base_url)
        assert fake.requests == []
    reason = str(by_json.value).rpartition(": ")[2] if isinstance(schema, type) else str(by_json.value)
    assert reason in str(by_extract.value)


def test_no_schema_is_json_objects_for_json_but_refused_by_extract() -> None:
    assert schema_from_user(None) is None and schema_from_user(True) == {}
    for schema in (None, True):
        with pytest.raises(InvalidProgramError, match="schema must be"):
            Schema(schema)


def test_a_schema_file_goes_through_the_same_reading(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(InvalidProgramError, match=r"schema file .*bad\.json.*must be a JSON object, not list"):
        load_schema(str(tmp_path / "bad.json"))
    (tmp_path / "ok.json").write_text('{"type": "object"}', encoding="utf-8")
    assert load_schema(str(tmp_path / "ok.json")) == {"type": "object"}
