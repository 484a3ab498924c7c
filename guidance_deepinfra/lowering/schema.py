"""Preparing a user's JSON schema for DeepInfra and checking documents against it on the client.

The schema is sent to DeepInfra exactly as the user wrote it (after pydantic models are turned into their
JSON Schema and ``True`` into ``{}``). No keyword is dropped or rewritten, because DeepInfra does not
document which keywords its engine enforces: whatever it ignores is caught here, where every document is
validated with `jsonschema` against the complete schema before it becomes a capture.

Checks made before any request (each raises `InvalidProgramError`):

- the schema is a JSON object (or a boolean; ``False`` accepts nothing);
- it is a valid schema for its ``$schema`` draft, or, without ``$schema``, for one of 2020-12, draft 7 or
  draft 4 (real-world schemas often use draft-4 forms without saying so);
- every ``$ref`` resolves inside the document: references to other files or URLs are never fetched.

``format`` is asserted with jsonschema's own checkers (its ``format-nongpl`` extra is a dependency), for
every format jsonschema knows whatever the schema's draft: a local run's llguidance enforces date-time, date,
time, duration, email, hostname, ipv4, ipv6 and uuid while generating, so an answer breaking one of them must
never become a capture here either. Formats nobody can check are annotations, as the specification allows.
jsonschema itself is loaded by the first schema checked, not at import (`checkers` says why).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from ..errors import InvalidProgramError
from .checkers import fallback_drafts, format_checker, jsonschema

#: Schema used for ``json()`` without a schema: an object, as guidance's own json() and DeepInfra's
#: ``json_object`` mode both produce.
ANY_OBJECT: dict[str, Any] = {"type": "object"}

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.DOTALL)


@dataclass(frozen=True)
class PreparedSchema:
    """A user's schema ready to send (`schema`), with its validator and the ``json_schema.name`` to use."""

    schema: dict[str, Any]
    validator: Any
    name: str
    user_given: bool

    def errors(self, value: Any) -> list[str]:
        """Every reason `value` is refused, each with the JSON path where it applies (empty when valid)."""
        found = sorted(self.validator.iter_errors(value), key=lambda e: (len(e.absolute_path), str(e.path)))
        return [f"at {_path(e.absolute_path)}: {e.message}" for e in found]


def schema_from_user(schema: Any, *, where: str = "the JSON schema text") -> dict[str, Any] | None:
    """The JSON Schema dict for what users pass to json() or `extract`: None, bool, dict, JSON text or
    pydantic types. The one place a user's schema is normalised; `where` names JSON text in messages."""
    if schema is None:
        return None
    if schema is True:
        return {}
    if schema is False:
        raise InvalidProgramError("json(schema=False) accepts no document at all")
    is_model = isinstance(schema, type) and issubclass(schema, pydantic.BaseModel)
    if is_model or isinstance(schema, pydantic.TypeAdapter):
        from guidance.library._pydantic import pydantic_to_json_schema

        try:
            return pydantic_to_json_schema(schema)
        except RecursionError:
            raise InvalidProgramError(f"the schema {schema_label(schema)} is nested too deeply to be checked") from None
        except Exception as exc:  # noqa: BLE001 - pydantic's own errors (a field type without a JSON schema...)
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            raise InvalidProgramError(
                f"the schema {schema_label(schema)} has no usable JSON schema: {type(exc).__name__}: {first_line}"
            ) from None
    if isinstance(schema, str):
        schema = _schema_text(schema, where)
    if isinstance(schema, Mapping):
        return dict(schema)
    raise InvalidProgramError(
        f"a JSON schema must be a dict, JSON text, a pydantic model or a TypeAdapter, not {type(schema).__name__}"
    )


def schema_label(schema: Any) -> str:
    """How a message names the user's schema: a class by its qualified name, a JSON schema as such."""
    if isinstance(schema, type):
        return f"{schema.__module__}.{schema.__qualname__}"
    if isinstance(schema, (dict, str)):
        return "(a JSON schema)"
    return type(schema).__name__


