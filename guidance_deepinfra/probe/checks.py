"""The requests `guidance-deepinfra probe` sends to one model, and how each answer is read.

Each check measures one wire fact that DeepInfra's documentation leaves open or states only in part. Every
request is streamed (as the plugin's are), small (``max_tokens`` of `MAX_TOKENS`), and sent once: 429s and
5xx answers are retried by the transport, nothing else. A check that asks whether the server enforces a JSON
Schema keyword uses an adversarial prompt asking for exactly a document that breaks the keyword, so an answer
that still conforms is evidence of enforcement and one that breaks it proves the keyword is not enforced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import APIError, DeepInfraError, redact_secrets
from ..interpreter.reasoning import CLOSE_TAG, OPEN_TAG, whole_answer

if TYPE_CHECKING:  # the command's help reads this module's tables without loading openai
    from ..transport.client import Transport

MAX_TOKENS = 48
#: ``max_tokens`` of the requests that measure how a model reasons (reasoning shares the budget with the answer).
REASONING_MAX_TOKENS = 512
#: ``max_tokens`` of the request meant to provoke the context-length error (no model has such a window).
HUGE_MAX_TOKENS = 10_000_000
PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
}


@dataclass
class Exchange:
    """What one streamed request gave back: the text and extras, or the typed error it was refused with."""

    text: str = ""  # the answer, after any reasoning
    error: DeepInfraError | None = None
    content: str = ""  # the content as it came, inline reasoning included
    field_reasoning: str = ""  # what came in reasoning_content / reasoning deltas
    reasoning: str = ""  # the reasoning, whichever way it came
    reasoning_source: str | None = None  # field, inline, closing, or None
    finish_reason: str | None = None
    logprob_entries: list[Any] = field(default_factory=list)
    tool_calls: int = 0
    usage: dict[str, Any] | None = None

    @property
    def refused(self) -> str:
        """The refusal as a short cell: the status and DeepInfra's message."""
        error = self.error
        if isinstance(error, APIError):
            return f"refused ({error.status}: {error.message})"
        return f"failed ({type(error).__name__}: {error})"


@dataclass
class Finding:
    """One measured fact: a short `value` for the table, the evidence in `detail`, the profile's reading."""

    value: str
    detail: str = ""
    supported: bool | None = None  # None: the answer does not settle it
    reading: str | None = None  # for a fact that is not yes/no (how a model reasons): the profile's value

    def __post_init__(self) -> None:
        # Both quote the server's replies, which may echo the key; they are printed and written to a file.
        self.value, self.detail = redact_secrets(self.value), redact_secrets(self.detail)


class Prober:
    """Sends the probe's requests for one model and counts them."""

    def __init__(self, transport: Transport, model: str) -> None:
        self.transport = transport
        self.model = model
        self.sent = 0
        self.cost = 0.0
        #: Fields every later request carries: for a model that reasons, reasoning turned off (or, where it
        #: cannot be, room for it), so that each check reads an answer rather than a budget spent thinking.
        self.extra: dict[str, Any] = {}
        #: The model reasons inline with only the closing tag (its template opens the block).
        self.closing_only = False

    def send(self, messages: list[dict[str, Any]], *, read_all: bool = True, **fields: Any) -> Exchange:
        """Stream one request; with `read_all` False, stop after the first piece (a reply nobody needs)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "stream": True,
            **self.extra,
            **fields,
        }
        self.sent += 1
        exchange = Exchange()
        try:
            with self.transport.stream_chat(body, model=self.model) as chunks:
                for chunk in chunks:
                    _read_chunk(chunk, exchange)
                    if not read_all and exchange.text:
                        break
        except DeepInfraError as error:
            exchange.error = error
        exchange.text, split = whole_answer(exchange.content, exchange.field_reasoning, closing_only=self.closing_only)
        exchange.reasoning, exchange.reasoning_source = split.reasoning, split.source
        if exchange.usage and isinstance(exchange.usage.get("estimated_cost"), (int, float)):
            self.cost += float(exchange.usage["estimated_cost"])
        return exchange


def _read_chunk(chunk: Any, exchange: Exchange) -> None:
    if chunk.usage is not None:
        exchange.usage = chunk.usage.model_dump()
    for choice in chunk.choices or []:
        delta = choice.delta
        if delta is not None and delta.content:
            exchange.content += delta.content
            if not exchange.text:
                exchange.text = delta.content  # something arrived (read_all=False stops here)
        extra = delta.model_extra if delta is not None else None
        if extra:
            piece = extra.get("reasoning_content") or extra.get("reasoning")
            if isinstance(piece, str):
                exchange.field_reasoning += piece
        if choice.finish_reason is not None:
            exchange.finish_reason = choice.finish_reason
        if delta is not None and delta.tool_calls:
            exchange.tool_calls = max(exchange.tool_calls, *(call.index + 1 for call in delta.tool_calls))
        if choice.logprobs is not None and choice.logprobs.content:
            exchange.logprob_entries.extend(choice.logprobs.content)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def json_schema_format(schema: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    inner: dict[str, Any] = {"name": "probe", "schema": schema}
    if strict:
        inner["strict"] = True
    return {"type": "json_schema", "json_schema": inner}


# --------------------------------------------------------------------------- the checks


def streamed_cost(reply: Exchange) -> Finding:
    """Read a plain streamed request's answer: is ``estimated_cost`` in the usage DeepInfra streams?"""
    if reply.error is not None:
        return Finding(reply.refused, supported=None)
    if reply.usage is None:
        return Finding("no usage in the stream", supported=False)
    cost = reply.usage.get("estimated_cost")
    if cost is None:
        return Finding("absent from usage", json.dumps(reply.usage), supported=False)
    return Finding(f"present (${cost})", json.dumps(reply.usage), supported=True)


