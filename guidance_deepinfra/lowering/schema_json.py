"""`guidance_deepinfra.json`: guidance's ``json()`` without the build-time refusal of real-world schemas.

guidance's own ``json()`` compiles every schema with llguidance when the program is built and refuses the
ones llguidance cannot turn into a grammar (an unknown ``format``, ``uniqueItems``, ``dependencies``,
``not``...), about one real-world schema in eight. On DeepInfra that grammar is never used: the schema
goes to the server and every answer is validated with jsonschema against the complete schema. This
builder makes the same node guidance would, but checks the schema the way this backend uses it (see
`lowering.schema`) instead of with llguidance, so such schemas keep their full meaning.
"""

from __future__ import annotations

from typing import Any

from guidance._ast import JsonNode, LLGJsonCompileOptions, RuleNode

from .schema import prepare, schema_from_user


def json(
    name: str | None = None,
    *,
    schema: Any = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> RuleNode:
    """A JSON value for `schema` (dict, JSON text, pydantic model or TypeAdapter; None for any object).

    Invalid schemas and ``$ref``s that point outside the schema raise `InvalidProgramError` here, when
    the program is built. Every keyword is kept: the server receives the schema as given and the capture
    is validated against all of it.
    """
    user_schema = schema_from_user(schema)
    prepare(user_schema)
    options = LLGJsonCompileOptions(
        whitespace_flexible=False,
        whitespace_pattern=None,
        item_separator=", ",
        key_separator=": ",
        coerce_one_of=True,
        lenient=True,
    )
    return RuleNode(
        name=name or "json",
        value=JsonNode(schema=user_schema, llg_options=options),
        capture=name,
        temperature=temperature,
        max_tokens=max_tokens,
    )
