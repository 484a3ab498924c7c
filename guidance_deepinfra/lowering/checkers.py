"""jsonschema and its format checkers, loaded when the first schema is checked rather than at import.

``import jsonschema`` loads every format checker its ``format-nongpl`` extra brings, and one of them,
rfc3987_syntax (``iri`` and ``iri-reference``), builds a full Earley grammar at import: about a second, paid
by every program that imports the package even when no schema names a ``format``. So jsonschema is imported
on the first schema `lowering.schema.prepare` checks, and the IRI module is given to jsonschema as a stand-in
whose ``is_valid_syntax`` imports the real module on its first call: the grammar is built when the first
``iri`` value is checked, and every check jsonschema makes is the same as with the module imported up front.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

#: The module that builds its grammar at import, and the one function jsonschema takes from it.
_DEFERRED = "rfc3987_syntax"
_LOCK = threading.Lock()


def _deferred_module() -> types.ModuleType:
    """A stand-in for `_DEFERRED`: ``is_valid_syntax`` and every other attribute load the real module."""

    def real() -> types.ModuleType:
        return importlib.import_module(_DEFERRED)

    def is_valid_syntax(term: str, value: str) -> bool:
        return bool(real().is_valid_syntax(term, value))

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):  # the import system asks for __path__ and such: not a use of the module
            raise AttributeError(name)
        return getattr(real(), name)

    stand_in = types.ModuleType(_DEFERRED, "Loads the real module on first use (see guidance_deepinfra).")
    stand_in.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    stand_in.__getattr__ = __getattr__  # type: ignore[method-assign]
    return stand_in


def jsonschema() -> types.ModuleType:
    """The jsonschema module, imported now if nothing has imported it yet, without building the IRI grammar."""
    loaded = sys.modules.get("jsonschema")
    if loaded is not None:
        return loaded
    with _LOCK:
        defer = _DEFERRED not in sys.modules and importlib.util.find_spec(_DEFERRED) is not None
        stand_in = _deferred_module() if defer else None
        if stand_in is not None:
            sys.modules[_DEFERRED] = stand_in
        try:
            import jsonschema as module
        finally:
            # Only jsonschema's import sees the stand-in; anyone importing the module later gets the real one.
            if stand_in is not None and sys.modules.get(_DEFERRED) is stand_in:
                del sys.modules[_DEFERRED]
    return module


@functools.lru_cache(maxsize=1)
def format_checker() -> Any:
    """Every format jsonschema checks in drafts 4 to 2020-12, each with its newest meaning.

    Not only the schema's own draft's: llguidance enforces e.g. ``duration`` in a draft-7 schema too.
    Draft 3 is left out: its ``time`` and ``color`` mean something else than later drafts (or nothing).
    """
    js = jsonschema()
    checker = js.FormatChecker(formats=())
    for cls in (
        js.Draft202012Validator,
        js.Draft201909Validator,
        js.Draft7Validator,
        js.Draft6Validator,
        js.Draft4Validator,
    ):
        for name, entry in cls.FORMAT_CHECKER.checkers.items():
            checker.checkers.setdefault(name, entry)
    return checker


def fallback_drafts() -> tuple[type[Any], ...]:
    """Drafts tried, in order, for a schema that does not name its own."""
    js = jsonschema()
    return (js.Draft202012Validator, js.Draft7Validator, js.Draft4Validator)
