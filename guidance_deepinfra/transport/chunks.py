"""Stream chunks built without the SDK's generic model construction, for the shape DeepInfra sends.

The openai SDK turns each server-sent event into a `ChatCompletionChunk` with `construct_type`, which walks
the type annotations of every field of every nested model for every chunk: on a 200-token answer streamed a
token per chunk that is most of the client's time, more than everything the plugin and guidance do with the
text. The SDK does not validate the values either way (it constructs, leniently), and the plugin checks every
field it reads (`client._chunk_problem`), so the chunks here are built directly: the same model classes, the
same fields, extras (``reasoning_content``, ``estimated_cost``) and set-field records, in a tenth of the time.

Only the shapes known here are built so: a chunk with tool calls, a value of an unexpected type where a
nested object belongs, or a client with strict response validation goes through the SDK's own construction.
`QuickChunkStream` is the SDK's own `Stream`, handed a client whose `_process_response_data` takes this path;
everything else (the event decoder, errors inside the stream, closing) is the SDK's.
"""

from __future__ import annotations

from typing import Any, cast

from openai import Stream
from openai.types.chat import ChatCompletionChunk, ChatCompletionTokenLogprob
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta, ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from openai.types.completion_usage import CompletionTokensDetails, CompletionUsage, PromptTokensDetails


def _fields(cls: type) -> frozenset[str]:
    return frozenset(cls.model_fields)  # type: ignore[attr-defined]


_CHUNK, _CHOICE, _DELTA = _fields(ChatCompletionChunk), _fields(Choice), _fields(ChoiceDelta)
_LOGPROBS, _TOKEN, _TOP = _fields(ChoiceLogprobs), _fields(ChatCompletionTokenLogprob), _fields(TopLogprob)
_USAGE, _PROMPT, _COMPLETION = _fields(CompletionUsage), _fields(PromptTokensDetails), _fields(CompletionTokensDetails)


class _Unknown(Exception):
    """A chunk of a shape not built here: the SDK constructs it."""


def _model(cls: Any, fields: frozenset[str], values: Any, nested: dict[str, Any] | None = None) -> Any:
    """An instance of `cls` holding `values` (a mapping) as the SDK's lenient construction would: every field,
    absent ones None, unknown keys as extras, the keys given as the fields set."""
    if not isinstance(values, dict):
        raise _Unknown
    data = {name: values.get(name) for name in fields}
    if nested:
        data.update(nested)
    extra = {key: value for key, value in values.items() if key not in fields}
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", data)
    object.__setattr__(instance, "__pydantic_extra__", extra)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values) & fields)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


def _list(values: Any) -> list[Any]:
    if not isinstance(values, list):
        raise _Unknown
    return values


def _token(entry: Any) -> Any:
    top = entry.get("top_logprobs") if isinstance(entry, dict) else None
    tops = [_model(TopLogprob, _TOP, t) for t in _list(top)] if top is not None else None
    return _model(ChatCompletionTokenLogprob, _TOKEN, entry, {"top_logprobs": tops} if tops is not None else None)


def _logprobs(value: Any) -> Any:
    if value is None:
        return None
    nested: dict[str, Any] = {}
    for name in ("content", "refusal"):
        entries = value.get(name) if isinstance(value, dict) else None
        if entries is not None:
            nested[name] = [_token(e) for e in _list(entries)]
    return _model(ChoiceLogprobs, _LOGPROBS, value, nested)


def _choice(value: Any) -> Any:
    if not isinstance(value, dict):
        raise _Unknown
    delta = value.get("delta")
    if isinstance(delta, dict) and (delta.get("tool_calls") is not None or delta.get("function_call") is not None):
        raise _Unknown
    nested = {"delta": _model(ChoiceDelta, _DELTA, delta), "logprobs": _logprobs(value.get("logprobs"))}
    return _model(Choice, _CHOICE, value, nested)


def _usage(value: Any) -> Any:
    if value is None:
        return None
    nested: dict[str, Any] = {}
    if isinstance(value, dict):
        for name, cls, fields in (
            ("prompt_tokens_details", PromptTokensDetails, _PROMPT),
            ("completion_tokens_details", CompletionTokensDetails, _COMPLETION),
        ):
            if value.get(name) is not None:
                nested[name] = _model(cls, fields, value[name])
    return _model(CompletionUsage, _USAGE, value, nested)


def quick_chunk(data: Any) -> ChatCompletionChunk | None:
    """`data` (one parsed event) as a `ChatCompletionChunk`, or None for a shape left to the SDK."""
    try:
        choices = [_choice(c) for c in _list(data.get("choices") if isinstance(data, dict) else None)]
        chunk: ChatCompletionChunk = _model(
            ChatCompletionChunk, _CHUNK, data, {"choices": choices, "usage": _usage(data.get("usage"))}
        )
    except _Unknown:
        return None
    return chunk


class _QuickClient:
    """The SDK client as a `Stream` sees it, with chat chunks built by `quick_chunk`."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _process_response_data(self, *, data: object, cast_to: Any, response: Any) -> Any:
        if cast_to is ChatCompletionChunk and not getattr(self._client, "_strict_response_validation", False):
            chunk = quick_chunk(data)
            if chunk is not None:
                return chunk
        return self._client._process_response_data(data=data, cast_to=cast_to, response=response)


class QuickChunkStream(Stream[ChatCompletionChunk]):
    """The SDK's chat-completion `Stream`, its chunks built by `quick_chunk`."""

    def __init__(self, *, cast_to: Any, response: Any, client: Any, options: Any = None) -> None:
        super().__init__(cast_to=cast_to, response=response, client=cast(Any, _QuickClient(client)), options=options)
