"""Who owns a capability profile: a model object, the process, or an endpoint's refusals.

- ``DeepInfra(name, profile=...)`` belongs to that object: another object of the same model is unaffected.
- What DeepInfra refuses is learned for (base_url, model): another endpoint is unaffected.
- ``declare_profile`` (the registry's `declare`) is the explicit process-wide declaration.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from guidance import assistant, user
from guidance import json as guidance_json

from guidance_deepinfra import PROFILES, ConfigurationError, DeepInfra, ModelProfile, UnsupportedFeatureWarning
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
MODEL = "profile/model"


@pytest.fixture
def two_servers() -> Iterator[tuple[FakeDeepInfra, FakeDeepInfra]]:
    with FakeDeepInfra() as first, FakeDeepInfra() as second:
        yield first, second
        PROFILES.forget(base_url=first.base_url)
        PROFILES.forget(base_url=second.base_url)


def connect(server: FakeDeepInfra, **kwargs) -> DeepInfra:
    """A model as users make it: the process-wide registry unless the test passes its own."""
    return DeepInfra(MODEL, api_key="sk-test", base_url=server.base_url, echo=False, logprobs=False, **kwargs)


def json_mode(lm: DeepInfra, server: FakeDeepInfra) -> str:
    """Run one json() and return the response_format type its (last) request used."""
    server.push(Reply.text('{"x": 1}'))
    with user():
        lm += "Give x."
    with assistant():
        lm += guidance_json("out", schema=SCHEMA)
    assert lm["out"] == '{"x": 1}'
    return str(server.last["response_format"]["type"])


def test_a_profile_passed_to_one_model_does_not_change_another(two_servers) -> None:
    server, _ = two_servers
    existing = connect(server)
    downgraded = connect(server, profile=ModelProfile(json_schema=False))
    assert json_mode(downgraded, server) == "json_object"
    assert json_mode(existing, server) == "json_schema"
    assert json_mode(connect(server), server) == "json_schema"  # nor one made later
    assert PROFILES.get(MODEL, server.base_url) == ModelProfile()


def test_a_refusal_is_learned_for_its_endpoint_and_model_only(two_servers) -> None:
    first, second = two_servers
    first.push(Reply.unsupported("json_schema response format", MODEL))
    with pytest.warns(UnsupportedFeatureWarning, match="json_schema"):
        assert json_mode(connect(first), first) == "json_object"
    assert [r["response_format"]["type"] for r in first.requests] == ["json_schema", "json_object"]
    # Another object on the same endpoint uses what was learned: no request wasted on probing.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedFeatureWarning)
        assert json_mode(connect(first), first) == "json_object"
    assert len(first.requests) == 3
    # The same model name on another endpoint still gets json_schema.
    assert json_mode(connect(second), second) == "json_schema"
    assert len(second.requests) == 1


def test_a_model_own_profile_wins_over_what_was_learned(two_servers) -> None:
    server, _ = two_servers
    server.push(Reply.unsupported("json_schema response format", MODEL))
    with pytest.warns(UnsupportedFeatureWarning):
        assert json_mode(connect(server), server) == "json_object"
    declared = connect(server, profile=ModelProfile(json_schema=True, logprobs=False))
    assert json_mode(declared, server) == "json_schema"


def test_declare_profile_is_process_wide(two_servers) -> None:
    first, second = two_servers
    registry = ProfileRegistry()  # stands for the process registry `declare_profile` writes to
    registry.declare(MODEL, ModelProfile(json_schema=False))
    assert json_mode(connect(first, profiles=registry), first) == "json_object"
    assert json_mode(connect(second, profiles=registry), second) == "json_object"
    # An object's own profile still wins over the process-wide declaration.
    own = connect(first, profiles=registry, profile=ModelProfile())
    assert json_mode(own, first) == "json_schema"


def test_profile_must_be_a_model_profile(two_servers) -> None:
    server, _ = two_servers
    with pytest.raises(ConfigurationError, match="ModelProfile"):
        connect(server, profile={"json_schema": False})
    assert server.requests == []
