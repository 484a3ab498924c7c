"""Demo scenarios (and cassettes) for json constraints; see demo.py."""

from __future__ import annotations
