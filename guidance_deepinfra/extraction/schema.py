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

from ..errors import ConfigurationError, DeepInfraError, InvalidProgramError
from ..lowering.schema import prepare, schema_from_user, schema_label


class Schema:
    """The user's schema: what json() receives, how an answer becomes a value, and how it is stored.

    The schema itself is normalised by `schema_from_user` and checked by `prepare`, exactly as json() does
    (same drafts, $refs and formats); what extraction adds is the value type (a pydantic model or a
    TypeAdapter builds the results) and the refusal of "no schema", which json() allows.
    """

    def __init__(self, schema: Any) -> None:
        self.original = schema
        self.model: type[pydantic.BaseModel] | None = None
        self.adapter: pydantic.TypeAdapter[Any] | None = None
        if schema is None or isinstance(schema, bool):
            raise InvalidProgramError(
                f"schema must be a pydantic model class, a TypeAdapter or a JSON schema, got {schema!r}"
            )
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            self.model = schema
        elif isinstance(schema, pydantic.TypeAdapter):
            self.adapter = schema
        try:
            json_schema = schema_from_user(schema) or {}  # never None: no schema was refused above
            #: The JSON schema json() receives (built once: a pydantic type is not converted per input).
            self.json_schema: dict[str, Any] = json_schema
            self._validator = prepare(json_schema).validator
        except DeepInfraError:
            raise
        except RecursionError:
            raise InvalidProgramError(f"the schema {schema_label(schema)} is nested too deeply to be checked") from None
        except Exception as exc:  # noqa: BLE001 - pydantic's own errors (a field type without a JSON schema...)
            raise InvalidProgramError(
                f"the schema {schema_label(schema)} has no usable JSON schema: {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        if isinstance(schema, str):
            self.original = json_schema

    def parse(self, text: str, *, checked: bool = False) -> Any:
        """The validated value of an answer (raises ValueError/ValidationError when it does not fit).

        `checked` says `text` was already accepted by json()'s check of this same JSON schema, so a plain
        JSON schema is not validated twice (pydantic types still build their value here).
        """
        if self.model is not None:
            return self.model.model_validate_json(text)
        if self.adapter is not None:
            return self.adapter.validate_json(text)
        value = jsonlib.loads(text)
        if checked:
            return value
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [""])[0][:300]


def load_schema(spec: str) -> Any:
    """A schema named on the command line: ``schema.json``, ``package.module:Class`` or ``file.py:Class``."""
    path = Path(spec)
    if spec.endswith(".json"):
        if not path.is_file():
            raise ConfigurationError(f"schema file {spec!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read schema file {spec!r}: {exc}") from None
        return schema_from_user(text, where=f"schema file {spec!r}")
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"--schema must be a .json file or module:Class, got {spec!r}")
    module = _import(module_name)
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}") from None
        except Exception as exc:  # noqa: BLE001 - a property or module __getattr__ of the user's code
            raise ConfigurationError(
                f"reading {attribute!r} from {module_name!r} failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from None
    return value


def _import(module_name: str) -> Any:
    """Import the user's schema module; any failure in it (not only ImportError) is a clear error naming it.

    The module is the user's code: a SyntaxError, a NameError or an exception it raises itself must say which
    module failed and why, where a traceback through this package's internals would only hide it.
    """
    try:
        if module_name.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if module_spec is None or module_spec.loader is None or not Path(module_name).is_file():
                raise ConfigurationError(f"cannot load {module_name!r} for --schema: no such file")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # like `python -m`: modules beside the data import
        return importlib.import_module(module_name)
    except ConfigurationError:
        raise
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for --schema: {exc}") from None
    except SyntaxError as exc:
        where = f" ({Path(exc.filename).name}, line {exc.lineno})" if exc.filename else ""
        raise ConfigurationError(f"cannot import {module_name!r} for --schema: SyntaxError: {exc.msg}{where}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the user's module raised while loading
        raise ConfigurationError(
            f"cannot import {module_name!r} for --schema: it raised {type(exc).__name__}: {_first_line(exc)}"
        ) from None
