"""Fake DeepInfra behaviours for testing `guidance-deepinfra probe`: responder functions for `FakeDeepInfra`.

Each `Behaviour` describes one way a server could answer what the probe asks: enforce some JSON Schema
keywords or none, refuse json_object with a 405, cut at 4 stop strings, ignore a prefix, and so on. The
"model" behind it is obedient: it answers exactly what the prompt asks for (a violating document, a word
instead of digits, a count starting at 1), and only the server's own rules change that answer. The server
decides from the request alone, never from knowing which check is running.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from guidance_deepinfra.lowering.schema import prepare
from guidance_deepinfra.testing import Reply
from guidance_deepinfra.testing.fake_server import Responder
from guidance_deepinfra.testing.schema_samples import regex_example, valid_document

KEYWORDS = (
    "enum",
    "const",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "required",
    "additionalProperties",
    "anyOf",
    "$ref",
    "format",
)
CONTEXT_MESSAGE = "Requested 10000011 tokens, which exceeds this model's context length of 131072 tokens"


@dataclass
class Behaviour:
    """How one fake model and its server answer."""

    json_object: bool = True
    json_schema: bool = True
    strict: bool = True  # False: 422 for the strict field, as a FastAPI body validator would
    enforced: frozenset[str] = frozenset(KEYWORDS)  # keywords the server holds answers to
    regex: str = "refuse"  # "refuse" (422), "ignore" (accepted, no effect) or "enforce"
    continuation: bool = True  # False: a trailing assistant message is answered as a new turn
    stop_limit: int = 16
    stop_overflow: str = "refuse"  # beyond the limit: "refuse" (422) or "ignore" (extra stops not applied)
    logprobs: bool = True
    top_logprobs: bool = True  # False: logprobs come back without alternatives
    tools: bool = True
    streamed_cost: bool = True
    context_limit: int = 131072
    reasoning: str = "none"  # how the model reasons: "none", "field", "inline" or "closing" (only </think>)
    reasoning_off: bool = True  # reasoning_effort "none" turns the reasoning off
    format_after_reasoning: bool = True  # False: a response_format holds the model to JSON from its first token
    reasoning_tokens: int = 100  # what the reasoning costs; a smaller max_tokens ends inside it (length)
    requests: list[dict[str, Any]] = field(default_factory=list)


THOUGHT = "The user wants this. I will answer exactly as asked."


def stream(
    text: str, body: dict[str, Any], behaviour: Behaviour, *, thinks: bool = False, finish: str = "stop"
) -> Reply:
    """A streamed answer in DeepInfra's chunk format, with logprobs and usage as the behaviour says; a model that
    `thinks` sends its reasoning first, as its behaviour says (cut, with no answer, when `finish` is length)."""
    base = {"id": "chatcmpl-probe", "object": "chat.completion.chunk", "created": 1764000000, "model": body["model"]}
    events: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    if thinks and behaviour.reasoning == "field":
        delta = {"reasoning_content": THOUGHT}
        events.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        text = text if finish == "stop" else ""
    elif thinks:
        opening = "<think>" if behaviour.reasoning == "inline" else ""
        text = f"{opening}{THOUGHT}</think>\n\n{text}" if finish == "stop" else f"{opening}{THOUGHT}"
    for start in range(0, len(text), 6):
        piece = text[start : start + 6]
        choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
        if body.get("logprobs"):
            width = min(int(body.get("top_logprobs") or 0), 3) if behaviour.top_logprobs else 0
            alternatives = [{"token": f"alt{i}", "logprob": -1.0 - i, "bytes": None} for i in range(width)]
            choice["logprobs"] = {
                "content": [
                    {"token": piece, "logprob": -0.1, "bytes": list(piece.encode()), "top_logprobs": alternatives}
                ]
            }
        events.append({**base, "choices": [choice]})
    usage: dict[str, Any] = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    if behaviour.streamed_cost:
        usage["estimated_cost"] = 2.5e-06
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": usage})
    return Reply.sse([b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"])


def unprocessable(loc: list[str], message: str) -> Reply:
    return Reply.error(422, {"detail": [{"loc": ["body", *loc], "msg": message, "type": "value_error"}]})


def _violated(schema: dict[str, Any], text: str) -> set[str]:
    """The keywords an answer breaks (all of them when it is not JSON)."""
    try:
        document = json.loads(text)
    except ValueError:
        return set(KEYWORDS)
    return {error.validator for error in prepare(schema).validator.iter_errors(document)}


def _obedient_answer(messages: list[dict[str, Any]]) -> str:
    """What an obedient model writes for the last user message."""
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    asked = re.search(r"(?:exactly this JSON and nothing else:|the JSON object) (\{.*\})", prompt)
    if asked:
        return asked.group(1)
    exact = re.search(r"Reply with exactly: (.*)", prompt)
    if exact:
        return exact.group(1)
    if prompt.startswith("Count from 1 to 10"):
        return "1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    if "word hello" in prompt:
        return "hello"
    if "JSON object" in prompt:
        return '{"ok": true}'
    return "OK"


def _apply_stops(text: str, stops: list[str]) -> str:
    hits = [text.find(s) for s in stops if s and s in text]
    return text[: min(hits)] if hits else text


def responder(behaviour: Behaviour) -> Responder:
    """The responder answering every request as `behaviour` says."""

    def answer(body: dict[str, Any]) -> Reply:
        behaviour.requests.append(body)
        model = body["model"]
        if body.get("max_tokens", 0) + 20 > behaviour.context_limit:
            return Reply.error(400, {"error": {"message": CONTEXT_MESSAGE, "type": "invalid_request_error"}})
        if body.get("tools") and not behaviour.tools:
            return Reply.unsupported("Tool calling", model, param="tools")
        if "logprobs" in body and not behaviour.logprobs:
            return Reply.unsupported("logprobs", model, param="logprobs")
        stops = body.get("stop") or []
        if len(stops) > behaviour.stop_limit:
            if behaviour.stop_overflow == "refuse":
                return unprocessable(["stop"], f"List should have at most {behaviour.stop_limit} items")
            stops = stops[: behaviour.stop_limit]
        text = _obedient_answer(body["messages"])
        response_format = body.get("response_format") or {}
        kind = response_format.get("type")
        if kind == "json_object" and not behaviour.json_object:
            return Reply.unsupported("json_object response format", model)
        if kind == "json_schema":
            if not behaviour.json_schema:
                return Reply.unsupported("json_schema response format", model)
            inner = response_format["json_schema"]
            if "strict" in inner and not behaviour.strict:
                return unprocessable(["response_format", "json_schema", "strict"], "Extra inputs are not permitted")
            schema = inner["schema"]
            # A server that does not resolve $ref holds the answer to nothing beneath one.
            resolves = "$ref" in behaviour.enforced or "$ref" not in json.dumps(schema)
            if resolves and _violated(schema, text) & behaviour.enforced:
                sample = valid_document(prepare(schema))
                assert sample is not None, "the test server found no conforming document"
                text = json.dumps(sample.value)
        if kind == "regex":
            if behaviour.regex == "refuse":
                return unprocessable(["response_format"], "Input tag 'regex' found using 'type' does not match")
            if behaviour.regex == "enforce" and not re.fullmatch(response_format["regex"], text):
                text = regex_example(response_format["regex"]) or ""
        last = body["messages"][-1]
        if last["role"] == "assistant" and behaviour.continuation and text.startswith(last["content"]):
            text = text[len(last["content"]) :]
        if body.get("tools") and behaviour.tools:
            return Reply.tool_call("get_weather", {"city": "Paris"})
        thinks = behaviour.reasoning != "none"
        if body.get("reasoning_effort") == "none" and behaviour.reasoning_off:
            thinks = False
        if kind in ("json_object", "json_schema") and not behaviour.format_after_reasoning:
            thinks = False
        if thinks and body.get("max_tokens", 0) < behaviour.reasoning_tokens + 10:
            return stream("", body, behaviour, thinks=True, finish="length")
        return stream(_apply_stops(text, stops), body, behaviour, thinks=thinks)

    return answer


def by_model(behaviours: dict[str, Behaviour]) -> Responder:
    """One server hosting several fake models, each with its own behaviour."""
    responders = {model: responder(b) for model, b in behaviours.items()}
    return lambda body: responders[body["model"]](body)