def accepted(prober: Prober, messages: list[dict[str, Any]], **fields: Any) -> Finding:
    reply = prober.send(messages, **fields)
    if reply.error is not None:
        return Finding(reply.refused, supported=False)
    return Finding("accepted", reply.text, supported=True)


def json_object(prober: Prober) -> Finding:
    return accepted(
        prober, user('Answer with a JSON object whose key "ok" is true.'), response_format={"type": "json_object"}
    )


def json_schema(prober: Prober) -> Finding:
    return accepted(
        prober,
        user('Answer with a JSON object whose key "ok" is true.'),
        response_format=json_schema_format(PROBE_SCHEMA),
    )


def strict(prober: Prober) -> Finding:
    return accepted(
        prober,
        user('Answer with a JSON object whose key "ok" is true.'),
        response_format=json_schema_format(PROBE_SCHEMA, strict=True),
    )


def _value_schema(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"value": value}, "required": ["value"]}


#: keyword -> (a schema using it, a document breaking it that the adversarial prompt asks for)
KEYWORD_CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "enum": (_value_schema({"enum": ["red", "green"]}), {"value": "purple"}),
    "const": (_value_schema({"const": "fixed"}), {"value": "changed"}),
    "pattern": (_value_schema({"type": "string", "pattern": "^[0-9]{3}$"}), {"value": "abc"}),
    "minimum/maximum": (_value_schema({"type": "integer", "minimum": 1, "maximum": 5}), {"value": 10}),
    "minLength/maxLength": (_value_schema({"type": "string", "minLength": 2, "maxLength": 4}), {"value": "abcdefghij"}),
    "minItems/maxItems": (
        _value_schema({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}),
        {"value": [1, 2, 3, 4, 5]},
    ),
    "required": (
        {
            "type": "object",
            "properties": {"value": {"type": "string"}, "other": {"type": "string"}},
            "required": ["value", "other"],
        },
        {"value": "x"},
    ),
    "additionalProperties: false": (
        {
            "type": "object",
            "properties": {"value": {"type": "string"}},
            "required": ["value"],
            "additionalProperties": False,
        },
        {"value": "x", "extra": "y"},
    ),
    "anyOf": (_value_schema({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}), {"value": "text"}),
    "$ref": (
        {
            "$defs": {"small": {"type": "integer", "maximum": 3}},
            "type": "object",
            "properties": {"value": {"$ref": "#/$defs/small"}},
            "required": ["value"],
        },
        {"value": 99},
    ),
    "format": (_value_schema({"type": "string", "format": "date"}), {"value": "not a date"}),
}

ADVERSARIAL_PROMPT = "Reply with exactly this JSON and nothing else: "


