"""Client-side constraints: regex, Lark/CFG and mixed grammars generated, checked by llguidance, repaired."""

from __future__ import annotations

from ._interpreter import DeepInfraBaseInterpreter


class GrammarMixin(DeepInfraBaseInterpreter):
    """Handles every grammar node that DeepInfra cannot enforce on the server."""
