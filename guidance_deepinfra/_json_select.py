"""Server-side constraints: json() and literal select() lowered to DeepInfra's response_format."""

from __future__ import annotations

from ._interpreter import DeepInfraBaseInterpreter


class JsonSelectMixin(DeepInfraBaseInterpreter):
    """Handles JSON nodes and selects over literal strings."""