def keyword(prober: Prober, name: str, *, use_strict: bool) -> Finding:
    """Ask for a document that breaks `name`; a conforming answer means the server held the model to it."""
    schema, violating = KEYWORD_CASES[name]
    reply = prober.send(
        user(ADVERSARIAL_PROMPT + json.dumps(violating)),
        response_format=json_schema_format(schema, strict=use_strict),
    )
    if reply.error is not None:
        return Finding(reply.refused, supported=None)
    try:
        document = json.loads(reply.text)
    except ValueError:
        return Finding("unclear (reply is not JSON)", reply.text, supported=None)
    from ..lowering.schema import prepare

    problems = prepare(schema).errors(document)
    if problems:
        return Finding("not enforced", f"{reply.text} ({problems[0]})", supported=False)
    return Finding("enforced", reply.text, supported=True)


REGEX = "[0-9]{3}"


def regex_format(prober: Prober) -> Finding:
    """``{"type": "regex"}``: accepted? and does a prompt asking for a word still get three digits?"""
    reply = prober.send(
        user("Reply with the word hello and nothing else."), response_format={"type": "regex", "regex": REGEX}
    )
    if reply.error is not None:
        return Finding(reply.refused, supported=False)
    if re.fullmatch(REGEX, reply.text):
        return Finding("accepted, enforced", reply.text, supported=True)
    return Finding("accepted, not enforced", reply.text, supported=False)


COUNT_PREFIX = "1, 2, 3, 4,"


def continuation(prober: Prober) -> Finding:
    """A trailing assistant message: continued from its last byte, or answered as a new turn?"""
    reply = prober.send(
        user("Count from 1 to 10, separated by commas and spaces, and nothing else.")
        + [{"role": "assistant", "content": COUNT_PREFIX}]
    )
    return _continued(reply, lambda text: bool(re.match(r" ?5\b", text)), lambda text: text.lstrip().startswith("1,"))


JSON_PREFIX = '{"name": "'


def continuation_with_format(prober: Prober, response_format: dict[str, Any] | None) -> Finding:
    """The same with ``response_format``: is the prefilled start of a JSON answer continued?"""
    if response_format is None:
        return Finding("not measured (no JSON response_format accepted)", supported=None)
    reply = prober.send(
        user('Answer with the JSON object {"name": "Ada"} and nothing else.')
        + [{"role": "assistant", "content": JSON_PREFIX}],
        response_format=response_format,
    )
    return _continued(reply, lambda text: _parses(JSON_PREFIX + text), _parses)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _continued(reply: Exchange, continues: Callable[[str], bool], restarts: Callable[[str], bool]) -> Finding:
    if reply.error is not None:
        return Finding(reply.refused, supported=False)
    if continues(reply.text):
        return Finding("continued byte-exactly", repr(reply.text), supported=True)
    if restarts(reply.text):
        return Finding("new turn (prefix ignored)", repr(reply.text), supported=False)
    return Finding("unclear", repr(reply.text), supported=None)


STOP_PROMPT = "Reply with exactly: alpha beta gamma delta epsilon"


def _stops(count: int) -> list[str]:
    return [f"zq{i}" for i in range(1, count)] + [" gamma"]  # only the last one can match


def stop_limit(prober: Prober) -> Finding:
    """How many ``stop`` strings count: send 5 (the last one the one that matches), then 17 if 5 held."""
    verdict = _stop_try(prober, 5)
    if verdict != "honoured":
        return Finding(f"4 (a 5th stop is {verdict})", supported=None)
    verdict = _stop_try(prober, 17)
    if verdict != "honoured":
        return Finding(f"16 (a 17th stop is {verdict})", supported=None)
    return Finding("more than 16", supported=None)


def _stop_try(prober: Prober, count: int) -> str:
    reply = prober.send(user(STOP_PROMPT), stop=_stops(count))
    if reply.error is not None:
        return reply.refused
    if "gamma" in reply.text:
        return "ignored"
    if "beta" in reply.text:
        return "honoured"
    return f"unclear (reply {reply.text!r})"


def logprobs(prober: Prober) -> Finding:
    reply = prober.send(user("Say OK."), logprobs=True)
    if reply.error is not None:
        return Finding(reply.refused, supported=False)
    if not reply.logprob_entries:
        return Finding("accepted, none returned", supported=False)
    return Finding(f"accepted, {len(reply.logprob_entries)} token(s) returned", supported=True)


TOP_LOGPROBS = 3


