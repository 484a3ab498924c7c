"""Property-based tests: random schemas, select options and regexes through the real request path.

Each example runs a one-node program on the loopback fake server and checks what was sent and what the
program got:

- JSON Schemas (the keywords the README says are sent unchanged and validated with jsonschema): the
  lowering never crashes, the body that reached the server is JSON with a valid ``response_format``, a
  document the schema accepts becomes the capture, and one it rejects fails client-side validation.
- select options: the enum sent is the options, an option comes back exactly, anything else is refused.
- regexes: what the client accepts agrees with guidance's own ``GrammarNode.match`` (llguidance).

Example counts are small so the file stays fast (``HARDENING_EXAMPLES`` raises them for a deeper search).
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from guidance import assistant, gen, select, user
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import guidance_deepinfra
from guidance_deepinfra import ConstraintError, DeepInfra, ModelProfile, RetryPolicy
from guidance_deepinfra.enforcement.ladder import PLAIN_RETRY, LadderOptions
from guidance_deepinfra.enforcement.matcher import compile_node
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

pytestmark = pytest.mark.slow  # hypothesis searches through the real request path

#: Examples per property; raise it for a deeper search, e.g. HARDENING_EXAMPLES=500.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("HARDENING_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SAFE_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeDeepInfra]:
    with FakeDeepInfra() as fake:
        yield fake


def _fresh(server: FakeDeepInfra, *replies: Reply, **kwargs: Any) -> DeepInfra:
    """A model with its own profiles on a server whose record and script are reset."""
    with server._lock:
        server.requests.clear()
        server.request_headers.clear()
        server.script.clear()
    server.push(*replies)
    lm = DeepInfra(
        "test/model",
        api_key="sk-test",
        base_url=server.base_url,
        echo=False,
        logprobs=False,
        profiles=ProfileRegistry(),
        retry=RetryPolicy(sleep=lambda _: None),
        max_retries=0,
        **kwargs,
    )
    with user():
        lm += "Answer."
    return lm


# --------------------------------------------------------------------------- JSON Schemas

_LEAF_TYPES = ("string", "integer", "number", "boolean", "null")


@st.composite
def _string_schema(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    kind = draw(st.sampled_from(["plain", "length", "pattern", "enum", "format"]))
    if kind == "length":
        low = draw(st.integers(0, 4))
        schema.update(minLength=low, maxLength=low + draw(st.integers(0, 6)))
    elif kind == "pattern":
        schema["pattern"] = draw(st.sampled_from(["^[a-z]+$", "^[0-9]{2,4}$", "^A", "b$", "^[A-Z][a-z]*$"]))
    elif kind == "enum":
        schema["enum"] = draw(st.lists(SAFE_TEXT, min_size=1, max_size=4, unique=True))
    elif kind == "format":
        schema["format"] = draw(st.sampled_from(["date", "email", "uuid", "ipv4"]))
    return schema


@st.composite
def _number_schema(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if draw(st.booleans()):
        low = draw(st.integers(-50, 50))
        schema.update(minimum=low, maximum=low + draw(st.integers(0, 100)))
    if kind == "integer" and draw(st.booleans()):
        schema["multipleOf"] = draw(st.sampled_from([1, 2, 5]))
    return schema


@st.composite
def _leaf_schema(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from((*_LEAF_TYPES, "const", "enum-mixed")))
    if kind == "string":
        return draw(_string_schema())
    if kind in ("integer", "number"):
        return draw(_number_schema(kind))
    if kind == "const":
        return {"const": draw(st.one_of(st.integers(-5, 5), SAFE_TEXT, st.booleans(), st.none()))}
    if kind == "enum-mixed":
        values = draw(st.lists(st.one_of(st.integers(-5, 5), SAFE_TEXT, st.none()), min_size=1, max_size=4))
        return {"enum": list({json.dumps(v): v for v in values}.values())}
    return {"type": kind}


@st.composite
def _object_schema(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    names = draw(st.lists(SAFE_TEXT, max_size=4, unique=True))
    schema: dict[str, Any] = {"type": "object", "properties": {name: draw(children) for name in names}}
    required = [n for n in names if draw(st.booleans())]
    if required:
        schema["required"] = required
    extra = draw(st.sampled_from([None, False, True]))
    if extra is not None:
        schema["additionalProperties"] = extra
    return schema


@st.composite
def _array_schema(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": draw(children)}
    if draw(st.booleans()):
        low = draw(st.integers(0, 2))
        schema.update(minItems=low, maxItems=low + draw(st.integers(0, 3)))
    return schema


def _node_schema(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    any_of = st.lists(children, min_size=1, max_size=3).map(lambda subs: {"anyOf": subs})
    return st.one_of(_object_schema(children), _array_schema(children), any_of)


_SUBSCHEMA = st.recursive(_leaf_schema(), _node_schema, max_leaves=8)


@st.composite
def json_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A schema whose root is an object (what json() produces), with optional title, $defs and $ref."""
    root = draw(_object_schema(_SUBSCHEMA))
    if draw(st.booleans()):
        root["title"] = draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=80))
    if draw(st.booleans()):
        root["description"] = draw(SAFE_TEXT)
    if draw(st.booleans()):
        root["$defs"] = {"Shared": draw(_SUBSCHEMA)}
        root.setdefault("properties", {})["shared"] = {"$ref": "#/$defs/Shared"}
        if draw(st.booleans()):
            root.setdefault("required", []).append("shared")
    return root


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


