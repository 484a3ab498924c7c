"""The words sent alongside constraints and the conversations that carry them.

Instructions are added to the request only (never to the program): appended to the first system message
when there is one, else sent as a new first system message, the one position every chat template accepts.
Every later request of an attempt loop (a retry with feedback, a repair, a continuation of a cut-off answer)
gets its conversation from `conversation`, and replies in a JSON form the request asked for are read by
`json_reply`.
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


def conversation(
    context: list[dict[str, Any]], *, rejected: str = "", feedback: str | None = None, trailing: str = ""
) -> list[dict[str, Any]]:
    """The one builder of every conversation an attempt sends after the first (a copy; `context` is not changed).

    `context` is the conversation before the assistant's answer. A retry adds the rejected answer as an assistant
    turn and `feedback` as a user turn; only the latest rejection is shown, so retry prompts do not grow with
    each attempt. `trailing` is assistant text the model is to continue (the program's partial answer, the text
    a grammar forces, the accepted start of a repaired or cut-off answer): it goes last, as an assistant message.
    An empty assistant turn is never sent.
    """
    messages = list(context)
    if feedback is not None:
        if rejected:
            messages.append({"role": "assistant", "content": rejected})
        messages.append({"role": "user", "content": feedback})
    if trailing:
        messages.append({"role": "assistant", "content": trailing})
    return messages


def continuing(messages: list[dict[str, Any]], piece: str) -> list[dict[str, Any]]:
    """The conversation asking for more of an answer cut off after `piece`: `messages` with `piece` joined to
    the trailing assistant text (the text of every earlier part, each once)."""
    if messages and messages[-1].get("role") == "assistant":
        return conversation(messages[:-1], trailing=str(messages[-1].get("content") or "") + piece)
    return conversation(messages, trailing=piece)


def json_reply(reply: str, *, cut_off: bool = False) -> Any:
    """The JSON value a reply holds (with `cut_off`, also a JSON string cut before its closing quote), or None.

    Used wherever an answer comes back in a JSON form the request asked for: a select's option as a JSON string
    or ``{"choice": ...}``, a server-side pattern's text as a JSON string.
    """
    stripped = reply.strip()
    for candidate in (stripped, stripped + '"') if cut_off else (stripped,):
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):  # json raises RecursionError on deep nesting
            continue
    return None
