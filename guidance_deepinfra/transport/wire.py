"""DeepInfra's error answers on the wire: reading their bodies and choosing the typed error for a status.

DeepInfra sends errors in three body shapes (and proxies in front of it send HTML or plain text); this module
reduces any of them to a message, a type and a parameter, masks credentials in them (`errors.redact`), and
maps the HTTP status and message to the error types of `errors`. Only the transports call it.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import (
    APIError,
    AuthenticationError,
    ContextLengthError,
    InvalidParameterError,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
    UnsupportedFeatureError,
    redact,
)
from ..profile import closest_models


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
        return ModelNotFoundError(parsed.message + _did_you_mean(model), **kwargs)
    if "context" in text and ("length" in text or "window" in text or "too long" in text or "exceed" in text):
        return ContextLengthError(parsed.message, **kwargs)
    if status == 405:
        return UnsupportedFeatureError(parsed.message, feature=None, **kwargs)
    return InvalidParameterError(parsed.message, **kwargs)


def _did_you_mean(model: str | None) -> str:
    """The closest known model names, as the end of a 404's message (nothing is sent to find them)."""
    found = closest_models(model) if model else []
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(name) for name in found) + "?"
