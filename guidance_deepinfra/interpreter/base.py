"""The guidance interpreter for DeepInfra.

It subclasses guidance's `BaseOpenAIInterpreter` and keeps its message state and stream handler; what it
changes is how requests are formed (only DeepInfra's documented fields, `max_tokens`, sampling extras),
that a partial assistant message is sent last so DeepInfra continues it, and that every chunk passes a tap
that records usage and cost, keeps reasoning text out of the output, and applies client-side stops.
Constraint nodes (json, select, regex, grammars) are handled by the mixins composed with it in
`model.DeepInfraInterpreter`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, cast

from guidance._ast import (
    ImageUrl,
    JoinNode,
    JsonNode,
    LiteralNode,
    RegexNode,
    RuleNode,
    SelectNode,
)
from guidance._tools import Tool
from guidance.models._openai_base import (
    BaseOpenAIInterpreter,
    ContentMessage,
    ImageUrlContent,
    ImageUrlContentInner,
    Message,
    OpenAIImageMixin,
    OpenAIState,
    TextContent,
)
from guidance.trace import OutputAttr, TextOutput
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
from pydantic import TypeAdapter

from ..errors import InvalidProgramError, ReasoningBudgetWarning, UnclosedReasoningError, UnsupportedFeatureError
from ..profile import ModelProfile, ProfileRegistry, profile_field_for
from ..thinking import ReasoningSetting, current_reasoning, setting_from_fields
from ..transport import body as _request
from ..transport.client import Transport
from ..usage import DeepInfraUsage, SharedUsage
from .grammar_attrs import request_statements, split_lark, temperatures
from .logprobs import RequestTokens, span_log_prob
from .reasoning import AttemptLabels, ReasoningEntry, ReasoningSource, ReasoningSplit, budget_spent
from .stops import StopScanner, StopSpec, stop_spec_for

_MESSAGES = TypeAdapter(list[Message])


class DeepInfraState(OpenAIState):
    """guidance's OpenAI message state plus what DeepInfra reports: usage, cost, reasoning, finish reasons."""

    def __init__(self) -> None:
        super().__init__()
        self.usage = DeepInfraUsage()
        #: The reasoning of each call that had any, oldest first, labelled with its capture and attempt.
        self.reasoning: list[ReasoningEntry] = []
        self.finish_reasons: list[str | None] = []
        #: Per capture name: the options of a select (or the enum fields of a json) and their probabilities
        #: (`guidance_deepinfra.option_probs` reads them; see `interpreter.logprobs`).
        self.option_scores: dict[str, Any] = {}


