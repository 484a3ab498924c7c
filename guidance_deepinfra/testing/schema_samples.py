"""Documents a schema accepts and documents it refuses, for coverage reports and tests.

`valid_document` tries the schema's own ``examples``/``default`` first, then builds a small instance from
the keywords (types, required properties, bounds, enums, local ``$ref``, ``anyOf``/``oneOf``/``allOf``,
``pattern`` via the regex parser, common formats). `invalid_document` mutates the valid one (drops a
required property, breaks a property's type) or tries plain values of the wrong type. Every candidate is
checked with the real validator, so a sample is never mislabelled; when none fits, None is returned.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ..lowering.schema import PreparedSchema

try:  # the regex parser moved in Python 3.11
    from re import _constants as _sre  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_MISSING = object()
_FORMATS = {
    "date-time": "2024-01-02T03:04:05Z",
    "date": "2024-01-02",
    "time": "03:04:05Z",
    "email": "a@example.com",
    "idn-email": "a@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/a",
    "uri-reference": "https://example.com/a",
    "iri": "https://example.com/a",
    "url": "https://example.com/a",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "regex": "a+",
    "duration": "P1D",
    "json-pointer": "/a",
}


class Found:
    """Wraps a generated document so that a JSON ``null`` document is told apart from "none found"."""

    def __init__(self, value: Any) -> None:
        self.value = value


def valid_document(prepared: PreparedSchema) -> Found | None:
    """A document `prepared` accepts, or None when none was found."""
    schema = prepared.schema
    candidates: list[Any] = []
    if isinstance(schema.get("examples"), list):
        candidates += schema["examples"]
    if "default" in schema:
        candidates.append(schema["default"])
    built = _build(schema, schema, prepared, 0)
    if built is not _MISSING:
        candidates.append(built)
    candidates += [{}, [], "a", 0, True, None]
    for candidate in candidates:
        if prepared.validator.is_valid(candidate):
            return Found(candidate)
    return None


def invalid_document(prepared: PreparedSchema, valid: Any) -> Found | None:
    """A JSON document `prepared` refuses, preferably a near miss of `valid`."""
    candidates: list[Any] = []
    if isinstance(valid, dict):
        required = prepared.schema.get("required") if isinstance(prepared.schema, dict) else None
        for key in required or []:
            if key in valid:
                candidates.append({k: v for k, v in valid.items() if k != key})
        for key, value in valid.items():
            broken = copy.deepcopy(valid)
            broken[key] = [[["wrong-type"]]] if not isinstance(value, list) else {"wrong": "type"}
            candidates.append(broken)
    if isinstance(valid, list) and valid:
        candidates.append([[["wrong-type"]]] * len(valid))
    candidates += [[[["wrong-type"]]], "wrong-type", -123456789.5, None, True, {"__unexpected__": [1, 2]}, {}, []]
    for candidate in candidates:
        if not prepared.validator.is_valid(candidate):
            return Found(candidate)
    return None


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return _MISSING
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _build(schema: Any, root: Any, prepared: PreparedSchema, depth: int) -> Any:
    if depth > 12:
        return _MISSING
    if schema is True or schema == {}:
        return "a"
    if not isinstance(schema, dict):
        return _MISSING
    if "$ref" in schema:
        target = _resolve(schema["$ref"], root)
        return _MISSING if target is _MISSING else _build(target, root, prepared, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("allOf"), list):
        merged = dict(schema)
        for part in merged.pop("allOf"):
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                _merge(merged, part)
        return _build(merged, root, prepared, depth + 1)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            base = {k: v for k, v in schema.items() if k != key}
            for option in schema[key]:
                merged = dict(base)
                option = _resolve(option["$ref"], root) if isinstance(option, dict) and "$ref" in option else option
                if isinstance(option, dict):
                    _merge(merged, option)
                value = _build(merged, root, prepared, depth + 1)
                if value is not _MISSING:
                    return value
            return _MISSING
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, root, prepared, depth)
    if kind == "array":
        return _array(schema, root, prepared, depth)
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "a"


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if key == "properties" and isinstance(into.get(key), dict) and isinstance(value, dict):
            into[key] = {**into[key], **value}
        elif key == "required" and isinstance(into.get(key), list) and isinstance(value, list):
            into[key] = into[key] + [v for v in value if v not in into[key]]
        else:
            into.setdefault(key, value)


def _type_of(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or kind
        kind = kinds[0] if kinds else None
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if "pattern" in schema or "format" in schema or "minLength" in schema:
        return "string"
    if "minimum" in schema or "maximum" in schema:
        return "number"
    return None


def _object(schema: dict[str, Any], root: Any, prepared: PreparedSchema, depth: int) -> Any:
    properties: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
    required = [k for k in schema.get("required") or [] if isinstance(k, str)]
    out: dict[str, Any] = {}
    extra = schema.get("additionalProperties", True)
    for key in required:
        sub = properties.get(key, extra if isinstance(extra, dict) else True)
        value = _build(sub, root, prepared, depth + 1)
        if value is _MISSING:
            return _MISSING
        out[key] = value
    for key, sub in properties.items():
        if len(out) >= int(schema.get("minProperties") or 0):
            break
        value = _build(sub, root, prepared, depth + 1)
        if value is not _MISSING:
            out.setdefault(key, value)
    return out


def _array(schema: dict[str, Any], root: Any, prepared: PreparedSchema, depth: int) -> Any:
    prefix = schema.get("prefixItems") or (schema["items"] if isinstance(schema.get("items"), list) else [])
    items = schema.get("items") if isinstance(schema.get("items"), dict) else True
    count = max(int(schema.get("minItems") or 0), len(prefix) if schema.get("minItems") else 0)
    out = []
    for i in range(count):
        sub = prefix[i] if i < len(prefix) else items
        value = _build(sub, root, prepared, depth + 1)
        if value is _MISSING:
            return _MISSING
        if schema.get("uniqueItems") and value in out and isinstance(value, (int, float)):
            value = value + i
        elif schema.get("uniqueItems") and value in out and isinstance(value, str):
            value = value + str(i)
        out.append(value)
    return out


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        text = _FORMATS[fmt]
    elif isinstance(schema.get("pattern"), str):
        text = regex_example(schema["pattern"]) or "a"
    else:
        text = "a"
    min_length = int(schema.get("minLength") or 0)
    if len(text) < min_length:
        text += "a" * (min_length - len(text))
    return text


def _number(schema: dict[str, Any], kind: str) -> int | float:
    low = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, (int, float)) and not isinstance(exclusive, bool):
        low = exclusive + 1
    elif exclusive is True and isinstance(low, (int, float)):
        low = low + 1
    value: int | float = low if isinstance(low, (int, float)) else 0
    if kind == "integer":
        value = int(-(-value // 1))
    step = schema.get("multipleOf")
    if isinstance(step, (int, float)) and step > 0:
        value = -(-value // step) * step
    high = schema.get("maximum")
    if isinstance(high, (int, float)) and value > high:
        value = high
    return value


def regex_example(pattern: str) -> str | None:
    """A short string the regex matches (searched, as JSON Schema does), or None."""
    try:
        text = _emit(_sre_parse.parse(pattern))
        return text if re.search(pattern, text) else None
    except (re.error, RecursionError, TypeError, ValueError, OverflowError):
        return None


def _emit(items: Any) -> str:
    out = []
    for op, arg in items:
        if op is _sre.LITERAL:
            out.append(chr(arg))
        elif op is _sre.NOT_LITERAL:
            out.append("a" if arg != ord("a") else "b")
        elif op is _sre.ANY:
            out.append("a")
        elif op is _sre.IN:
            out.append(_class_char(arg))
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            low, _high, sub = arg
            out.append(_emit(sub) * low)
        elif op is _sre.SUBPATTERN:
            out.append(_emit(arg[-1]))
        elif op is _sre.BRANCH:
            out.append(_emit(arg[1][0]))
        elif op is _sre.CATEGORY:
            out.append(_category_char(arg))
    return "".join(out)


def _category_char(category: Any) -> str:
    return {
        _sre.CATEGORY_DIGIT: "0",
        _sre.CATEGORY_NOT_DIGIT: "a",
        _sre.CATEGORY_SPACE: " ",
        _sre.CATEGORY_NOT_SPACE: "a",
        _sre.CATEGORY_WORD: "a",
        _sre.CATEGORY_NOT_WORD: "-",
    }.get(category, "a")


def _class_char(members: list[tuple[Any, Any]]) -> str:
    if members and members[0][0] is _sre.NEGATE:
        rest = members[1:]
        for candidate in "a0_- xZ":
            if not any(_in_member(candidate, m) for m in rest):
                return candidate
        return "~"
    for op, arg in members:
        if op is _sre.LITERAL:
            return chr(arg)
        if op is _sre.RANGE:
            return chr(arg[0])
        if op is _sre.CATEGORY:
            return _category_char(arg)
    return "a"


def _in_member(char: str, member: tuple[Any, Any]) -> bool:
    op, arg = member
    if op is _sre.LITERAL:
        return char == chr(arg)
    if op is _sre.RANGE:
        return arg[0] <= ord(char) <= arg[1]
    if op is _sre.CATEGORY:
        return _category_char(arg) == char or (arg is _sre.CATEGORY_WORD and (char.isalnum() or char == "_"))
    return False
