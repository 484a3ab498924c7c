"""Chat generation on the fake server: request bodies and program results."""

from __future__ import annotations

import guidance
import pytest
from guidance import assistant, gen, system, user

from guidance_deepinfra import DeepInfra, MissingAPIKeyError
from guidance_deepinfra.testing import Reply


def test_reachable_from_guidance_models() -> None:
    assert guidance.models.DeepInfra is DeepInfra


def test_missing_key_names_both_variables() -> None:
    with pytest.raises(MissingAPIKeyError) as info:
        DeepInfra("some/model", echo=False)
    assert "DEEPINFRA_API_KEY" in str(info.value) and "DEEPINFRA_TOKEN" in str(info.value)


@pytest.mark.parametrize("server_stops", [True, False], ids=["server-stops", "server-overruns"])
def test_prefilled_assistant_text_is_continued(fake, make_model, server_stops) -> None:
    # With server_stops=False the fake server overruns the stop, so only the client's scanning can cut.
    fake.push(Reply.text("Paris. It is large.", honour_stop=server_stops))
    lm = make_model()
    with system():
        lm += "Be brief."
    with user():
        lm += "Capital of France?"
    with assistant():
        lm += "The capital is " + gen("city", stop=".", max_tokens=10)
    assert lm["city"] == "Paris"
    assert str(lm).endswith("The capital is Paris")
    body = fake.last
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "The capital is "},
    ]
    assert body["max_tokens"] == 10 and "max_completion_tokens" not in body
    assert body["stop"] == ["."]
