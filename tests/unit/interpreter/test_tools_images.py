"""Tool calls through DeepInfra's tools/tool_choice, and images as image_url content parts."""

from __future__ import annotations

import base64
import io
import json
from typing import Literal

import pytest
from guidance import assistant, gen, image, user

from guidance_deepinfra import ConstraintError, ModelProfile, ToolArgumentsError, UnsupportedFeatureError, limits
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


CALLS: list[dict] = []


def set_unit(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """Choose the temperature unit for a city."""
    CALLS.append({"city": city, "unit": unit})
    return f"{city}: {unit}"


@pytest.fixture(autouse=True)
def _no_calls_yet() -> None:
    CALLS.clear()


def _ask_unit(make_model, **kwargs):
    lm = make_model(**kwargs)
    with user():
        lm += "Use kelvin for Oslo."
    return lm


def test_invalid_tool_arguments_are_fed_back_and_never_reach_the_callable(fake, make_model) -> None:
    fake.push(
        Reply.tool_call("set_unit", {"city": "Oslo", "unit": "kelvin"}, call_id="call_bad"),
        Reply.tool_call("set_unit", {"city": "Oslo", "unit": "celsius"}, call_id="call_good"),
        Reply.text("Done."),
    )
    lm = _ask_unit(make_model)
    with assistant():
        lm += gen(tools=[set_unit])
    assert CALLS == [{"city": "Oslo", "unit": "celsius"}]  # the callable ran once, with valid arguments
    retry = fake.requests[1]["messages"]
    assert retry[-2]["tool_calls"][0]["function"] == {
        "name": "set_unit",
        "arguments": '{"city": "Oslo", "unit": "kelvin"}',
    }
    assert retry[-1]["role"] == "tool" and retry[-1]["tool_call_id"] == "call_bad"
    assert "'kelvin' is not one of ['celsius', 'fahrenheit']" in retry[-1]["content"]
    assert "Oslo: celsius" in str(lm) and '"unit": "kelvin"' not in str(lm)
    # The rejected call is not part of the program's history: the next turn sees only the valid one.
    with assistant():
        lm += gen("answer", max_tokens=10)
    history = fake.last["messages"]
    assert [m.get("tool_call_id") for m in history if m["role"] == "tool"] == ["call_good"]
    stats = lm.usage.constraints["tool_arguments"]
    assert stats.round_trips == 2 and stats.satisfied == 1 and stats.failed == 0
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0  # both turns' tokens, as for every constraint


def test_missing_arguments_end_in_a_typed_error_after_the_bounded_attempts(fake, make_model) -> None:
    fake.push(*[Reply.tool_call("set_unit", {"city": "Oslo"}) for _ in range(3)])
    lm = _ask_unit(make_model)
    with pytest.raises(ToolArgumentsError) as info:
        with assistant():
            lm += gen(tools=[set_unit])
    assert isinstance(info.value, ConstraintError)
    assert len(fake.requests) == 3 == len(info.value.attempts)  # max_attempts=3, the model's default
    assert "'unit' is a required property" in str(info.value)
    assert CALLS == []


def test_tool_argument_retries_stop_at_the_token_budget(fake, make_model) -> None:
    fake.push(*[Reply.tool_call("set_unit", {"city": "Oslo", "unit": "kelvin"}, prompt_tokens=30) for _ in range(3)])
    lm = _ask_unit(make_model)
    with pytest.raises(ToolArgumentsError) as info:
        with limits(max_attempts=3, token_budget=50), assistant():
            lm += gen(tools=[set_unit])
    assert len(fake.requests) == len(info.value.attempts) == 2  # 42 tokens a turn: the budget is spent at 2
    assert CALLS == []


def test_a_turn_without_tool_calls_is_written_as_text(fake, make_model) -> None:
    fake.push(Reply.text("Which unit do you prefer?"))
    lm = _ask_unit(make_model)
    with assistant():
        lm += gen(tools=[set_unit])
    assert "Which unit do you prefer?" in str(lm)
    assert CALLS == [] and len(fake.requests) == 1


@pytest.mark.parametrize(
    "name,arguments,reason",
    [
        ("set_unit", '{"city": "Oslo", "unit": ', "not valid JSON"),
        ("set_unit", '["Oslo", "celsius"]', "must be a JSON object"),
        ("get_unit", '{"city": "Oslo"}', "there is no tool named 'get_unit'"),
        ("set_unit", '{"city": "Oslo", "unit": "celsius", "extra": 1}', "Additional properties"),
    ],
)
def test_unusable_calls_are_refused_within_limits(fake, make_model, name, arguments, reason) -> None:
    fake.push(*[Reply.tool_call(name, arguments) for _ in range(2)])
    lm = _ask_unit(make_model)
    with pytest.raises(ToolArgumentsError, match="tool call arguments") as info:
        with limits(max_attempts=2), assistant():
            lm += gen(tools=[set_unit])
    assert len(fake.requests) == 2
    assert reason in fake.requests[1]["messages"][-1]["content"]
    assert all(reason in " ".join(a.errors) for a in info.value.attempts)
    assert CALLS == []


def test_a_tool_that_cannot_bind_its_arguments_gives_its_error_as_result(fake, make_model) -> None:
    # A schema given by hand that the callable does not match: guidance hands the error back as the result.
    from guidance._tools import Tool

    def lookup(city: str) -> str:
        return city

    tool = Tool.from_callable(lookup, parameters={"type": "object", "properties": {"town": {"type": "string"}}})
    fake.push(Reply.tool_call("lookup", {"town": "Oslo"}))
    lm = _ask_unit(make_model)
    with assistant():
        lm += gen(tools=[tool])
    results = [m for m in lm._interpreter.state.messages if getattr(m, "role", None) == "tool"]
    assert "unexpected keyword argument 'town'" in json.loads(results[-1].content)


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
