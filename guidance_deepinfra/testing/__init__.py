"""Offline testing aids: a loopback fake DeepInfra server with scripted replies and faults."""

from .fake_server import FakeDeepInfra, Reply

__all__ = ["FakeDeepInfra", "Reply"]