def _schema_text(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidProgramError(f"{where} is nested too deeply to be read") from None
    except ValueError as exc:
        raise InvalidProgramError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidProgramError(f"{where}: a JSON schema must be a JSON object, not {type(value).__name__}")
    return value


_PREPARED: dict[tuple[str, str], PreparedSchema] = {}
_PREPARED_LIMIT = 256
_PREPARED_LOCK = threading.Lock()


def prepare(schema: dict[str, Any] | None, *, default_name: str = "response") -> PreparedSchema:
    """Check `schema` as described in the module docstring and build its validator.

    Checking a schema costs milliseconds, so prepared schemas are kept (keyed by their canonical JSON): a
    batch running one schema over thousands of inputs checks it once.
    """
    try:
        key = (json.dumps(schema, sort_keys=True), default_name)
    except (TypeError, ValueError):
        return _prepare(schema, default_name=default_name)
    with _PREPARED_LOCK:
        cached = _PREPARED.get(key)
    if cached is not None:
        return cached
    # A private copy: a caller mutating its dict later must not change what a cached entry sends.
    prepared = _prepare(copy.deepcopy(schema), default_name=default_name)
    with _PREPARED_LOCK:
        if len(_PREPARED) >= _PREPARED_LIMIT:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = prepared
    return prepared


def _prepare(schema: dict[str, Any] | None, *, default_name: str) -> PreparedSchema:
    if schema is None:
        any_object = dict(ANY_OBJECT)
        return PreparedSchema(any_object, jsonschema().Draft202012Validator(any_object), "json_object", False)
    validator_cls = _pick_draft(schema)
    validator = validator_cls(schema, format_checker=format_checker())
    _check_refs(schema, validator)
    return PreparedSchema(schema, validator, schema_name(schema, default_name), True)


def schema_name(schema: Mapping[str, Any], default: str = "response") -> str:
    """A ``json_schema.name`` DeepInfra accepts (letters, digits, ``_``, ``-``; at most 64) from the title."""
    title = schema.get("title")
    name = _NAME_CHARS.sub("_", title).strip("_") if isinstance(title, str) else ""
    return (name or default)[:64]


def _pick_draft(schema: dict[str, Any]) -> type[Any]:
    declared = schema.get("$schema")
    if isinstance(declared, str) and declared:
        cls = jsonschema().validators.validator_for(schema, default=None)
        if cls is None:
            raise InvalidProgramError(f"unknown JSON Schema draft {declared!r} in $schema")
        candidates: tuple[type[Any], ...] = (cls,)
    else:
        candidates = fallback_drafts()
    schema_error = jsonschema().exceptions.SchemaError
    first_error: Any = None
    for cls in candidates:
        try:
            cls.check_schema(schema)
            return cls
        except schema_error as exc:
            first_error = first_error or exc
    assert first_error is not None
    where = _path(first_error.absolute_path)
    raise InvalidProgramError(f"invalid JSON schema at {where}: {first_error.message}")


def _check_refs(schema: dict[str, Any], validator: Any) -> None:
    """Resolve every ``$ref`` now so an unresolvable one fails before any request, never mid-validation."""
    from referencing.exceptions import Unresolvable  # jsonschema's own dependency, loaded with it

    resolver = validator._resolver  # the referencing resolver for this schema
    for ref in sorted(set(_refs(schema))):
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise InvalidProgramError(
                f"$ref {ref!r} cannot be resolved inside the schema (references to other documents are not "
                f"fetched): {type(exc).__name__}"
            ) from None


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            elif key not in ("enum", "const", "examples", "default"):
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _path(parts: Any) -> str:
    text = "$"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def extract_document(text: str) -> str:
    """The JSON text of a reply: surrounding whitespace and a Markdown code fence removed."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    return fenced.group(1).strip() if fenced else stripped


def parse_and_check(text: str, prepared: PreparedSchema) -> tuple[str, list[str]]:
    """(the document text, the reasons it is refused); no reasons means it is the capture."""
    document = extract_document(text)
    if not document:
        return document, ["the answer is empty, not a JSON document"]
    try:
        value = json.loads(document, parse_constant=_refuse_constant)
    except ValueError as exc:
        return document, [f"not valid JSON: {exc}"]
    except RecursionError:
        return document, ["not usable JSON: nested too deeply to read"]
    return document, prepared.errors(value)


def _refuse_constant(name: str) -> Any:
    """Python's json reads NaN and (-)Infinity, which JSON lacks; a document holding them is no capture."""
    raise ValueError(f"{name} is not a JSON value")