def top_logprobs(prober: Prober) -> Finding:
    reply = prober.send(user("Say OK."), logprobs=True, top_logprobs=TOP_LOGPROBS)
    if reply.error is not None:
        return Finding(reply.refused, supported=False)
    widths = [len(getattr(entry, "top_logprobs", None) or []) for entry in reply.logprob_entries]
    if not widths or not any(widths):
        return Finding("accepted, no alternatives returned", supported=False)
    return Finding(f"accepted, up to {max(widths)} alternative(s) per token", supported=True)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def tools(prober: Prober) -> Finding:
    reply = prober.send(user("What is the weather in Paris? Use the tool."), tools=[WEATHER_TOOL], tool_choice="auto")
    if reply.error is not None:
        return Finding(reply.refused, supported=False)
    if reply.tool_calls:
        return Finding("accepted, tool called", supported=True)
    return Finding("accepted, no tool call", reply.text, supported=True)


def context_error(prober: Prober) -> Finding:
    """Ask for more output than any context holds; the exact wording of the refusal is the result."""
    reply = prober.send(user("Say OK."), read_all=False, max_tokens=HUGE_MAX_TOKENS)
    error = reply.error
    if error is None:
        return Finding(f"no error (max_tokens={HUGE_MAX_TOKENS} accepted)", supported=None)
    if isinstance(error, APIError):
        return Finding(
            f"{error.status}: {error.message}", f"the plugin reads it as {type(error).__name__}", supported=None
        )
    return Finding(reply.refused, supported=None)


# --------------------------------------------------------------------------- reasoning


SAY_OK = "Say OK."


def reasoning_shape(prober: Prober, first: Exchange) -> Finding:
    """How the first reply reasons: in ``reasoning_content``, inline ``<think>...</think>``, inline with only the
    closing tag, or not at all. A closing-only model is read that way by every later check."""
    if first.reasoning_source == "field":
        return Finding("reasoning_content field", first.reasoning[:200], supported=True, reading="field")
    if first.reasoning_source == "inline":
        return Finding("inline <think>...</think>", first.reasoning[:200], supported=True, reading="inline")
    if CLOSE_TAG in first.content and OPEN_TAG not in first.content:
        prober.closing_only = True
        reasoning = first.content.split(CLOSE_TAG, 1)[0]
        return Finding("inline, closing </think> only", reasoning[:200], supported=True, reading="inline")
    if first.finish_reason == "length" and not first.text:
        return Finding(f"unclear (no answer within max_tokens={REASONING_MAX_TOKENS})", supported=None)
    return Finding("none seen", repr(first.text), supported=False, reading="none")


def reasoning_off(prober: Prober) -> Finding:
    """Does ``reasoning_effort: "none"`` turn the reasoning off?"""
    reply = prober.send(user(SAY_OK), reasoning_effort="none", max_tokens=REASONING_MAX_TOKENS)
    if reply.error is not None:
        return Finding(reply.refused, supported=False)
    if reply.reasoning or (prober.closing_only and CLOSE_TAG in reply.content):
        return Finding("reasoning still sent", reply.reasoning[:200], supported=False)
    return Finding("turns it off", repr(reply.text), supported=True)


def reasoning_with_format(prober: Prober, response_format: dict[str, Any] | None) -> Finding:
    """With ``response_format``: is the format applied to the answer after the reasoning, or does the model
    answer at once?"""
    if response_format is None:
        return Finding("not measured (no JSON response_format accepted)", supported=None)
    reply = prober.send(
        user('Answer with a JSON object whose key "ok" is true.'),
        response_format=response_format,
        max_tokens=REASONING_MAX_TOKENS,
    )
    if reply.error is not None:
        return Finding(reply.refused, supported=None)
    if not _parses(reply.text):
        return Finding("answer after the reasoning is not JSON", repr(reply.text), supported=False)
    if reply.reasoning:
        return Finding("applied to the answer after the reasoning", repr(reply.text), supported=True)
    return Finding("JSON at once, no reasoning", repr(reply.text), supported=True)


def reasoning_continuation(prober: Prober) -> Finding:
    """A trailing assistant message on a reasoning model: continued after reasoning, without it, or not?"""
    reply = prober.send(
        user("Count from 1 to 10, separated by commas and spaces, and nothing else.")
        + [{"role": "assistant", "content": COUNT_PREFIX}],
        max_tokens=REASONING_MAX_TOKENS,
    )
    found = _continued(reply, lambda text: bool(re.match(r" ?5\b", text)), lambda t: t.lstrip().startswith("1,"))
    if found.supported:
        how = "after reasoning" if reply.reasoning else "without reasoning"
        return Finding(f"continued byte-exactly, {how}", found.detail, supported=True)
    return found
