"""Typed errors raised by guidance-deepinfra.

Every error that comes from DeepInfra carries the HTTP status and DeepInfra's own message, so a user can
tell a missing capability from a bad key from a busy model without reading tracebacks. Errors found in the
user's program (a bad schema, an empty select, an invalid regex) are raised before any request is sent.
None of these errors ever holds the API key: messages are built from response bodies and our own text, and
every text is passed through `redact` first, because a server may echo the key back ("Invalid API key
provided: <key>") and a proxy may echo the whole ``Authorization`` header.
"""

from __future__ import annotations

import html
import json
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
        parts = [self.message]
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


class RequestTimeoutError(DeepInfraError):
    """The request or the stream did not complete within the configured timeout (after retries)."""


class ConnectionFailedError(DeepInfraError):
    """The server could not be reached (after retries)."""


class OutputWriteError(DeepInfraError, OSError):
    """A record could not be written to an extraction's output or errors file (a full disk, a quota).

    The partial record is removed, so the file still ends with the last complete record: everything written
    before stays, and a rerun with the same output resumes after it. `errno` is the operating system's code.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        DeepInfraError.__init__(self, message)
        self.errno = errno


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


@dataclass(frozen=True)
class ErrorBody:
    """DeepInfra's error body reduced to what we use. DeepInfra sends three shapes; see `parse_error_body`."""

    message: str
    error_type: str | None = None
    param: str | None = None


def parse_error_body(body: Any) -> ErrorBody:
    """Read DeepInfra's error body in any of its shapes, with credentials masked (see `redact`)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        body = redact(body)  # before any shortening, which could cut a key to a piece too short to recognise
    parsed = _parse_error_body(body)
    return ErrorBody(
        message=redact(parsed.message),
        error_type=redact(parsed.error_type) if parsed.error_type is not None else None,
        param=redact(parsed.param) if parsed.param is not None else None,
    )


def _parse_error_body(body: Any) -> ErrorBody:
    """Read DeepInfra's error body in any of its shapes.

    - ``{"error": {"message", "type", "param"}}`` (OpenAI style, used for 405 on formats and tools)
    - ``{"detail": [{"loc", "msg", "type"}]}`` (FastAPI 422 validation errors)
    - ``{"detail": "..."}``
    Anything else (HTML, plain text, bytes) becomes its text, shortened.
    """
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):  # json raises RecursionError on deep nesting
            text = body.strip()
            if _looks_like_html(text):
                text = _html_summary(text)
            return ErrorBody(message=(text[:300] + "...") if len(text) > 300 else (text or "(empty body)"))
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or err.get("msg") or json.dumps(err))
            return ErrorBody(message=message, error_type=_opt_str(err.get("type")), param=_opt_str(err.get("param")))
        if isinstance(err, str):
            return ErrorBody(message=err)
        detail = body.get("detail")
        if isinstance(detail, str):
            return ErrorBody(message=detail)
        if isinstance(detail, list) and detail:
            messages = []
            param = None
            error_type = None
            for item in detail:
                if not isinstance(item, dict):
                    messages.append(str(item))
                    continue
                loc = item.get("loc") or []
                loc_names = [str(x) for x in loc if x != "body"]
                where = ".".join(loc_names)
                msg = str(item.get("msg", ""))
                messages.append(f"{where}: {msg}" if where else msg)
                if param is None and loc_names:
                    param = loc_names[0]
                if error_type is None and item.get("type"):
                    error_type = str(item["type"])
            return ErrorBody(message="; ".join(messages), error_type=error_type, param=param)
        if "message" in body:
            return ErrorBody(message=str(body["message"]))
    text = json.dumps(body) if not isinstance(body, str) else body
    return ErrorBody(message=text[:300])


def _looks_like_html(text: str) -> bool:
    head = text[:200].lower()
    return head.startswith("<") and ("<html" in head or "<!doctype" in head or "<head" in head or "<body" in head)


def _html_summary(text: str) -> str:
    """A proxy's or gateway's HTML error page reduced to its title and visible text."""
    text = text[:65536]  # the start says what the page is; bounded so the regexes stay cheap
    title_match = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    body = re.sub(r"<(script|style|head)\b.*?</\1\s*>", " ", text, flags=re.IGNORECASE | re.DOTALL)
    visible = " ".join(html.unescape(re.sub(r"<[^>]*>", " ", body)).split())
    title = " ".join(html.unescape(title_match.group(1)).split()) if title_match else ""
    if title and not visible.startswith(title):
        visible = f"{title}: {visible}" if visible else title
    return f"HTML page: {visible or '(no text)'}"


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


_FEATURE_HINTS: tuple[tuple[str, str], ...] = (
    ("response format is not supported", "response_format"),
    ("response_format", "response_format"),
    ("tool calling is not supported", "tools"),
    ("tools are not supported", "tools"),
    ("logprobs", "logprobs"),
    ("top_logprobs", "logprobs"),
)


def unsupported_feature(body: ErrorBody) -> str | None:
    """Name the request field a 4xx refused because the model lacks it, or None.

    Decided on the message and `param`, never on the status alone: DeepInfra uses 405 for a format or tools a
    model lacks, but the same status can mean other things.
    """
    text = body.message.lower()
    if "not supported" not in text and "unsupported" not in text and "does not support" not in text:
        return None
    if body.param in ("response_format", "tools", "tool_choice", "logprobs", "top_logprobs"):
        return {"tool_choice": "tools", "top_logprobs": "logprobs"}.get(body.param, body.param)
    for needle, feature in _FEATURE_HINTS:
        if needle in text:
            return feature
    return None


def error_from_status(status: int, body: Any, *, model: str | None = None) -> APIError:
    """Build the typed error for a non-2xx answer from DeepInfra."""
    parsed = parse_error_body(body)
    kwargs: dict[str, Any] = dict(status=status, param=parsed.param, error_type=parsed.error_type, model=model)
    text = parsed.message.lower()
    feature = unsupported_feature(parsed) if 400 <= status < 500 and status not in (401, 403, 429) else None
    if status in (401, 403):
        return AuthenticationError(parsed.message, **kwargs)
    if status == 429:
        return RateLimitError(parsed.message, **kwargs)
    if status >= 500:
        return ServerError(parsed.message, **kwargs)
    if feature is not None:
        return UnsupportedFeatureError(parsed.message, feature=feature, **kwargs)
    if status == 404 or "model not found" in text or "no such model" in text:
        return ModelNotFoundError(parsed.message, **kwargs)
    if "context" in text and ("length" in text or "window" in text or "too long" in text or "exceed" in text):
        return ContextLengthError(parsed.message, **kwargs)
    if status == 405:
        return UnsupportedFeatureError(parsed.message, feature=None, **kwargs)
    return InvalidParameterError(parsed.message, **kwargs)
