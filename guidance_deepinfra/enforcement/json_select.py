"""Server-side constraints: json() and literal select() lowered to DeepInfra's response_format.

How each is enforced:

- ``json(schema=...)``: ``response_format={"type": "json_schema", ...}`` carrying the user's schema as is.
- ``json()`` without a schema: ``response_format={"type": "json_object"}``, plus a one-line system
  instruction when no message asks for JSON (DeepInfra expects one to).
- ``select([...])`` over literal strings: a json_schema whose value is an ``enum`` of the options; the JSON
  string DeepInfra returns is decoded, so the program text and capture are exactly the chosen option.

Whatever the server enforces, every answer is checked on the client (jsonschema against the complete user
schema, membership for select) before it is written as a capture. A refused answer is retried with the
reasons fed back, within `limits` (``max_attempts``, ``token_budget``), then `ConstraintError` is raised.
When a model refuses a response_format, the mode falls back json_schema -> json_object with the schema in
the prompt -> prompt only (`ModelProfile` remembers it), still validated the same way.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from guidance._ast import JsonNode, LiteralNode, RuleNode, SelectNode
from guidance.trace import Backtrack, OutputAttr, TextOutput

from ..bounds import current_limits
from ..errors import InvalidProgramError
from ..interpreter.base import DeepInfraBaseInterpreter
from ..interpreter.logprobs import (
    OptionProb,
    OptionScores,
    RequestTokens,
    score_json,
    score_select,
    top_level_value_spans,
)
from ..interpreter.reasoning import budget_spent
from ..lowering import prompts
from ..lowering.schema import PreparedSchema, parse_and_check, prepare
from ..profile import JsonMode
from .attempts import (
    MAX_CONTINUATIONS,
    AttemptLoop,
    CheckedAnswer,
    JsonAttempts,
    RequestFor,
    json_kind,
    json_request,
    next_continuation,
    run_attempts,
)


@dataclass
class _Spec:
    """One json/select node, unwrapped from guidance's RuleNode layers."""

    captures: list[tuple[str, bool]] = field(default_factory=list)  # (name, list_append)
    temperature: float | None = None
    max_tokens: int | None = None
    json_node: JsonNode | None = None
    options: tuple[str, ...] | None = None


