"""`DeepInfra.fresh()` and the shared `transport=` argument: a new, empty program on a model's settings."""

from __future__ import annotations

import pytest
from guidance import assistant, gen, user

from guidance_deepinfra import ConfigurationError, DeepInfra, ModelProfile
from guidance_deepinfra.testing import Reply


def test_fresh_keeps_the_settings_and_shares_the_transport_profiles_and_ledger(make_model, fake) -> None:
    lm = make_model(request_defaults={"seed": 7}, profile=ModelProfile(logprobs=False), max_attempts=2)
    with user():
        lm += "An earlier conversation."
    fake.push(Reply.text("earlier answer"))
    with assistant():
        lm += gen("first", max_tokens=5)
    copy = lm.fresh()
    assert isinstance(copy, DeepInfra) and copy is not lm
    assert str(copy) == "" and copy.usage.calls == 0, "an empty program"
    assert copy._parent is None, "no link to the program it was made from"
    assert copy.transport is lm.transport
    assert copy._interpreter.profiles is lm._interpreter.profiles
    assert copy._interpreter.max_attempts == 2 and copy._interpreter.own_profile == ModelProfile(logprobs=False)
    fake.push(Reply.text("fresh answer", prompt_tokens=9, completion_tokens=2))
    with user():
        copy += "A new question."
    with assistant():
        copy += gen("answer", max_tokens=5, temperature=0)
    body = fake.last
    assert body["seed"] == 7 and body["model"] == "test/model"
    assert body["messages"] == [{"role": "user", "content": "A new question."}]
    assert copy["answer"] == "fresh answer"
    assert lm.total_usage.calls == 2 and copy.total_usage is lm.total_usage, "one ledger for the model"
    assert lm.transport.stats.requests == 2


def test_fresh_can_change_echo_only(make_model) -> None:
    lm = make_model(echo=False)
    assert lm.fresh().echo is False
    assert lm.fresh(echo=True).echo is True


def test_a_shared_transport_refuses_settings_of_its_own_before_any_request(make_model, fake) -> None:
    lm = make_model()
    shared = DeepInfra("test/other", transport=lm.transport, echo=False)
    assert shared.transport is lm.transport and shared.model_name == "test/other"
    for clash in ({"api_key": "k"}, {"base_url": fake.base_url}, {"max_retries": 1}, {"timeout": 5.0}):
        with pytest.raises(ConfigurationError, match="shared transport"):
            DeepInfra("test/other", transport=lm.transport, **clash)
    with pytest.raises(ConfigurationError, match="Transport"):
        DeepInfra("test/other", transport=object())  # type: ignore[arg-type]
    assert fake.requests == []
