"""Pure construction of DeepInfra chat-completion request bodies.

Nothing here does I/O: given messages and options it returns the exact JSON body that will be sent, so
tests can check what we send without a server. Only parameters DeepInfra documents are ever emitted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError, InvalidProgramError
from ..thinking import setting_from_fields

#: Stop strings DeepInfra accepts in one request (its ``stop`` field); `_stops` plans client-side stops around it.
API_STOP_LIMIT = 4

#: Request fields DeepInfra documents for /chat/completions (prose docs plus its OpenAPI spec).
DOCUMENTED_FIELDS: frozenset[str] = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "stop",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tools",
        "tool_choice",
        "service_tier",
        "reasoning_effort",
        "reasoning",
        "logprobs",
        "top_logprobs",
        "top_k",
        "min_p",
        "repetition_penalty",
        "seed",
        "chat_template_kwargs",
    }
)

#: The fields that say how a model reasons (`thinking.ReasoningSetting` checks and sends them).
REASONING_FIELDS = frozenset({"reasoning_effort", "reasoning", "chat_template_kwargs"})

#: Fields a user may set as per-model defaults (the rest are set by the program itself).
USER_DEFAULT_FIELDS: frozenset[str] = DOCUMENTED_FIELDS - {
    "model",
    "messages",
    "stream",
    "stop",
    "response_format",
    "tools",
    "tool_choice",
    "logprobs",
    "top_logprobs",
    "n",
}

#: guidance SamplingParams keys and the DeepInfra field each maps to.
SAMPLING_FIELDS = {"top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty"}


_NUMBER_FIELDS = frozenset(
    {"temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"}
)
_INTEGER_FIELDS = frozenset({"top_k", "seed", "max_tokens", "n"})
_STRING_FIELDS = frozenset({"service_tier"})


def check_value(name: str, value: Any, error: type[Exception] = ConfigurationError) -> Any:
    """Refuse a value of the wrong JSON type before it is sent (DeepInfra would answer 422 after a round trip).

    Only types are checked, not ranges: DeepInfra's accepted ranges differ between models.
    """
    if name in _NUMBER_FIELDS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a finite number"
    elif name in _INTEGER_FIELDS:
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif name in _STRING_FIELDS:
        ok = isinstance(value, str)
        kind = "a string"
    else:
        return value
    if not ok:
        raise error(f"{name} must be {kind}, got {value!r}")
    return value


def check_defaults(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate user request defaults (``seed``, ``service_tier``, ``reasoning_effort``...) up front."""
    if not defaults:
        return {}
    unknown = sorted(set(defaults) - USER_DEFAULT_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"unsupported request field(s) {unknown}: DeepInfra documents only {sorted(USER_DEFAULT_FIELDS)} "
            "as per-model settings"
        )
    for name, value in defaults.items():
        check_value(name, value)
    setting_from_fields(defaults)  # an unknown effort is refused here, before any request
    return dict(defaults)


def sampling_fields(sampling_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Map guidance's `SamplingParams` onto DeepInfra fields, dropping unset values.

    guidance's own OpenAI backend refuses top_k, min_p and repetition_penalty; DeepInfra accepts them.
    """
    out: dict[str, Any] = {}
    for key, value in (sampling_params or {}).items():
        if value is None:
            continue
        field = SAMPLING_FIELDS.get(key)
        if field is None:
            raise ConfigurationError(f"unknown sampling parameter {key!r}; known: {sorted(SAMPLING_FIELDS)}")
        if key == "top_p" and value == 1.0:
            continue  # DeepInfra's default; sending it changes nothing
        out[field] = check_value(field, value)
    return out


def chat_body(
    *,
    model: str,
    messages: list[dict[str, Any]],
    defaults: Mapping[str, Any] | None = None,
    sampling: Mapping[str, Any] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    stop: list[str] | None = None,
    response_format: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | None = None,
    logprobs: bool = False,
    top_logprobs: int | None = None,
) -> dict[str, Any]:
    """Build one streaming /chat/completions body with only documented fields, in a stable order."""
    if not messages:
        raise InvalidProgramError("a DeepInfra request needs at least one message")
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    body.update(defaults or {})
    body.update(sampling or {})
    if temperature is not None:
        body["temperature"] = check_value("temperature", temperature, InvalidProgramError)
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or max_tokens <= 0:
            raise InvalidProgramError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        body["max_tokens"] = max_tokens
    if stop:
        if len(stop) > API_STOP_LIMIT:
            raise InvalidProgramError(f"DeepInfra accepts at most {API_STOP_LIMIT} stop strings")
        if not all(isinstance(s, str) and s for s in stop):
            raise InvalidProgramError(f"stop strings must be non-empty strings, got {stop!r}")
        body["stop"] = list(stop)
    if response_format is not None:
        body["response_format"] = response_format
    if tools:
        body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    if logprobs:
        body["logprobs"] = True
        if top_logprobs:
            if not 1 <= top_logprobs <= 20:
                raise ConfigurationError(f"top_logprobs must be between 1 and 20, got {top_logprobs}")
            body["top_logprobs"] = top_logprobs
    extra = set(body) - DOCUMENTED_FIELDS
    assert not extra, f"undocumented request fields {extra}"
    return body
