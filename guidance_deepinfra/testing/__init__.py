"""Offline testing aids: a loopback fake DeepInfra server with scripted replies and faults.

Its replies are synthesized in DeepInfra's wire format, never written by a DeepInfra model, and the costs it
reports come from a fixed price per token (`fake_server.COST_PER_TOKEN`).

`schema_samples` builds documents a schema accepts and documents it refuses, for tests and coverage reports.
"""

from .fake_server import FakeDeepInfra, Reply

__all__ = ["FakeDeepInfra", "Reply"]
