"""The attempt loop of a client-checked JSON answer, without I/O: what to send next and when to stop.

Two callers drive it: the guidance interpreter (`enforcement.json_select`, which streams each answer into the
program) and the extraction fast path (`extraction.fast`, which sends one non-streamed request per attempt).
Both get from here the same lowering (json_schema, json_object with the schema in the prompt, prompt
only, chosen from the model's `ModelProfile`), the same retry conversation with the validation errors fed
back, the same fallback when a model refuses a format, the same continuation of an answer cut by the
server's length limit, and the same `ConstraintError` when every attempt is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Attempt, ConstraintError, UnsupportedFeatureError
from ..lowering import prompts
from ..lowering.schema import PreparedSchema
from ..profile import JsonMode, ModelProfile

#: Continuations of one answer cut by ``finish_reason: length`` (when the user set no max_tokens).
MAX_CONTINUATIONS = 2

RequestFor = Callable[[JsonMode], tuple[dict[str, Any] | None, str | None]]
"""The response_format and system instruction of each mode."""


@dataclass
class Outcome:
    """What one attempt produced: the raw answer, the accepted value (or None), and why it was refused."""

    raw: str
    value: str | None
    errors: list[str]
    fatal: bool = False  # no retry can help (the user's max_tokens cut the answer)
    written: bool = False  # the accepted value is already in the program (streamed)
    log_prob: float | None = None  # of the accepted value's tokens (see `interpreter.logprobs`)
    #: the select's option scores, or a json answer's enum fields (`interpreter.logprobs.OptionScores`)
    scores: Any = None


def json_request(prepared: PreparedSchema, user_schema: Any) -> RequestFor:
    """How json() is lowered in each mode: the schema as response_format, or in the prompt."""

    def request(mode: JsonMode) -> tuple[dict[str, Any] | None, str | None]:
        if mode == "json_schema":
            payload = {"name": prepared.name, "schema": prepared.schema, "strict": True}
            return {"type": "json_schema", "json_schema": payload}, None
        if mode == "json_object":
            return {"type": "json_object"}, prompts.json_instruction(user_schema, in_prompt_only=False)
        return None, prompts.json_instruction(user_schema, in_prompt_only=True)

    return request


def next_continuation(
    body: dict[str, Any], piece: str, finish_reason: str | None, continuation: int, user_max_tokens: int | None
) -> tuple[dict[str, Any] | None, str | None]:
    """After the answer to `body` (its text `piece`) ended with `finish_reason`: the body continuing it, or why not.

    Returns ``(None, None)`` when the answer is complete, ``(body, None)`` to continue it, and
    ``(None, reason)`` when it was cut and no continuation may be made (the answer is refused for good).
    Continuation requests carry the partial answer as the trailing assistant message (the text of every
    earlier part, each once) and no response_format (a server grammar would restart the document instead
    of continuing it).
    """
    if finish_reason != "length":
        return None, None
    if user_max_tokens is not None:
        return None, f"the JSON document was cut off at max_tokens={user_max_tokens}; raise max_tokens"
    if continuation >= MAX_CONTINUATIONS:
        return None, (
            f"the JSON document was still cut off (finish_reason: length) after {continuation} "
            "continuations; set a larger max_tokens or ask for a shorter document"
        )
    messages = list(body["messages"])
    if messages and messages[-1].get("role") == "assistant":
        last = messages.pop()
        messages.append({"role": "assistant", "content": str(last.get("content") or "") + piece})
    else:
        messages.append({"role": "assistant", "content": piece})
    new = {k: v for k, v in body.items() if k != "response_format"}
    new["messages"] = messages
    return new, None


class AttemptPlan:
    """The bodies of successive attempts at one constraint, and the error when none was accepted.

    Use::

        while (body := plan.next_body()) is not None:
            try:
                outcome = send_and_check(body)
            except UnsupportedFeatureError as exc:
                if plan.fall_back(exc):
                    continue          # the profile has learned; the same attempt in the next mode
                raise
            if outcome.value is not None:
                break                 # accepted
            if plan.refused(outcome) or over_budget():
                break
        else / afterwards: raise plan.error(...)
    """

    def __init__(
        self,
        *,
        profile: Callable[[], ModelProfile],
        has_schema: bool,
        request: RequestFor,
        feedback: Callable[[Outcome], str],
        build_body: Callable[[list[dict[str, Any]], dict[str, Any] | None], dict[str, Any]],
        messages: list[dict[str, Any]],
        prefix: str,
        max_attempts: int,
    ) -> None:
        self._profile = profile
        self.has_schema = has_schema
        self._request = request
        self._feedback = feedback
        self._build_body = build_body
        self._base = messages
        self._prefix = prefix
        self.max_attempts = max_attempts
        self.attempts: list[Attempt] = []
        self.last: Outcome | None = None
        self.round_trips = 0
        self.mode: JsonMode = profile().best_json_mode(has_schema)

    def next_body(self) -> dict[str, Any] | None:
        """The request of the next attempt, or None when the attempts are spent."""
        if len(self.attempts) >= self.max_attempts:
            return None
        self.mode = self._profile().best_json_mode(self.has_schema)
        response_format, instruction = self._request(self.mode)
        messages = self._base
        if self.last is not None:
            messages = prompts.retry_messages(self._base, self._prefix, self.last.raw, self._feedback(self.last))
        if self.mode == "json_object" and instruction and not self.has_schema and prompts.mentions_json(messages):
            instruction = None
        self.round_trips += 1
        return self._build_body(prompts.with_instruction(messages, instruction), response_format)

    def fall_back(self, exc: UnsupportedFeatureError) -> bool:
        """True when the model refused the response_format and the profile now offers another mode."""
        return exc.feature == "response_format" and self._profile().best_json_mode(self.has_schema) != self.mode

    def refused(self, outcome: Outcome) -> bool:
        """Record a refused answer; True when no further attempt can help."""
        self.attempts.append(Attempt(text=outcome.raw, errors=tuple(outcome.errors), strategy=self.mode))
        self.last = outcome
        return outcome.fatal

    def error(self, describe: str, model: str | None) -> ConstraintError:
        """The error raised when no attempt was accepted."""
        early = len(self.attempts) < self.max_attempts
        spent = " (stopped: no retry can help or the token budget is spent)" if early else ""
        last_errors = "; ".join(self.attempts[-1].errors[:3]) if self.attempts else ""
        return ConstraintError(
            f"{describe} was not satisfied in {len(self.attempts)} attempt(s){spent}; last errors: {last_errors}",
            constraint=describe,
            attempts=self.attempts,
            model=model,
        )
