"""The full interpreter: the base chat interpreter plus one mixin per kind of constraint.

Each mixin overrides `constrained_rule` for the nodes it handles and passes the rest on with `super()`:
JSON and literal selects go to DeepInfra's server-side structured output (`_json_select`), everything
else is generated and checked with llguidance on the client (`_grammar_check`).
"""

from __future__ import annotations

from ._grammar_check import GrammarMixin
from ._interpreter import DeepInfraBaseInterpreter
from ._json_select import JsonSelectMixin


class DeepInfraInterpreter(JsonSelectMixin, GrammarMixin, DeepInfraBaseInterpreter):
    """guidance interpreter for DeepInfra chat models."""