@dataclass
class CallResult:
    """The outcome of one request whose text was collected rather than written into the program."""

    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning: str = ""
    #: The reply ended for its length (``finish_reason: length``) inside its reasoning or right after it.
    reasoning_spent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class DeepInfraBaseInterpreter(BaseOpenAIInterpreter):
    """Chat generation on DeepInfra; constraint mixins override `constrained_rule`."""

    #: Attributes shared, not copied, when guidance copies a model state on every ``lm += ...``.
    _SHARED = frozenset({"client", "transport", "profiles", "ledger"})

    def __init__(
        self,
        model: str,
        transport: Transport,
        *,
        profiles: ProfileRegistry,
        request_defaults: dict[str, Any] | None = None,
        logprobs: bool = True,
        top_logprobs: int | None = 5,
        max_attempts: int = 3,
        own_profile: ModelProfile | None = None,
    ) -> None:
        super().__init__(model=model, client=cast(Any, transport))
        self.state: DeepInfraState = DeepInfraState()
        self.transport = transport
        self.profiles = profiles
        #: The profile passed to this model object, if any: it belongs to this object alone.
        self.own_profile = own_profile
        self.request_defaults = _request.check_defaults(request_defaults)
        #: How much this model object's requests may reason (`thinking`); a `reasoning()` block overrides it.
        self.reasoning_setting: ReasoningSetting = setting_from_fields(self.request_defaults)
        self._plain_defaults = {k: v for k, v in self.request_defaults.items() if k not in _request.REASONING_FIELDS}
        self.logprobs = logprobs
        self.top_k = top_logprobs
        self.max_attempts = max_attempts
        #: Usage of every call made through this model object and all states derived from it, including
        #: calls of attempts that ended in an error (which leave no new program state to read usage from).
        self.ledger = SharedUsage()
        #: The token logprobs of the latest request's answer, recorded before client-side stops touch the text.
        self.request_tokens: RequestTokens | None = None
        #: How the latest reply was split into reasoning and answer (`interpreter.reasoning`), and why it ended.
        self.last_split: ReasoningSplit | None = None
        self.finish_reason: str | None = None
        #: The labels of the node being tried (its capture, the attempt in force), for `lm.reasoning`.
        self.labels: AttemptLabels | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.transport.base_url!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> DeepInfraBaseInterpreter:
        cls = self.__class__
        result = cls.__new__(cls)
        memo[id(self)] = result
        for key, value in self.__dict__.items():
            setattr(result, key, value if key in self._SHARED else copy.deepcopy(value, memo))
        return result

    @property
    def profile(self) -> ModelProfile:
        return self.profiles.get(self.model, self.transport.base_url, self.own_profile)

    # ----------------------------------------------------------------- messages and requests

    def request_messages(self, *, continuation: bool = True) -> list[dict[str, Any]]:
        """The conversation as DeepInfra receives it; a partial assistant message goes last to be continued."""
        messages = list(self.state.messages)
        active = self.state.get_active_message()
        if active is not None and (continuation or self.state.active_role != "assistant"):
            messages.append(active)
        return [_compact(m) for m in _MESSAGES.dump_python(messages, mode="json")]

    def _check_can_generate(self) -> None:
        if self.state.active_role != "assistant":
            raise InvalidProgramError(
                "DeepInfra models generate only as the assistant: put gen/select/json inside `with assistant():`"
            )
        if self.state.content and not self.profile.continuation:
            raise UnsupportedFeatureError(
                f"model {self.model!r} is declared without response continuation, so prefilled assistant text "
                "cannot be sent",
                feature="continuation",
                model=self.model,
            )
        if any(not isinstance(c, TextContent) for c in self.state.content):
            raise InvalidProgramError("an assistant message can only be prefilled with text")

    def build_body(
        self,
        *,
        messages: list[dict[str, Any]] | None = None,
        sampling_params: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> dict[str, Any]:
        """The request body for the current state (pure: no I/O)."""
        profile = self.profile
        return _request.chat_body(
            model=self.model,
            messages=messages if messages is not None else self.request_messages(),
            defaults={**self._plain_defaults, **current_reasoning(self.reasoning_setting).fields()},
            sampling=_request.sampling_fields(sampling_params),
            temperature=temperature,
            max_tokens=max_tokens,
            stop=stop,
            response_format=response_format,
            tools=tools,
            tool_choice=tool_choice,
            logprobs=self.logprobs and profile.logprobs,
            top_logprobs=self.top_k,
        )

    def open_stream(self, body: dict[str, Any], stack: ExitStack) -> Iterator[ChatCompletionChunk]:
        """Send `body`; if the model refuses logprobs, learn that and resend without them."""
        while True:
            try:
                chunks = stack.enter_context(self.transport.stream_chat(body, model=self.model))
            except UnsupportedFeatureError as exc:
                resend = learn_refusal(self, body, exc)
                if resend is None:
                    raise
                body = resend
                continue
            if getattr(chunks, "from_cache", False):  # answered by the request cache: nothing sent or paid
                self.state.usage.cached_calls += 1
                self.ledger.count(cached_calls=1)
            else:
                self.state.usage.calls += 1
                self.ledger.count(calls=1)
            return chunks

    # ----------------------------------------------------------------- streaming

    def tap(
        self,
        chunks: Iterator[ChatCompletionChunk],
        scanner: StopScanner | None = None,
        on_finish: Callable[[str | None], None] | None = None,
        *,
        body: dict[str, Any] | None = None,
    ) -> Iterator[ChatCompletionChunk]:
        """Pass chunks on after recording usage, cost, reasoning and finish reason, separating the reasoning
        from the answer (`interpreter.reasoning`) and applying stops to the answer only.

        Chunks come out with their ``content`` cut to the answer; a reply that opened ``<think>`` and ended
        before ``</think>`` raises `UnclosedReasoningError` once it has ended (`body` names its max_tokens).
        """
        self.last_split = split = self.reply_split()
        finish_reason: str | None = None
        saw_usage = False
        stopped = False
        self.request_tokens = tokens = RequestTokens()
        try:
            for chunk in chunks:
                if chunk.usage is not None:
                    saw_usage = True
                    self.state.usage.add_chunk_usage(chunk.usage)
                    self.ledger.add_chunk_usage(chunk.usage)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                extra = delta.model_extra
                if extra:
                    piece = extra.get("reasoning_content") or extra.get("reasoning")
                    if isinstance(piece, str):
                        split.field(piece)
                if choice.finish_reason is not None:
                    finish_reason = choice.finish_reason
                if delta.tool_calls and not delta.content:
                    delta.content = None
                content = delta.content
                if not content:
                    yield chunk
                    continue
                tokens.add_chunk(content, getattr(choice, "logprobs", None))
                answer = split.feed(content)
                if scanner is not None and answer:
                    answer = scanner.feed(answer)
                if answer != content:
                    delta.content = answer
                    choice.logprobs = None
                yield chunk
                if scanner is not None and scanner.done:
                    finish_reason, stopped = "stop", True
                    break
            if not stopped:
                rest = split.finish()
                if scanner is not None:
                    rest = scanner.feed(rest) if rest else ""
                    if scanner.done:
                        finish_reason = "stop"
                    else:
                        rest += scanner.finish()
                if rest:
                    yield _text_chunk(rest, self.model)
            if split.unclosed:
                raise self.unclosed_error(split, finish_reason, body)
        finally:
            self.close_split(split, tokens)
            if not saw_usage:
                self.state.usage.calls_without_usage += 1
                self.ledger.count(calls_without_usage=1)
            self.state.finish_reasons.append(finish_reason)
            self.finish_reason = finish_reason
            if on_finish is not None:
                on_finish(finish_reason)

    # ----------------------------------------------------------------- reasoning

    def reply_split(self) -> ReasoningSplit:
        """The reasoning split of the next reply (`interpreter.reasoning`), for how this model reasons."""
        return ReasoningSplit(closing_only=self.profile.reasoning == "inline")

    def close_split(self, split: ReasoningSplit, tokens: RequestTokens) -> None:
        """After a streamed reply: its reasoning recorded, its tokens cut to the answer, its shape learned."""
        tokens.drop_leading(split.answer_at)
        reasoning = split.reasoning
        if reasoning:
            self.record_reasoning(reasoning, source=split.source or "field")
        self.learn_shape(split)

    def learn_shape(self, split: ReasoningSplit) -> None:
        """Remember how the model reasons from a reply that shows it (`ModelProfile.reasoning`)."""
        shape = split.shape
        if shape is not None and self.profile.reasoning == "unknown":
            self.profiles.learn_reasoning(self.model, shape, self.transport.base_url, self.own_profile)

    def record_reasoning(self, text: str, *, source: ReasoningSource) -> None:
        """Keep one reply's reasoning (`lm.reasoning`); `source` is where it came from (``field``, ``inline``,
        ``closing``). Outside a checked node (`attempt_labels`) the entry is a plain gen's, accepted."""
        labels = self.labels
        if labels is not None and not labels.ended and labels.entries is self.state.reasoning:
            self.state.reasoning.append(labels.entry(text, source))
        else:
            self.state.reasoning.append(ReasoningEntry(text, source=source, accepted=True))

    def attempt_labels(self, capture: str | None) -> AttemptLabels:
        """Labels for the reasoning of the node about to be tried; they stay in force until the next node's."""
        self.labels = AttemptLabels(self.state.reasoning, capture)
        return self.labels

    def split_whole(self, content: str, field_reasoning: str | None) -> tuple[str, ReasoningSplit]:
        """The answer of a reply that came whole (the extraction fast path) and its split; the model's way of
        reasoning is learned from it as from a streamed reply. The reasoning stays on the split (the fast path
        shares this interpreter between inputs, so it records nothing in its state)."""
        split = self.reply_split()
        if field_reasoning:
            split.field(field_reasoning)
        answer = split.feed(content) + split.finish()
        self.learn_shape(split)
        return answer, split

    def unclosed_error(
        self, split: ReasoningSplit, finish_reason: str | None, body: dict[str, Any] | None
    ) -> UnclosedReasoningError:
        """The error of a reply that opened ``<think>`` and ended before ``</think>``."""
        max_tokens = (body or {}).get("max_tokens")
        if finish_reason == "length":
            why = f"the reply opened <think> and did not close it: {budget_spent(max_tokens)}"
        else:
            why = (
                f"the reply opened <think> and ended before </think> (finish_reason: {finish_reason}): it holds "
                "reasoning and no answer"
            )
        return UnclosedReasoningError(
            f"{why}; nothing was written to the program",
            finish_reason=finish_reason,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            reasoning=split.reasoning,
            model=self.model,
        )

    def stream_into_state(
        self,
        body: dict[str, Any],
        *,
        tools: dict[str, Tool] | None = None,
        scanner: StopScanner | None = None,
    ) -> Iterator[OutputAttr]:
        """Run one request, writing its text into the program as it streams (guidance's stream handler)."""
        with ExitStack() as stack:
            chunks = self.open_stream(body, stack)
            yield from self._handle_stream(self.tap(chunks, scanner, body=body), tools)

    def collect(
        self,
        body: dict[str, Any],
        *,
        on_text: Callable[[str], None] | None = None,
    ) -> CallResult:
        """Run one request and return its answer without touching the program (for checked attempts)."""
        texts: list[str] = []
        finish: list[str | None] = []
        before = (self.state.usage.prompt_tokens, self.state.usage.completion_tokens)
        with ExitStack() as stack:
            chunks = self.open_stream(body, stack)
            for chunk in self.tap(chunks, on_finish=finish.append, body=body):
                if chunk.choices and chunk.choices[0].delta.content:
                    texts.append(chunk.choices[0].delta.content)
                    if on_text is not None:
                        on_text(chunk.choices[0].delta.content)
        after = (self.state.usage.prompt_tokens, self.state.usage.completion_tokens)
        split = self.last_split
        finish_reason = finish[0] if finish else None
        return CallResult(
            text="".join(texts),
            finish_reason=finish_reason,
            prompt_tokens=after[0] - before[0],
            completion_tokens=after[1] - before[1],
            reasoning=split.reasoning if split is not None else "",
            reasoning_spent=split is not None and split.spent_reasoning(finish_reason),
        )

    # ----------------------------------------------------------------- guidance node handlers

    def _run(self, tools: dict[str, Tool] | None = None, **kwargs: Any) -> Iterator[OutputAttr]:
        """Unconstrained generation (guidance calls this for a plain ``gen()``)."""
        self._check_can_generate()
        body = self.build_body(sampling_params=kwargs.get("sampling_params"))
        yield from self.stream_into_state(body, tools=tools)

    def rule(self, node: RuleNode, **kwargs: Any) -> Iterator[OutputAttr]:
        if isinstance(node.value, RegexNode) and node.value.regex is None:
            yield from self.gen_text(node, **kwargs)
            return
        pieces = split_lark(node) if len(temperatures(node)) > 1 else None
        if pieces is not None:  # a Lark start sequence whose items ask for different temperatures
            for piece in pieces:
                yield from self.run(piece, **kwargs)
            return
        yield from self.constrained_rule(node, **kwargs)

    def gen_text(self, node: RuleNode, **kwargs: Any) -> Iterator[OutputAttr]:
        """``gen()`` without a regex: stops, suffix and stop capture handled as a local model would."""
        self._check_can_generate()
        spec = stop_spec_for(node.stop, node.suffix)
        scanner = StopScanner(spec) if spec is not None else None
        if scanner is not None and scanner.stops_before_anything:
            # As locally: the gen ends before its first token; no request, and no stop text is saved.
            if node.capture:
                yield self.state.apply_capture(node.capture, "", log_prob=None, is_append=node.list_append)
            return
        api_stops = spec.api_stops if spec is not None and not node.stop_capture else []
        if self.profile.reasons:
            api_stops = []  # a server's stop could fire inside the reasoning; the client's scan starts after it
        body = self.build_body(
            sampling_params=kwargs.get("sampling_params"),
            temperature=node.temperature,
            max_tokens=node.max_tokens,
            stop=api_stops or None,
        )
        labels = self.attempt_labels(node.capture)
        attempt, accepted = 0, None
        try:
            while True:
                generated = ""
                attempt += 1
                labels.begin_attempt(attempt)
                try:
                    for attr in self.stream_into_state(body, scanner=scanner):
                        if isinstance(attr, TextOutput) and not attr.is_input:
                            generated += attr.value
                        yield attr
                except UnclosedReasoningError as exc:
                    if exc.finish_reason != "stop" or "stop" not in body:
                        raise
                    body = _without_stops(body)  # the server's stop fired inside the reasoning: nothing was written
                    scanner = StopScanner(spec) if spec is not None else None
                    continue
                split = self.last_split
                if "stop" in body and split is not None and split.source == "field" and not split.answered:
                    if self.finish_reason == "stop":  # a stop in the field's reasoning may have ended the reply
                        body = _without_stops(body)
                        scanner = StopScanner(spec) if spec is not None else None
                        continue
                break
            accepted = attempt
        finally:
            labels.end_attempts(accepted)
        if self.last_split is not None and self.last_split.spent_reasoning(self.finish_reason):
            warn_reasoning_budget(self.model, body.get("max_tokens"), node.capture)
        stopped = scanner is not None and scanner.done
        if spec is not None and spec.emit_suffix and stopped:
            self.state.apply_text(spec.emit_suffix)
            yield TextOutput(value=spec.emit_suffix, is_input=True)
        if node.capture:
            log_prob = self.generated_log_prob((0, len(generated.encode())))
            yield self.state.apply_capture(node.capture, generated, log_prob=log_prob, is_append=node.list_append)
        if node.stop_capture:
            stop_text = scanner.stop_text if scanner else ""
            at = len(generated.encode())
            log_prob = self.generated_log_prob((at, at + len(stop_text.encode())))
            yield self.state.apply_capture(node.stop_capture, stop_text, log_prob=log_prob)

    def generated_log_prob(self, span: tuple[int, int], *, generated_at: int = 0) -> float | None:
        """The log probability of the latest request's tokens over a byte span of its text (None without
        logprobs). Grammar captures use it with the span each capture covers (see `interpreter.logprobs`)."""
        tokens = self.request_tokens
        usable = tokens.tokens if tokens is not None and tokens.usable else None
        return span_log_prob(usable, span, generated_at=generated_at)

    def constrained_rule(self, node: RuleNode, **kwargs: Any) -> Iterator[OutputAttr]:
        """Overridden by the constraint mixins; reached only for constructs none of them handles."""
        raise InvalidProgramError(f"this construct is not supported on DeepInfra: {_describe(node)}")

    def json(self, node: JsonNode, **kwargs: Any) -> Iterator[OutputAttr]:
        return self.rule(RuleNode(name="json", value=node), **kwargs)

    def select(self, node: SelectNode, **kwargs: Any) -> Iterator[OutputAttr]:
        return self.rule(RuleNode(name="select", value=node), **kwargs)

    def regex(self, node: RegexNode, **kwargs: Any) -> Iterator[OutputAttr]:
        return self.rule(RuleNode(name="regex", value=node), **kwargs)

    def grammar(self, node: Any, **kwargs: Any) -> Iterator[OutputAttr]:
        return self.rule(RuleNode(name="grammar", value=node), **kwargs)

    def join(self, node: JoinNode, **kwargs: Any) -> Iterator[OutputAttr]:
        """Run a join part by part when each part is self-contained (text, gen, select, json).

        Otherwise the join is one grammar and one request, unless a gen in it has a ``max_tokens`` that one
        request cannot carry (another part is unbounded) or a stop the next text repeats: such gens then run as
        requests of their own, and the parts between them as grammars (`request_statements`).
        """
        if all(_runs_alone(part) for part in node.nodes):
            for part in node.nodes:
                yield from self.run(part, **kwargs)
            return
        for statement in request_statements(node):
            if isinstance(statement, JoinNode):
                yield from self.rule(RuleNode(name="join", value=statement), **kwargs)
            else:
                yield from self.run(statement, **kwargs)


class DeepInfraImageMixin(OpenAIImageMixin):
    """Images go to DeepInfra's vision models as ``image_url`` content parts (data URLs for blobs)."""

    def image_url(self, node: ImageUrl, **kwargs: Any) -> Iterator[OutputAttr]:
        # Passed by reference: DeepInfra fetches the URL, so nothing is downloaded here.
        self.state.content.append(ImageUrlContent(type="image_url", image_url=ImageUrlContentInner(url=node.url)))
        yield TextOutput(value="", is_input=True)


def learn_refusal(
    interpreter: DeepInfraBaseInterpreter, body: dict[str, Any], exc: UnsupportedFeatureError
) -> dict[str, Any] | None:
    """Remember that the interpreter's model refused a field of `body`; the body to send again, or None.

    Only refused logprobs are dropped and resent at once: a refused response_format changes how the
    constraint is lowered, which the attempt loop decides (see `enforcement.attempts`). The extraction fast path
    calls this with the model's interpreter, so both paths learn alike.
    """
    fmt = (body.get("response_format") or {}).get("type")
    field_name = profile_field_for(exc.feature or "", fmt)
    if field_name is not None:
        interpreter.profiles.learn_unsupported(
            interpreter.model, field_name, exc.message, interpreter.transport.base_url, interpreter.own_profile
        )
    if field_name == "logprobs" and "logprobs" in body:
        return {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
    return None


def warn_reasoning_budget(model: str, max_tokens: Any, capture: str | None) -> None:
    """Say that a gen's text is empty because its model spent the budget reasoning."""
    where = f"gen({capture!r})" if capture else "a gen()"
    warnings.warn(f"{where} on {model!r}: {budget_spent(max_tokens)}", ReasoningBudgetWarning, stacklevel=4)


def _without_stops(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "stop"}


def _compact(message: dict[str, Any]) -> dict[str, Any]:
    """Send text-only content as a plain string, the form every DeepInfra chat template accepts."""
    content = message.get("content")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        message = dict(message)
        message["content"] = "".join(p["text"] for p in content)
    return message


def _text_chunk(text: str, model: str) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id="held-back-text",
        object="chat.completion.chunk",
        created=0,
        model=model,
        choices=[Choice(index=0, delta=ChoiceDelta(content=text), finish_reason=None)],
    )


def tool_spec(name: str, tool: Tool) -> dict[str, Any]:
    spec = tool.with_name(name).to_openai_style()
    if spec.get("type") != "function":
        raise InvalidProgramError(f"tool {name!r}: DeepInfra supports only function tools, not {spec.get('type')!r}")
    function = {k: v for k, v in spec["function"].items() if k in ("name", "description", "parameters")}
    return {"type": "function", "function": function}


def _runs_alone(node: Any) -> bool:
    if isinstance(node, LiteralNode):
        return True
    if isinstance(node, JoinNode):  # `"a" + select(...) + "b"` nests joins
        return all(_runs_alone(part) for part in node.nodes)
    if isinstance(node, RuleNode):
        if isinstance(node.value, RegexNode) and node.value.regex is not None:
            return False  # a regex gen is checked with its neighbours as one grammar: one request, not several
        return isinstance(node.value, (RegexNode, SelectNode, JsonNode)) or node.capture is not None
    return isinstance(node, (SelectNode, JsonNode))


def _describe(node: Any) -> str:
    text = repr(node)
    return text if len(text) <= 200 else text[:200] + "..."


__all__ = [
    "CallResult",
    "ContentMessage",
    "DeepInfraBaseInterpreter",
    "DeepInfraImageMixin",
    "DeepInfraState",
    "StopSpec",
]
