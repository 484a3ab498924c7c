"""Tool calls through DeepInfra's tools/tool_choice, and images as image_url content parts."""

from __future__ import annotations

import base64
import io

import pytest
from guidance import assistant, gen, image, user

from guidance_deepinfra import ModelProfile, UnsupportedFeatureError
from guidance_deepinfra.testing import Reply


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


def test_tool_call_round_trip(fake, make_model) -> None:
    fake.push(Reply.tool_call("get_weather", {"city": "Paris"}), Reply.text("It is sunny in Paris."))
    lm = make_model()
    with user():
        lm += "Weather in Paris?"
    with assistant():
        lm += gen(tools=[get_weather])
    first = fake.requests[0]
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": first["tools"][0]["function"]["parameters"],
            },
        }
    ]
    assert first["tools"][0]["function"]["parameters"]["required"] == ["city"]
    assert first["tool_choice"] == "auto"
    assert "strict" not in first["tools"][0]["function"]  # not in DeepInfra's FunctionDefinition
    assert "sunny in Paris" in str(lm)

    with assistant():
        lm += gen("answer", max_tokens=20)
    history = fake.last["messages"]
    assert history[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert history[2] == {"role": "tool", "tool_call_id": "call_0", "content": '"sunny in Paris"'}
    assert lm["answer"] == "It is sunny in Paris."


def test_model_without_tools_gets_typed_error_and_is_remembered(fake, make_model) -> None:
    fake.push(Reply.unsupported("Tool calling", "test/model", param="tools"))
    lm = make_model()
    with user():
        lm += "Weather?"
    with pytest.warns(UserWarning, match="tools"), pytest.raises(UnsupportedFeatureError) as info:
        with assistant():
            lm += gen(tools=[get_weather])
    assert info.value.status == 405 and info.value.feature == "tools"
    assert "Tool calling is not supported for model: test/model" in str(info.value)
    # the second attempt fails before any request
    with pytest.raises(UnsupportedFeatureError):
        with assistant():
            lm += gen(tools=[get_weather])
    assert len(fake.requests) == 1


def test_declared_profile_without_tools_sends_nothing(fake, make_model) -> None:
    lm = make_model(profile=ModelProfile(tools=False))
    with user():
        lm += "Weather?"
    with pytest.raises(UnsupportedFeatureError):
        with assistant():
            lm += gen(tools=[get_weather])
    assert fake.requests == []


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_blob_becomes_data_url_part(fake, make_model) -> None:
    fake.push(Reply.text("A red square."))
    lm = make_model("meta-llama/Llama-3.2-11B-Vision-Instruct")
    png = _png()
    with user():
        lm += "What is this?" + image(png)
    with assistant():
        lm += gen("caption")
    content = fake.last["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["type"] == "image_url"
    assert content[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert lm["caption"] == "A red square."


def test_image_url_is_passed_by_reference(fake, make_model) -> None:
    from guidance._ast import ImageUrl

    fake.push(Reply.text("A cat."))
    lm = make_model("meta-llama/Llama-3.2-11B-Vision-Instruct")
    with user():
        lm += "Describe."
        lm += ImageUrl(url="https://example.com/cat.jpg")
    with assistant():
        lm += gen("caption")
    parts = fake.last["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