class JsonSelectMixin(DeepInfraBaseInterpreter):
    """Handles JSON nodes and selects over literal strings."""

    def constrained_rule(self, node: RuleNode, **kwargs: Any) -> Iterator[OutputAttr]:
        spec = _unwrap(node)
        if spec is None:
            yield from super().constrained_rule(node, **kwargs)
            return
        if spec.options is not None:
            yield from self._select(spec, **kwargs)
        else:
            yield from self._json(spec, **kwargs)

    # ----------------------------------------------------------------- select

    def _select(self, spec: _Spec, **kwargs: Any) -> Iterator[OutputAttr]:
        options = spec.options or ()
        _check_options(options)
        if len(options) == 1:  # nothing to choose: no request, as guidance does locally
            self.state.usage.constraint("select").satisfied += 1
            forced = 0.0 if self.logprobs else None  # forced text has probability 1
            yield from self._accept(spec, CheckedAnswer(options[0], options[0], [], log_prob=forced))
            return
        self._check_can_generate()
        enum_schema = {"type": "string", "enum": list(options)}
        budget = max(len(json.dumps(o).encode()) for o in options) + 24
        max_tokens: int | None = min(spec.max_tokens, budget) if spec.max_tokens else budget
        if self.profile.reasons:
            max_tokens = spec.max_tokens  # the reasoning shares max_tokens: a bound sized for the option is too small

        def request(mode: JsonMode) -> tuple[dict[str, Any] | None, str | None]:
            if mode == "json_schema":
                payload = {"name": "select", "schema": enum_schema, "strict": True}
                return {"type": "json_schema", "json_schema": payload}, None
            if mode == "json_object":
                return {"type": "json_object"}, prompts.select_instruction(options, wrapped=True)
            return None, prompts.select_instruction(options, wrapped=False)

        def attempt(body: dict[str, Any], mode: JsonMode) -> Generator[OutputAttr, None, CheckedAnswer]:
            yield from ()  # not streamed: the program gets the decoded option, not the JSON string
            result = self.collect(body)
            if result.reasoning_spent and spec.max_tokens is None and "max_tokens" in body:
                # The bound sized for the option went into reasoning (the model was not known to reason): the
                # same attempt again without it, as for a model known to reason.
                body = {k: v for k, v in body.items() if k != "max_tokens"}
                result = self.collect(body)
            if result.reasoning_spent:
                return CheckedAnswer(result.text, None, [budget_spent(body.get("max_tokens"))], fatal=True)
            choice = _decode_choice(result.text, options)
            if choice is not None:
                log_prob, distribution, lead = score_select(
                    result.text, self.request_tokens, choice, options, enforced=mode == "json_schema"
                )
                scores = None
                if distribution is not None:
                    scores = OptionScores(choice, distribution, lead.endswith('"'), request=body, lead=lead)
                return CheckedAnswer(result.text, choice, [], log_prob=log_prob, scores=scores)
            if result.finish_reason == "length":
                reason = f"cut off after {max_tokens} tokens (finish_reason: length)"
            else:
                reason = f"{result.text.strip()[:200]!r} is not one of {list(options)}"
            return CheckedAnswer(result.text, None, [reason])

        yield from self._run_attempts(
            spec,
            kind_for=lambda mode: "select",
            has_schema=True,
            request=request,
            attempt=attempt,
            feedback=lambda out: prompts.select_feedback(out.raw, options),
            max_tokens=max_tokens,
            describe=f"select({list(options)!r})",
            **kwargs,
        )

    # ----------------------------------------------------------------- json

    def _json(self, spec: _Spec, **kwargs: Any) -> Iterator[OutputAttr]:
        assert spec.json_node is not None
        prepared = prepare(spec.json_node.schema)
        self._check_can_generate()
        user_schema = spec.json_node.schema

        def attempt(body: dict[str, Any], mode: JsonMode) -> Generator[OutputAttr, None, CheckedAnswer]:
            return (yield from self._stream_json_attempt(body, prepared, spec.max_tokens))

        yield from self._run_attempts(
            spec,
            kind_for=json_kind,
            has_schema=prepared.user_given,
            request=json_request(prepared, user_schema),
            attempt=attempt,
            feedback=lambda out: prompts.json_feedback(out.errors),
            max_tokens=spec.max_tokens,
            describe=f"json(schema={_short(user_schema)})",
            **kwargs,
        )

    def _stream_json_attempt(
        self, body: dict[str, Any], prepared: PreparedSchema, user_max_tokens: int | None
    ) -> Generator[OutputAttr, None, CheckedAnswer]:
        """One answer, streamed into the program as it arrives, continued if cut by the server's length.

        Continuation requests carry the partial answer as the trailing assistant message and no
        response_format (a server grammar would restart the document instead of continuing it).
        """
        writer = _Writer(self.state)
        raw = ""
        first_body = body
        requests: list[tuple[int, RequestTokens]] = []  # where each request's text begins in raw, its tokens
        for continuation in range(MAX_CONTINUATIONS + 1):
            finish: list[str | None] = []
            answered = len(raw)
            offset = len(raw.encode())
            with ExitStack() as stack:
                chunks = self.open_stream(body, stack)
                for chunk in self.tap(chunks, on_finish=finish.append, body=body):
                    piece = chunk.choices[0].delta.content if chunk.choices else None
                    if piece:
                        raw += piece
                        yield from writer.feed(piece)
            if self.request_tokens is not None:
                requests.append((offset, self.request_tokens))
            finish_reason = finish[0] if finish else None
            if self.last_split is not None and self.last_split.spent_reasoning(finish_reason):
                yield from writer.backtrack()  # nothing to continue: the budget went into reasoning
                return CheckedAnswer(raw, None, [budget_spent(body.get("max_tokens"))], fatal=True)
            following, cut = next_continuation(body, raw[answered:], finish_reason, continuation, user_max_tokens)
            if cut is not None:
                yield from writer.backtrack()
                return CheckedAnswer(raw, None, [cut], fatal=True)
            if following is None:
                break
            body = following
        document, errors = parse_and_check(raw, prepared)
        if errors:
            yield from writer.backtrack()
            return CheckedAnswer(raw, None, errors)
        enforced = _format_type(first_body) == "json_schema"
        log_prob, fields = score_json(raw, document, requests, prepared.schema, enforced=enforced)
        scores = _field_scores(document, fields, first_body)
        if writer.written != document:  # e.g. a code fence in prompt-only mode
            yield from writer.backtrack()
            return CheckedAnswer(raw, document, [], log_prob=log_prob, scores=scores)
        return CheckedAnswer(raw, document, [], written=True, log_prob=log_prob, scores=scores)

    # ----------------------------------------------------------------- the attempt loop

    def _run_attempts(
        self,
        spec: _Spec,
        *,
        kind_for: Callable[[JsonMode], str],
        has_schema: bool,
        request: RequestFor,
        attempt: Callable[[dict[str, Any], JsonMode], Generator[OutputAttr, None, CheckedAnswer]],
        feedback: Callable[[CheckedAnswer], str],
        max_tokens: int | None,
        describe: str,
        **kwargs: Any,
    ) -> Iterator[OutputAttr]:
        bounds = current_limits(self.max_attempts)

        def build(messages: list[dict[str, Any]], response_format: dict[str, Any] | None) -> dict[str, Any]:
            return self.build_body(
                messages=messages,
                sampling_params=kwargs.get("sampling_params"),
                temperature=spec.temperature,
                max_tokens=max_tokens,
                response_format=response_format,
            )

        strategy = JsonAttempts(
            profile=lambda: self.profile,
            has_schema=has_schema,
            request=request,
            feedback=feedback,
            build_body=build,
            messages=self.request_messages(),
            prefix="".join(getattr(c, "text", "") for c in self.state.content),
            describe=describe,
            kind_for=kind_for,
        )
        loop: AttemptLoop[CheckedAnswer, CheckedAnswer] = AttemptLoop(
            strategy,
            usage=self.state.usage,
            max_attempts=bounds.max_attempts or 1,
            token_budget=bounds.token_budget,
            model=self.model,
        )
        capture = spec.captures[0][0] if spec.captures else None
        labels = self.attempt_labels(capture)
        accepted = yield from run_attempts(loop, lambda body: attempt(body, strategy.mode), labels)
        yield from self._accept(spec, accepted)

    def _accept(self, spec: _Spec, outcome: CheckedAnswer) -> Iterator[OutputAttr]:
        """Write the accepted value (unless the attempt already streamed it) and set every capture."""
        value = outcome.value or ""
        if not outcome.written and value:
            self.state.apply_text(value)
            yield TextOutput(value=value, is_generated=True)
        for name, append in spec.captures:
            _keep_scores(self.state.option_scores, name, outcome.scores, append)
            yield self.state.apply_capture(name, value, log_prob=outcome.log_prob, is_append=append)