_FORMAT_EXAMPLES = {
    "date": "2024-02-29",
    "email": "ada@example.com",
    "uuid": "6f1c2b9e-8a3d-4c5e-9f0a-1b2c3d4e5f60",
    "ipv4": "192.168.0.1",
}


def _valid(draw: st.DrawFn, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A document `schema` accepts, built from the schema (not from a validator)."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return draw(st.sampled_from(schema["enum"]))
    if "anyOf" in schema:
        return _valid(draw, draw(st.sampled_from(schema["anyOf"])), root)
    kind = schema["type"]
    if kind == "null":
        return None
    if kind == "boolean":
        return draw(st.booleans())
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", -1000), schema.get("maximum", 1000)
        step = schema.get("multipleOf", 1)
        first, last = -(-low // step), high // step
        assume(first <= last)
        value = draw(st.integers(first, last)) * step
        if kind == "number" and draw(st.booleans()) and value + 0.5 <= high:
            return value + 0.5
        return value
    if kind == "string":
        if "format" in schema:
            return _FORMAT_EXAMPLES[schema["format"]]
        if "pattern" in schema:
            return draw(st.from_regex(schema["pattern"]).filter(lambda s: "\n" not in s))
        low = schema.get("minLength", 0)
        return draw(st.text(string.ascii_letters + " ", min_size=low, max_size=schema.get("maxLength", low + 6)))
    if kind == "array":
        low = schema.get("minItems", 0)
        count = draw(st.integers(low, schema.get("maxItems", low + 2)))
        return [_valid(draw, schema["items"], root) for _ in range(count)]
    document: dict[str, Any] = {}
    for name, sub in schema.get("properties", {}).items():
        if name in schema.get("required", []) or draw(st.booleans()):
            document[name] = _valid(draw, sub, root)
    return document


@st.composite
def schema_and_valid_document(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    schema = draw(json_schemas())
    return schema, _valid(draw, schema, schema)


def _wrong_root(schema: dict[str, Any], draw: st.DrawFn) -> Any:
    """A document no object schema accepts: a JSON value that is not an object."""
    return draw(st.one_of(st.integers(), SAFE_TEXT, st.lists(st.integers(), max_size=3), st.none()))


@st.composite
def schema_and_invalid_document(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    schema = draw(json_schemas())
    how = draw(st.sampled_from(["root-type", "missing-required", "extra-property"]))
    if how == "missing-required" and schema.get("required"):
        document = _valid(draw, schema, schema)
        document.pop(draw(st.sampled_from(schema["required"])), None)
        return schema, document
    if how == "extra-property" and schema.get("additionalProperties") is False:
        document = _valid(draw, schema, schema)
        document["not declared \u2603"] = 1
        return schema, document
    return schema, _wrong_root(schema, draw)


def _check_sent_schema(body: dict[str, Any], schema: dict[str, Any]) -> None:
    assert "_unparsed" not in body, "the request body was not valid JSON"
    assert json.loads(json.dumps(body)) == body
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    payload = response_format["json_schema"]
    assert NAME_OK.match(payload["name"]), payload["name"]
    assert payload["schema"] == schema
    jsonschema.validators.validator_for(payload["schema"]).check_schema(payload["schema"])


@PROPERTY_SETTINGS
@given(case=schema_and_valid_document())
def test_a_document_the_schema_accepts_becomes_the_capture(server: FakeDeepInfra, case: tuple[Any, Any]) -> None:
    schema, document = case
    text = json.dumps(document, ensure_ascii=False)
    lm = _fresh(server, Reply.text(text), max_attempts=1)
    with assistant():
        lm += guidance_deepinfra.json("doc", schema=schema)
    assert json.loads(lm["doc"]) == document
    assert str(lm).endswith(lm["doc"])
    assert len(server.requests) == 1
    _check_sent_schema(server.requests[0], schema)


@PROPERTY_SETTINGS
@given(case=schema_and_invalid_document())
def test_a_document_the_schema_rejects_fails_validation(server: FakeDeepInfra, case: tuple[Any, Any]) -> None:
    schema, document = case
    assert not jsonschema.Draft202012Validator(schema).is_valid(document), "the case builder is wrong"
    lm = _fresh(server, Reply.text(json.dumps(document)), max_attempts=1)
    before = str(lm)
    with pytest.raises(ConstraintError) as info:
        with assistant():
            lm + guidance_deepinfra.json("doc", schema=schema)
    assert len(info.value.attempts) == 1 and info.value.attempts[0].errors
    assert str(lm) == before
    with pytest.raises(KeyError):
        lm["doc"]
    assert len(server.requests) == 1
    _check_sent_schema(server.requests[0], schema)


_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-100, 100), SAFE_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(SAFE_TEXT, inner, max_size=3)),
    max_leaves=6,
)


@st.composite
def schema_and_any_document(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    """A schema and a document near its boundary: a valid one with one value replaced, or a random one."""
    schema = draw(json_schemas())
    if draw(st.booleans()):
        return schema, draw(_JSON_VALUES)
    document = _valid(draw, schema, schema)
    if document and draw(st.booleans()):
        document[draw(st.sampled_from(sorted(document)))] = draw(_JSON_VALUES)
    return schema, document


@PROPERTY_SETTINGS
@given(case=schema_and_any_document())
def test_client_validation_agrees_with_jsonschema(server: FakeDeepInfra, case: tuple[Any, Any]) -> None:
    """Whatever the document, it becomes the capture exactly when jsonschema accepts it."""
    schema, document = case
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    expected = jsonschema.Draft202012Validator(schema, format_checker=checker).is_valid(document)
    event(f"jsonschema accepts: {expected}")
    lm = _fresh(server, Reply.text(json.dumps(document)), max_attempts=1)
    with assistant():
        if expected:
            lm += guidance_deepinfra.json("doc", schema=schema)
            assert json.loads(lm["doc"]) == document
        else:
            with pytest.raises(ConstraintError):
                lm += guidance_deepinfra.json("doc", schema=schema)
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- select

_OPTIONS = st.lists(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10), min_size=2, max_size=6, unique=True
)


@PROPERTY_SETTINGS
@given(options=_OPTIONS, data=st.data())
def test_select_returns_exactly_an_option(server: FakeDeepInfra, options: list[str], data: st.DataObject) -> None:
    chosen = data.draw(st.sampled_from(options))
    lm = _fresh(server, Reply.text(json.dumps(chosen)), max_attempts=1)
    with assistant():
        lm += select(options, name="pick")
    assert lm["pick"] == chosen
    assert str(lm).endswith(chosen)
    body = server.requests[0]
    assert "_unparsed" not in body
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema == {"type": "string", "enum": options}
    jsonschema.Draft202012Validator.check_schema(schema)


@PROPERTY_SETTINGS
@given(options=_OPTIONS, answer=st.text(st.characters(exclude_categories=["Cs"]), max_size=10))
def test_select_refuses_anything_else(server: FakeDeepInfra, options: list[str], answer: str) -> None:
    assume(answer.strip() not in options and answer not in options)
    lm = _fresh(server, Reply.text(json.dumps(answer)), max_attempts=1)
    with pytest.raises(ConstraintError):
        with assistant():
            lm += select(options, name="pick")
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- regexes

_ATOMS = st.sampled_from(["a", "b", "c", "x", "0", "7", "-", r"\.", " ", "[a-c]", "[0-9]", r"\d", "[^a]", "."])


def _regex_tree(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quantified = st.tuples(children, st.sampled_from(["?", "*", "+", "{2}", "{1,3}", "{0,2}"])).map(
        lambda t: f"(?:{t[0]}){t[1]}"
    )
    sequence = st.lists(children, min_size=2, max_size=3).map("".join)
    alternation = st.lists(children, min_size=2, max_size=3).map(lambda parts: "(?:" + "|".join(parts) + ")")
    return st.one_of(quantified, sequence, alternation)


REGEXES = st.recursive(_ATOMS, _regex_tree, max_leaves=6)


@st.composite
def regex_and_text(draw: st.DrawFn) -> tuple[str, str]:
    pattern = draw(REGEXES)
    kind = draw(st.sampled_from(["from-regex", "random", "mutated", "extended"]))
    alphabet = "abcx07-. "
    if kind == "random":
        return pattern, draw(st.text(alphabet, max_size=8))
    text = draw(st.from_regex(pattern, fullmatch=True, alphabet=st.characters(codec="ascii", exclude_characters="\n")))
    if kind == "mutated" and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(alphabet)) + text[i + 1 :]
    elif kind == "extended":
        text += draw(st.sampled_from(alphabet))
    return pattern, text


def _grammar_model(server: FakeDeepInfra, reply: str, options: LadderOptions) -> DeepInfra:
    lm = _fresh(server, Reply.text(reply), max_attempts=1)
    lm._interpreter.grammar_options = options  # type: ignore[attr-defined]
    return lm


@PROPERTY_SETTINGS
@given(case=regex_and_text())
def test_regex_validation_agrees_with_guidance_match(server: FakeDeepInfra, case: tuple[str, str]) -> None:
    """Without the repair rungs, a reply is taken exactly when guidance's own matcher accepts it."""
    pattern, text = case
    expected = gen("x", regex=pattern).match(text) is not None
    event(f"guidance matches: {expected}")
    lm = _grammar_model(server, text, PLAIN_RETRY)
    compiled = compile_node(gen("x", regex=pattern))
    if compiled.fully_forced:  # one string only: written as a local run writes it, without asking the model
        with assistant():
            lm += gen("x", regex=pattern)
        assert lm["x"] == compiled.forced_prefix
        assert server.requests == []
        return
    with assistant():
        if expected:
            lm += gen("x", regex=pattern)
            assert lm["x"] == text
        else:
            with pytest.raises(ConstraintError):
                lm += gen("x", regex=pattern)
    assert len(server.requests) == 1
    assert "response_format" not in server.requests[0]


@PROPERTY_SETTINGS
@given(case=regex_and_text(), suffix=st.sampled_from(["", ".", " and more", "\nDone."]))
def test_whatever_the_ladder_accepts_is_a_match(server: FakeDeepInfra, case: tuple[str, str], suffix: str) -> None:
    """With trimming on, the capture may be shorter than the reply, but it always matches in full."""
    pattern, text = case
    lm = _grammar_model(server, text + suffix, LadderOptions(server=False))
    try:
        with assistant():
            lm += gen("x", regex=pattern)
    except ConstraintError as exc:
        assert exc.attempts
        event("refused")
        return
    event("accepted" if lm["x"] == text + suffix else "accepted after trimming")
    assert gen("x", regex=pattern).match(lm["x"]) is not None
    forced_only = compile_node(gen("x", regex=pattern)).fully_forced  # written without asking, as locally
    assert len(server.requests) == (0 if forced_only else 1)


@PROPERTY_SETTINGS
@given(pattern=REGEXES)
def test_regex_request_bodies_are_valid(server: FakeDeepInfra, pattern: str) -> None:
    """With every rung on, the first request (possibly with a server-side pattern) is valid JSON and schema."""
    lm = _fresh(server, Reply.text('"x"'), max_attempts=1, profile=ModelProfile(regex_format=False))
    with assistant():
        try:
            lm += gen("x", regex=pattern)
        except ConstraintError:
            pass
    if compile_node(gen("x", regex=pattern)).fully_forced:  # one string only: nothing to ask the model
        assert server.requests == []
        return
    body = server.requests[0]
    assert "_unparsed" not in body
    response_format = body.get("response_format")
    if response_format is not None:
        assert response_format["type"] == "json_schema"
        schema = response_format["json_schema"]["schema"]
        jsonschema.Draft202012Validator.check_schema(schema)
        assert NAME_OK.match(response_format["json_schema"]["name"])
