"""Typed errors raised by guidance-deepinfra.

Every error that comes from DeepInfra carries the HTTP status and DeepInfra's own message, so a user can
tell a missing capability from a bad key from a busy model without reading tracebacks. Errors found in the
user's program (a bad schema, an empty select, an invalid regex) are raised before any request is sent.
None of these errors ever holds the API key: messages are built from response bodies and our own text, and
every text is passed through `redact` first, because a server may echo the key back ("Invalid API key
provided: <key>") and a proxy may echo the whole ``Authorization`` header.

Reading DeepInfra's error bodies and choosing the error type for an HTTP status belong to the transport
(`transport.wire`); this module holds only the types and the redaction they apply.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import Any

REDACTED = "[redacted]"

#: Keys shorter than this are not masked: no real key is that short, and masking would garble messages.
MIN_SECRET_LENGTH = 8
#: A run of this many characters of a key is enough to mask the token it appears in (a truncated echo).
_PIECE = 12
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[^\s\"'<>,;]+")
_TOKEN_RUN = re.compile(rf"[A-Za-z0-9_\-.~+/=]{{{_PIECE},}}")
_secrets_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_pieces: frozenset[str] = frozenset()
#: Every `_PIECE`-long run of a key holds one of its aligned blocks of half that length: a cheap first test.
_blocks: tuple[str, ...] = ()


def register_secret(secret: str) -> None:
    """Remember a credential of this process (the API key), so that `redact` masks it wherever it appears."""
    global _secrets, _pieces, _blocks
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if secret in _secrets:
            return
        half = _PIECE // 2
        _pieces = _pieces | {secret[i : i + _PIECE] for i in range(max(0, len(secret) - _PIECE + 1))}
        _blocks = (*_blocks, *(secret[i : i + half] for i in range(0, len(secret) - half + 1, half)))
        _secrets = (*_secrets, secret)


def redact(text: str) -> str:
    """`text` with every registered key, any long piece of one, and every ``Bearer <token>`` value masked.

    Applied to all text that comes from a server before it reaches an error, a log line or a file: error
    bodies, HTML pages, stream events and chunks, answers quoted in a `ConstraintError`.
    """
    if not isinstance(text, str) or not text:
        return text
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _mask_keys(text)


def redact_secrets(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, strings) with registered keys masked in every string, nothing else.

    For records written to files: unlike `redact`, ``Bearer ...`` in extracted data is left alone, since a
    document may well talk about HTTP headers; only this process's own keys are never written.
    """
    if isinstance(value, str):
        return _mask_keys(value)
    if isinstance(value, dict):
        return {redact_secrets(k): redact_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


def _mask_keys(text: str) -> str:
    """`text` with every registered key, and every token holding a `_PIECE`-long run of one, masked."""
    secrets, pieces, blocks = _secrets, _pieces, _blocks
    if not any(block in text for block in blocks):
        return text  # no piece of any key can be in it (the common case, decided in C)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _TOKEN_RUN.sub(lambda m: REDACTED if _holds_piece(m.group(0), pieces) else m.group(0), text)


def _holds_piece(run: str, pieces: frozenset[str]) -> bool:
    return any(run[i : i + _PIECE] in pieces for i in range(len(run) - _PIECE + 1))


class DeepInfraError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        error_type: str | None = None,
        model: str | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = redact(param) if param is not None else None
        self.error_type = redact(error_type) if error_type is not None else None
        self.model = model

    def __str__(self) -> str:
        return self.render(self.message)

    def render(self, message: str) -> str:
        """`message` as this error shows its own: with its status and model."""
        parts = [message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status})")
        if self.model:
            parts.append(f"[model: {self.model}]")
        return " ".join(parts)


class ConfigurationError(DeepInfraError, ValueError):
    """The plugin was set up wrongly (missing key, malformed base_url, unknown option)."""


class MissingAPIKeyError(ConfigurationError):
    """No API key was given and none was found in the environment."""


class InvalidProgramError(DeepInfraError, ValueError):
    """The guidance program asks for something that cannot be sent (bad schema, empty select, bad regex)."""


class APIError(DeepInfraError):
    """DeepInfra answered with an error status."""


class AuthenticationError(APIError):
    """401/403: the key is missing, wrong or lacks access."""


class ModelNotFoundError(APIError):
    """404 or a 'model not found' message: the model name is unknown to DeepInfra."""


class ContextLengthError(APIError):
    """The prompt plus max_tokens does not fit the model's context window."""


