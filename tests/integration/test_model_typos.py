"""A 404 for a mistyped model name suggests the closest names the package knows (its own and the profile
registry's), on both transports, over the fake server; nothing is sent to find them."""

from __future__ import annotations

import pytest
from guidance import assistant, gen, user

from guidance_deepinfra import DeepInfra, ModelNotFoundError, ModelProfile, declare_profile, extract
from guidance_deepinfra.testing import FakeDeepInfra, Reply

NOT_FOUND = Reply.error(404, {"detail": {"error": "The model `x` does not exist"}})


def program_error(model: str, base_url: str) -> ModelNotFoundError:
    lm = DeepInfra(model, api_key="sk-typo-test", base_url=base_url, echo=False)
    with pytest.raises(ModelNotFoundError) as raised:
        with user():
            lm += "Hi"
        with assistant():
            lm += gen("answer", max_tokens=3)
    return raised.value


@pytest.mark.parametrize(
    "typed",
    [
        "meta-llama/Llama-3.3-70B-Instruct-Turb",
        "meta-llama/llama-3.3-70b-instruct-turbo",
        "Llama-3.3-70B-Instruct-Turbo",
    ],
)
def test_a_typo_of_a_known_model_gets_its_name_suggested(typed: str) -> None:
    with FakeDeepInfra(lambda _: NOT_FOUND) as fake:
        error = program_error(typed, fake.base_url)
        assert len(fake.requests) == 1  # the one request the program made: nothing was sent to suggest
    assert "did you mean 'meta-llama/Llama-3.3-70B-Instruct-Turbo'?" in str(error)


def test_the_fast_path_suggests_too_and_a_declared_model_is_known() -> None:
    declare_profile("example-org/Typo-Check-Model-7B", ModelProfile())
    with FakeDeepInfra(lambda _: NOT_FOUND) as fake, pytest.raises(ModelNotFoundError) as raised:
        extract(["x"], {"type": "object"}, model="example-org/Typo-Check-Modle-7B", api_key="k", base_url=fake.base_url)
    assert "did you mean 'example-org/Typo-Check-Model-7B'?" in str(raised.value)


def test_a_name_like_no_known_one_gets_no_suggestion() -> None:
    with FakeDeepInfra(lambda _: NOT_FOUND) as fake:
        error = program_error("completely/unrelated-name", fake.base_url)
    assert "did you mean" not in str(error)
