"""The words sent alongside server-side constraints: instructions, retry feedback, and where they go.

Instructions are added to the request only (never to the program): appended to the first system message
when there is one, else sent as a new first system message, the one position every chat template accepts.
"""

from __future__ import annotations

import copy
import json
from typing import Any

#: Shown to the model for at most this many validation errors, to keep retry prompts short.
MAX_FEEDBACK_ERRORS = 5


def with_instruction(messages: list[dict[str, Any]], instruction: str | None) -> list[dict[str, Any]]:
    """`messages` with `instruction` added to the system prompt (a copy; the input is not changed)."""
    if not instruction:
        return messages
    out = copy.deepcopy(messages)
    if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
        out[0]["content"] = out[0]["content"].rstrip() + "\n\n" + instruction
    else:
        out.insert(0, {"role": "system", "content": instruction})
    return out


def mentions_json(messages: list[dict[str, Any]]) -> bool:
    """DeepInfra, like OpenAI, expects a JSON-mode conversation to ask for JSON somewhere."""
    for message in messages:
        content = message.get("content")
        parts: list[Any]
        if isinstance(content, str):
            parts = [content]
        else:
            parts = [p.get("text") for p in content or [] if isinstance(p, dict)]
        if any("json" in text.lower() for text in parts if isinstance(text, str)):
            return True
    return False


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


def json_instruction(schema: dict[str, Any] | None, *, in_prompt_only: bool) -> str:
    """Ask for one JSON document; the schema is spelled out when the server does not receive it."""
    how = " Reply with the JSON only: no prose and no code fences." if in_prompt_only else ""
    if schema is None:
        return "Reply with a single JSON object." + how
    return "Reply with one JSON document that conforms to this JSON Schema:\n" + schema_text(schema) + how


def select_instruction(options: tuple[str, ...], *, wrapped: bool) -> str:
    listed = json.dumps(list(options), ensure_ascii=False)
    if wrapped:
        return f'Reply with a JSON object {{"choice": <option>}} where <option> is one of {listed}.'
    return f"Reply with exactly one of these options and nothing else: {listed}"


def json_feedback(errors: list[str]) -> str:
    shown = "\n".join(f"- {e}" for e in errors[:MAX_FEEDBACK_ERRORS])
    more = f"\n(and {len(errors) - MAX_FEEDBACK_ERRORS} more)" if len(errors) > MAX_FEEDBACK_ERRORS else ""
    return (
        "Your previous answer was rejected because it does not satisfy the required JSON schema:\n"
        f"{shown}{more}\nReply again with only a corrected JSON document."
    )


def select_feedback(answer: str, options: tuple[str, ...]) -> str:
    listed = json.dumps(list(options), ensure_ascii=False)
    return (
        f"Your previous answer {answer.strip()[:200]!r} is not one of the allowed options {listed}. "
        "Reply again with exactly one of them."
    )


def retry_messages(base: list[dict[str, Any]], prefix: str, rejected: str, feedback: str) -> list[dict[str, Any]]:
    """The conversation for a retry: the rejected answer, the reasons, then the assistant prefix again.

    Only the latest rejection is shown, so retry prompts do not grow with each attempt.
    """
    head = base[:-1] if prefix else list(base)
    tail = [{"role": "assistant", "content": prefix}] if prefix else []
    return [
        *head,
        {"role": "assistant", "content": prefix + rejected},
        {"role": "user", "content": feedback},
        *tail,
    ]
