"""Checking a model turn's tool calls against the tools' JSON schemas before any tool runs.

A local model's tool call is generated under its tool's grammar, so its arguments always fit the schema. On
DeepInfra they are whatever the model wrote: an argument outside an ``enum``, a missing one, text that is no
JSON. Each call of a turn is read from the streamed deltas and validated with jsonschema (the same checks as
``json()``); a turn with any invalid call is not written into the program and no tool runs. The model is
shown its calls and, as their tool results, what was wrong, and asked again, within the constraint bounds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from guidance._tools import FunctionTool, Tool
from openai.types.chat import ChatCompletionChunk

from ..errors import InvalidProgramError
from .schema import PreparedSchema, prepare


@dataclass
class StreamedCall:
    """One tool call assembled from its streamed deltas."""

    index: int
    call_id: str
    name: str
    arguments: str


def assemble_calls(chunks: Iterable[ChatCompletionChunk]) -> list[StreamedCall]:
    """The tool calls of one streamed turn, in their order, arguments concatenated as the deltas arrived."""
    calls: dict[int, StreamedCall] = {}
    for chunk in chunks:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.get(delta.index)
            if call is None:
                call = calls[delta.index] = StreamedCall(delta.index, delta.id or f"call_{delta.index}", "", "")
            if delta.function is not None:
                if delta.function.name and not call.name:
                    call.name = delta.function.name
                call.arguments += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


def tool_schemas(tools: dict[str, Tool]) -> dict[str, PreparedSchema]:
    """Each function tool's prepared parameter schema (an invalid schema is refused before any request)."""
    prepared: dict[str, PreparedSchema] = {}
    for name, tool in tools.items():
        if not isinstance(tool.tool, FunctionTool):
            continue  # refused where the request is built: DeepInfra takes only function tools
        try:
            schema = tool.tool.get_schema()
        except Exception as exc:  # noqa: BLE001 - pydantic raises several types for models it cannot describe
            raise InvalidProgramError(f"tool {name!r}: its parameters have no JSON schema: {exc}") from None
        prepared[name] = prepare(schema, default_name=name)
    return prepared


def call_errors(call: StreamedCall, schemas: dict[str, PreparedSchema]) -> list[str]:
    """Why `call` cannot run (empty when it fits its tool's schema)."""
    if call.name not in schemas:
        return [f"there is no tool named {call.name!r}; the tools are: {', '.join(sorted(schemas))}"]
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError as exc:
        return [f"the arguments are not valid JSON: {exc}"]
    if not isinstance(arguments, dict):
        return [f"the arguments must be a JSON object, not {type(arguments).__name__}"]
    return schemas[call.name].errors(arguments)


def feedback_messages(calls: list[StreamedCall], errors: list[list[str]], content: str) -> list[dict[str, Any]]:
    """The turn as the model made it, then one tool message per call saying what was wrong (or not run)."""
    assistant: dict[str, Any] = {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ],
    }
    results: list[dict[str, Any]] = []
    for call, reasons in zip(calls, errors, strict=True):
        if reasons:
            text = (
                f"Error: the call was not run because its arguments do not fit the schema of {call.name!r}: "
                + "; ".join(reasons[:8])
                + ". Call the tool again with valid arguments."
            )
        else:
            text = "Not run: another call in this turn had invalid arguments. Make the call again if needed."
        results.append({"role": "tool", "tool_call_id": call.call_id, "content": text})
    return [assistant, *results]


def guarded(tools: dict[str, Tool]) -> dict[str, Tool]:
    """The tools with their callables wrapped once more.

    guidance formats a tool's exception from the frame after its own, and asserts there is one: an error in
    the call itself (arguments that do not bind) would end in a bare AssertionError. One extra frame keeps
    guidance's behaviour (the traceback becomes the tool result) for every error.
    """
    return {name: tool.model_copy(update={"callable": _wrap(tool.callable)}) for name, tool in tools.items()}


def _wrap(function: Callable[..., Any]) -> Callable[..., Any]:
    def call_tool(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    return call_tool
