"""Shared fixtures: a loopback fake DeepInfra server and models wired to it.

Nothing here mocks the openai SDK or guidance: requests go through the real SDK over real HTTP to a server
on 127.0.0.1 that the tests start and stop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from guidance_deepinfra import DeepInfra, RetryPolicy
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra

TEST_KEY = "sk-test-0123456789abcdef-SECRET"


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DEEPINFRA_API_KEY", "DEEPINFRA_TOKEN", "DEEPINFRA_BASE_URL", "GUIDANCE_DEEPINFRA_CACHE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeDeepInfra]:
    with FakeDeepInfra() as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    """Backoff delays the retry policy asked for (recorded instead of slept, so tests stay fast)."""
    return []


@pytest.fixture
def make_model(fake: FakeDeepInfra, sleeps: list[float]) -> Callable[..., DeepInfra]:
    def factory(model: str = "test/model", **kwargs: Any) -> DeepInfra:
        kwargs.setdefault("api_key", TEST_KEY)
        kwargs.setdefault("base_url", fake.base_url)
        kwargs.setdefault("echo", False)
        kwargs.setdefault("profiles", ProfileRegistry())
        kwargs.setdefault("retry", RetryPolicy(sleep=sleeps.append))
        kwargs.setdefault("logprobs", False)
        return DeepInfra(model, **kwargs)

    return factory


def pytest_report_header(config: pytest.Config) -> str:
    return "guidance-deepinfra tests: offline (loopback fake server and cassettes), key set: " + str(
        bool(os.environ.get("DEEPINFRA_API_KEY"))
    )