class UnsupportedFeatureError(APIError):
    """The model does not support a requested feature (response_format, tools, logprobs...).

    `feature` names the request field DeepInfra rejected, e.g. ``"response_format"`` or ``"tools"``.
    """

    def __init__(self, message: str, *, feature: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.feature = feature


class InvalidParameterError(APIError):
    """400/422: DeepInfra refused a parameter value."""


class RateLimitError(APIError):
    """429 that persisted through every retry."""


class ServerError(APIError):
    """5xx that persisted through every retry."""


class ProtocolError(DeepInfraError):
    """The server answered something that is not a valid chat completion (garbage, bad SSE, empty choices)."""


class _Counted(DeepInfraError):
    """An error that outlived several attempts: the message ends with their count (`attempts`), and
    `uncounted()` says the same without it, for a message that counts something else (a batch's requeues)."""

    def __init__(self, message: str, *, attempts: int | None = None, **kwargs: Any) -> None:
        super().__init__(message if attempts is None else f"{message} after {attempts} attempts", **kwargs)
        self.detail = redact(message)
        self.attempts = attempts

    def uncounted(self) -> str:
        return self.render(self.detail)


class RequestTimeoutError(_Counted):
    """The request or the stream did not complete within the configured timeout (after retries)."""


class ConnectionFailedError(_Counted):
    """The server could not be reached (after retries).

    `reason` says why no connection could be made at all (refused, a host name that does not resolve, TLS,
    a proxy), in words; it is None when a connection was made and then broke. `base_url` is the endpoint.
    """

    def __init__(self, message: str, *, base_url: str | None = None, reason: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.base_url = base_url
        self.reason = reason


class OutputWriteError(DeepInfraError, OSError):
    """A record could not be written to an extraction's output or errors file (a full disk, a quota).

    The partial record is removed, so the file still ends with the last complete record: everything written
    before stays, and a rerun with the same output resumes after it. `errno` is the operating system's code.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        DeepInfraError.__init__(self, message)
        self.errno = errno


class UnclosedReasoningError(DeepInfraError):
    """A reply opened ``<think>`` and ended before ``</think>``: it holds reasoning and no answer.

    Nothing of it is written to the program. `finish_reason` says why the reply ended (``length``: the
    ``max_tokens`` budget, `max_tokens`, was spent reasoning), `reasoning` holds the reasoning that came.
    """

    def __init__(
        self,
        message: str,
        *,
        finish_reason: str | None,
        max_tokens: int | None,
        reasoning: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.finish_reason = finish_reason
        self.max_tokens = max_tokens
        self.reasoning = redact(reasoning)


class ReasoningBudgetWarning(UserWarning):
    """A reply ended for its length (``finish_reason: length``) after reasoning and before any answer: the
    model spent the request's ``max_tokens`` thinking, so a gen's text is empty."""


@dataclass(frozen=True)
class Attempt:
    """One try at satisfying a client-side constraint: what came back and why it was refused."""

    text: str
    errors: tuple[str, ...]
    strategy: str = "generate"


class ConstraintError(DeepInfraError):
    """A constraint could not be satisfied within its bounds; the capture was not set.

    `constraint` describes what was asked for, `attempts` holds every try with its text and the reasons it
    was refused, so that nothing is hidden and nothing wrong is handed back.
    """

    def __init__(self, message: str, *, constraint: str, attempts: list[Attempt], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.constraint = constraint
        # The attempts quote what the server sent: masked like every other server text.
        self.attempts = [replace(a, text=redact(a.text), errors=tuple(map(redact, a.errors))) for a in attempts]

    @property
    def last_output(self) -> str | None:
        """The text of the last attempt (None when no attempt was made)."""
        return self.attempts[-1].text if self.attempts else None

    def __str__(self) -> str:
        lines = [super().__str__(), f"constraint: {self.constraint}", f"attempts: {len(self.attempts)}"]
        for i, attempt in enumerate(self.attempts, 1):
            shown = attempt.text if len(attempt.text) <= 300 else attempt.text[:300] + "..."
            lines.append(f"  {i}. [{attempt.strategy}] {shown!r}")
            for err in attempt.errors[:5]:
                lines.append(f"     - {err}")
        return "\n".join(lines)


class ToolArgumentsError(ConstraintError):
    """The model's tool calls kept breaking the tools' JSON schemas within the bounds; no tool ran with them.

    Each attempt's text lists the calls (name and arguments) and its errors say what was wrong with each.
    """
