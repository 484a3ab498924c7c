"""The schema of an extraction: what json() receives, how an answer becomes a value, how it is stored.

A pydantic model class gives pydantic objects, a ``TypeAdapter`` its values, a JSON schema (dict or JSON
text) plain values checked with jsonschema: whichever the user passes, every value handed back has been
validated against the complete schema here, whatever json() already checked.
"""

from __future__ import annotations

import importlib
import importlib.util
import json as jsonlib
import sys
from pathlib import Path
from typing import Any

import pydantic

from ._schema_check import prepare
from .errors import ConfigurationError, InvalidProgramError


class Schema:
    """The user's schema: what json() receives, how an answer becomes a value, and how it is stored."""

    def __init__(self, schema: Any) -> None:
        self.original = schema
        self.model: type[pydantic.BaseModel] | None = None
        self.adapter: pydantic.TypeAdapter[Any] | None = None
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            self.model = schema
            self.json_schema = schema.model_json_schema()
        elif isinstance(schema, pydantic.TypeAdapter):
            self.adapter = schema
            self.json_schema = schema.json_schema()
        elif isinstance(schema, str):
            self.json_schema = _schema_text(schema)
            self.original = self.json_schema
        elif isinstance(schema, dict):
            self.json_schema = schema
        else:
            raise InvalidProgramError(
                f"schema must be a pydantic model class, a TypeAdapter or a JSON schema, got {schema!r:.100}"
            )
        # Checked and validated exactly as json() does (same drafts, $refs and formats).
        self._validator = prepare(self.json_schema).validator

    def parse(self, text: str) -> Any:
        """The validated value of an answer (raises ValueError/ValidationError when it does not fit)."""
        if self.model is not None:
            return self.model.model_validate_json(text)
        if self.adapter is not None:
            return self.adapter.validate_json(text)
        value = jsonlib.loads(text)
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            raise ValueError("; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5]))
        return value

    def dump(self, value: Any) -> Any:
        """The JSON form stored in the output file."""
        if self.model is not None:
            return value.model_dump(mode="json")
        if self.adapter is not None:
            return self.adapter.dump_python(value, mode="json")
        return value

    def load(self, stored: Any) -> Any:
        """A stored result back as a value (for a resumed run)."""
        return self.parse(jsonlib.dumps(stored))


def _schema_text(text: str) -> dict[str, Any]:
    try:
        value = jsonlib.loads(text)
    except ValueError as exc:
        raise InvalidProgramError(f"schema text is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidProgramError("a JSON schema must be a JSON object")
    return value


def load_schema(spec: str) -> Any:
    """A schema named on the command line: ``schema.json``, ``package.module:Class`` or ``file.py:Class``."""
    path = Path(spec)
    if spec.endswith(".json"):
        if not path.is_file():
            raise ConfigurationError(f"schema file {spec!r} does not exist")
        return _schema_text(path.read_text(encoding="utf-8"))
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"--schema must be a .json file or module:Class, got {spec!r}")
    try:
        if module_name.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if module_spec is None or module_spec.loader is None or not Path(module_name).is_file():
                raise ConfigurationError(f"cannot load {module_name!r}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # like `python -m`: modules beside the data import
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for --schema: {exc}") from None
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
        value = getattr(value, part)
    return value
