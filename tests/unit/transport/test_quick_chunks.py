"""Chunks built by `transport.chunks` are the ones the SDK builds, field for field, and streams use them.

Each event shape DeepInfra sends (text, reasoning in its own field, logprobs with alternatives, usage with
its details and ``estimated_cost``, a finish, an empty choice list, odd values) is built both ways and the
two compared by everything a reader can see: attributes, extras, ``to_dict`` (what the request cache records)
and ``model_dump``. Shapes not built here (tool calls, garbage) are left to the SDK.
"""

from __future__ import annotations

from typing import Any

import pytest
from guidance import assistant, gen, user
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk

from guidance_deepinfra.testing import Reply
from guidance_deepinfra.transport.chunks import QuickChunkStream, quick_chunk

BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1764000000, "model": "m"}
TOKEN = {
    "token": "fox",
    "logprob": -0.1,
    "bytes": [102, 111, 120],
    "top_logprobs": [{"token": "cat", "logprob": -2.0, "bytes": None}],
}
EVENTS: dict[str, dict[str, Any]] = {
    "role": {**BASE, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    "text": {**BASE, "choices": [{"index": 0, "delta": {"content": "fox "}, "finish_reason": None}]},
    "reasoning field": {**BASE, "choices": [{"index": 0, "delta": {"reasoning_content": "hm"}, "finish_reason": None}]},
    "logprobs": {
        **BASE,
        "choices": [{"index": 0, "delta": {"content": "fox"}, "logprobs": {"content": [TOKEN]}, "finish_reason": None}],
    },
    "finish and usage": {
        **BASE,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 5,
            "total_tokens": 25,
            "estimated_cost": 2.5e-06,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    },
    "usage only": {**BASE, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
    "extra top-level field": {**BASE, "service_tier": "default", "x_extra": {"a": 1}, "choices": []},
    "a number as content": {**BASE, "choices": [{"index": 0, "delta": {"content": 7}, "finish_reason": None}]},
}  # fmt: skip


def seen(chunk: Any) -> Any:
    choices = [
        (
            c.index,
            c.finish_reason,
            c.delta.content,
            c.delta.role,
            c.delta.model_extra,
            c.logprobs and c.logprobs.model_dump(),
        )
        for c in chunk.choices
    ]
    usage = chunk.usage
    details = (usage.prompt_tokens_details, usage.completion_tokens_details, usage.model_extra) if usage else None
    return chunk.id, chunk.model, chunk.model_extra, choices, usage and usage.prompt_tokens, details


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the number as content, both ways
@pytest.mark.parametrize("name", list(EVENTS))
def test_a_quick_chunk_is_the_sdks_chunk(name: str) -> None:
    event = EVENTS[name]
    quick = quick_chunk(event)
    sdk = construct_type(type_=ChatCompletionChunk, value=event)
    assert isinstance(quick, ChatCompletionChunk)
    assert seen(quick) == seen(sdk)
    assert quick.to_dict(mode="json") == sdk.to_dict(mode="json")
    assert quick.model_dump() == sdk.model_dump()


@pytest.mark.parametrize(
    "event",
    [
        {
            **BASE,
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}}],
        },
        {**BASE, "choices": "garbage"},
        {**BASE, "choices": [{"index": 0, "delta": "not an object"}]},
        ["not", "an", "object"],
    ],
    ids=["tool calls", "choices not a list", "delta not an object", "not a mapping"],
)
def test_other_shapes_are_left_to_the_sdk(event: Any) -> None:
    assert quick_chunk(event) is None


def test_a_program_streams_quick_chunks_through_the_sdk(fake, make_model, monkeypatch) -> None:
    built: list[Any] = []
    original = QuickChunkStream.__init__

    def counting(self: QuickChunkStream, **kwargs: Any) -> None:
        built.append(kwargs["cast_to"])
        original(self, **kwargs)

    monkeypatch.setattr(QuickChunkStream, "__init__", counting)
    fake.push(Reply.text("Paris is the capital.", reasoning="hm", chunk_size=3, completion_tokens=6))
    lm = make_model()
    with user():
        lm += "Capital of France?"
    with assistant():
        lm += gen("c", stop=" is")
    assert lm["c"] == "Paris" and lm.reasoning == ["hm"]
    assert built == [ChatCompletionChunk]
    assert lm.usage.completion_tokens == 6 and lm.usage.estimated_cost > 0
