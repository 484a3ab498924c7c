"""Demo scenarios (and cassettes) for grammar constraints; see demo.py."""

from __future__ import annotations