class _Writer:
    """Streams an answer into the program without its surrounding whitespace, and takes it back if refused."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.written = ""
        self.pending = ""
        self.outputs = 0

    def feed(self, piece: str) -> Iterator[OutputAttr]:
        text = self.pending + piece
        if not self.written:
            text = text.lstrip()
        body = text.rstrip()
        self.pending = text[len(body) :]
        if body:
            self.state.apply_text(body)
            self.written += body
            self.outputs += 1
            yield TextOutput(value=body, is_generated=True)

    def backtrack(self) -> Iterator[OutputAttr]:
        if not self.written:
            return
        last = self.state.content[-1]
        assert last.text.endswith(self.written)
        last.text = last.text[: len(last.text) - len(self.written)]
        if not last.text:
            self.state.content.pop()
        yield Backtrack(n_tokens=self.outputs, bytes=base64.b64encode(self.written.encode()))
        self.written = ""
        self.outputs = 0


def _format_type(body: dict[str, Any]) -> Any:
    return (body.get("response_format") or {}).get("type")


def _field_scores(
    document: str, fields: dict[str, dict[str, OptionProb]], body: dict[str, Any]
) -> dict[str, OptionScores]:
    """The option scores of a JSON answer's enum fields, with what exact scoring needs to redo them."""
    if not fields:
        return {}
    spans = top_level_value_spans(document)
    value = json.loads(document)
    return {
        name: OptionScores(value[name], options, True, request=body, lead=document[: spans[name][0] + 1])
        for name, options in fields.items()
    }


def _keep_scores(store: dict[str, Any], name: str, scores: Any, append: bool) -> None:
    """Remember a capture's option scores beside it (a list for list_append, like the capture)."""
    if append:
        kept = store.get(name)
        store[name] = [*(kept if isinstance(kept, list) else []), scores]
    elif scores is None:
        store.pop(name, None)
    else:
        store[name] = scores


def _unwrap(node: RuleNode) -> _Spec | None:
    """The json/literal-select inside `node`, or None for anything the grammar engine must handle."""
    spec = _Spec()
    current: Any = node
    while isinstance(current, RuleNode):
        if current.stop is not None or current.suffix is not None or current.stop_capture or current.lazy:
            return None
        if current.capture:
            spec.captures.append((current.capture, current.list_append))
        spec.temperature = current.temperature if current.temperature is not None else spec.temperature
        spec.max_tokens = current.max_tokens if current.max_tokens is not None else spec.max_tokens
        current = current.value
    if isinstance(current, JsonNode):
        spec.json_node = current
        return spec
    if isinstance(current, SelectNode) and all(isinstance(a, LiteralNode) for a in current.alternatives):
        spec.options = tuple(a.value for a in current.alternatives if isinstance(a, LiteralNode))
        return spec
    return None


def _check_options(options: tuple[str, ...]) -> None:
    if not options:
        raise InvalidProgramError("select() needs at least one option")
    seen: set[str] = set()
    duplicates = sorted({o for o in options if o in seen or seen.add(o)})  # type: ignore[func-returns-value]
    if duplicates:
        raise InvalidProgramError(f"select() options must be distinct; repeated: {duplicates}")


def _decode_choice(text: str, options: tuple[str, ...]) -> str | None:
    """The option an answer names: a JSON string, ``{"choice": ...}``, or the bare option text."""
    value = prompts.json_reply(text)
    if isinstance(value, dict) and set(value) == {"choice"}:
        value = value["choice"]
    if isinstance(value, str) and value in options:
        return value
    stripped = text.strip()
    return stripped if stripped in options else None


def _short(schema: Any) -> str:
    text = json.dumps(schema, separators=(",", ":")) if schema is not None else "None"
    return text if len(text) <= 80 else text[:77] + "..."
