"""The extraction fast path: the guidance path's requests, built by the same code and sent without streaming.

For one input, the guidance program ``system(instructions) -> user(text) -> assistant(json("result",
schema))`` sends a conversation of two messages and a response_format, then checks the answer. Building a
guidance program, its interpreter and the SDK's stream objects for that costs several milliseconds of CPU per
input, which caps one process far below DeepInfra's 200 requests in flight. Here the same node is built once
(`answer_node`), unwrapped once, and each input's attempts are driven by the one attempt loop (`AttemptLoop`,
with the json strategy of the guidance path) and the model interpreter's own `build_body` (so profiles, request
defaults, sampling parameters and logprobs settings apply as they do to the program), then sent by
`AsyncTransport`. Answers are checked by `parse_and_check`, refusals teach the profile through `learn_refusal`,
and errors are sorted by `outcome_of_error`: nothing of lowering, validation or retrying is done differently
from the guidance path, which a test checks by comparing the records and request bodies of both.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from ..bounds import current_limits
from ..enforcement.attempts import (
    MAX_CONTINUATIONS,
    AttemptLoop,
    CheckedAnswer,
    JsonAttempts,
    arun_attempts,
    json_kind,
    json_request,
    next_continuation,
)
from ..enforcement.json_select import _format_type, _unwrap
from ..enforcement.json_select import _short as short_schema
from ..errors import InvalidProgramError, UnsupportedFeatureError
from ..interpreter.base import DeepInfraBaseInterpreter, learn_refusal
from ..interpreter.logprobs import TokenScore, entries_after, joined_bytes
from ..interpreter.reasoning import budget_spent
from ..lowering import prompts
from ..lowering.schema import parse_and_check, prepare
from ..model import DeepInfra
from ..probabilities import enum_confidence
from ..transport.aio import AsyncTransport, Completion
from ..usage import DeepInfraUsage
from .engine import Outcome, Slot
from .inputs import Item
from .program import (
    DEFAULT_INSTRUCTIONS,
    NOT_ASKED,
    Scored,
    answer_node,
    asking_logprobs,
    option_floats,
    outcome_of_answer,
    outcome_of_error,
)
from .schema import Schema


class FastExtractor:
    """Extracts one input per call; shared by every input of a batch. Use as ``async with`` (the HTTP pool)."""

    def __init__(
        self,
        base: DeepInfra,
        schema: Schema,
        *,
        instructions: str | None,
        max_attempts: int,
        max_tokens: int | None = None,
        temperature: float | None = None,
        connections: int = 256,
        confidence: bool = False,
    ) -> None:
        self.schema = schema
        self.instructions = DEFAULT_INSTRUCTIONS if instructions is None else instructions
        self.max_attempts = max_attempts
        self.confidence = confidence
        # A shallow copy: the logprobs setting is this batch's own, while the profile registry (what a refusal
        # teaches) and the transport stay the model's, as on the guidance path's copy.
        self.interpreter: DeepInfraBaseInterpreter = copy.copy(base._interpreter)  # type: ignore[assignment]
        asking_logprobs(self.interpreter, confidence)
        self.model = self.interpreter.model
        spec = _unwrap(answer_node(schema, max_tokens=max_tokens, temperature=temperature))
        if spec is None or spec.json_node is None:  # pragma: no cover - answer_node always builds a json node
            raise InvalidProgramError("the extraction answer is not a json() node")
        self.spec = spec
        self.prepared = prepare(spec.json_node.schema)
        self.request = json_request(self.prepared, spec.json_node.schema)
        self.describe = f"json(schema={short_schema(spec.json_node.schema)})"
        self.sampling_params = dict(base.sampling_params)
        self.http = AsyncTransport.beside(base.transport, connections=connections)

    async def __aenter__(self) -> FastExtractor:
        await self.http.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.http.__aexit__(*exc)
        finally:
            if self.http.cache is not None:  # the batch's answers are in the file when extract() returns
                await asyncio.to_thread(self.http.cache.store.flush)

    async def __call__(self, item: Item, slot: Slot) -> Outcome:
        usage = DeepInfraUsage()
        try:
            text, confidence = await self._answer(item.text, usage, slot)
        except BaseException as exc:  # noqa: BLE001 - sorted (or re-raised) by outcome_of_error
            return outcome_of_error(exc, usage.estimated_cost)
        return outcome_of_answer(self.schema, text, usage.estimated_cost, confidence)

    def messages(self, text: str) -> list[dict[str, Any]]:
        """The conversation the guidance program sends: the instructions (if any) and the input."""
        messages = [{"role": "system", "content": self.instructions}] if self.instructions else []
        messages.append({"role": "user", "content": text})
        return messages

    def build_body(self, messages: list[dict[str, Any]], response_format: dict[str, Any] | None) -> dict[str, Any]:
        return self.interpreter.build_body(
            messages=messages,
            sampling_params=self.sampling_params,
            temperature=self.spec.temperature,
            max_tokens=self.spec.max_tokens,
            response_format=response_format,
        )

    def first_body(self, text: str) -> dict[str, Any]:
        """The body of an input's first request, as it would be sent (`extraction.budget`'s dry run)."""
        return self._strategy(text).next_request(None)

    def _strategy(self, text: str) -> JsonAttempts:
        return JsonAttempts(
            profile=lambda: self.interpreter.profile,
            has_schema=self.prepared.user_given,
            request=self.request,
            feedback=lambda out: prompts.json_feedback(out.errors),
            build_body=self.build_body,
            messages=self.messages(text),
            prefix="",
            describe=self.describe,
            kind_for=json_kind,
        )

    async def _answer(self, text: str, usage: DeepInfraUsage, slot: Slot) -> tuple[str, Scored]:
        """The accepted JSON text for one input and its confidence, or the `ConstraintError` of its refused
        attempts."""
        strategy = self._strategy(text)
        loop: AttemptLoop[CheckedAnswer, CheckedAnswer] = AttemptLoop(
            strategy,
            usage=usage,
            max_attempts=self.max_attempts,
            token_budget=current_limits(self.max_attempts).token_budget,
            model=self.model,
        )
        accepted = await arun_attempts(loop, lambda body: self._attempt(body, usage, slot))
        return accepted.value or "", accepted.scores if self.confidence else NOT_ASKED

    async def _attempt(self, body: dict[str, Any], usage: DeepInfraUsage, slot: Slot) -> CheckedAnswer:
        raw = ""
        enforced = _format_type(body) == "json_schema"
        entries: list[Any] | None = []  # the token logprobs of every request of this attempt, end to end
        for continuation in range(MAX_CONTINUATIONS + 1):
            reply = await self._send(body, usage, slot)
            answer, split = self.interpreter.split_whole(reply.text, reply.reasoning)
            if split.unclosed:
                raise self.interpreter.unclosed_error(split, reply.finish_reason, body)
            if split.spent_reasoning(reply.finish_reason):
                return CheckedAnswer(raw + answer, None, [budget_spent(body.get("max_tokens"))], fatal=True)
            raw += answer
            logprobs = entries_after(reply.logprobs, reply.text, split.answer_at)
            entries = None if entries is None or logprobs is None else entries + logprobs
            finish, user_max_tokens = reply.finish_reason, self.spec.max_tokens
            following, cut = next_continuation(body, answer, finish, continuation, user_max_tokens)
            if cut is not None:
                return CheckedAnswer(raw, None, [cut], fatal=True)
            if following is None:
                break
            body = following
        document, errors = parse_and_check(raw, self.prepared)
        if errors:
            return CheckedAnswer(raw, None, errors)
        scores = self._confidence(raw, document, entries, enforced) if self.confidence else None
        return CheckedAnswer(raw, document, errors, scores=scores)

    def _confidence(
        self, raw: str, document: str, entries: list[Any] | None, enforced: bool
    ) -> dict[str, dict[str, float]] | None:
        """The accepted document's enum-field confidence, by the guidance path's rule: None unless every
        request of the attempt came with logprobs whose tokens spell exactly the text that arrived."""
        tokens = [TokenScore.from_wire(entry) for entry in entries or ()]
        if entries is None or any(t is None for t in tokens):
            return None
        if joined_bytes([t for t in tokens if t is not None]) != raw.encode():
            return None
        index = raw.find(document)
        if index < 0:
            return None
        lead = len(raw[:index].encode())
        fields = enum_confidence(document, entries, self.prepared.schema, enforced=enforced, generated_at=-lead)
        return option_floats(fields)

    async def _send(self, body: dict[str, Any], usage: DeepInfraUsage, slot: Slot) -> Completion:
        while True:
            await slot.take()  # the slot was given back when this input's previous request was answered
            try:
                reply = await self.http.complete(
                    body,
                    model=self.model,
                    on_rate_limited=slot.congested,
                    wait=lambda seconds: slot.wait(seconds, self.http.sleep),
                )
            except UnsupportedFeatureError as exc:
                resend = learn_refusal(self.interpreter, body, exc)
                if resend is None:
                    raise
                body = resend
                continue
            # Answered: nothing of this input is in flight while its answer is checked, so the slot goes to the
            # next input now (an answer, unlike a 429, widens the window).
            slot.release(answered=True)
            if reply.from_cache:
                usage.cached_calls += 1
            else:
                usage.calls += 1
            if reply.usage is not None:
                usage.add_chunk_usage(reply.usage)
            else:
                usage.calls_without_usage += 1
            return reply
