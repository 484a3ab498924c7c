"""The one attempt loop of a client-checked constraint, without I/O: what to send, when to stop, what it cost.

Every constraint checked on the client runs through `AttemptLoop`: json() and literal select() in a program
(`enforcement.json_select`), the extraction fast path (`extraction.fast`), the grammar ladder
(`enforcement.ladder`) and the arguments of tool calls (`enforcement.tool_calls`). The loop owns what they
share: the bounds (``max_attempts`` answers, ``token_budget`` tokens, see `limits`), the constraint's usage
stats, a request whose form the server refused, and the
`ConstraintError` when no answer was accepted. What differs is an `AttemptStrategy`: how the next request is
lowered, how an answer is checked, and how a refused answer turns into the next request (feedback, repair, a
fresh answer). The drivers `run_attempts` (a guidance interpreter's generator) and `arun_attempts` (asyncio) do
the sending.

The json strategy (`JsonAttempts`) is here too, since both json paths use it: the lowering chosen from the
model's `ModelProfile` (json_schema, json_object with the schema in the prompt, prompt only), the retry with
the validation errors fed back, the fallback when a model refuses a format, and the continuation of an answer
cut by the server's length limit (`next_continuation`, within one attempt).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from ..errors import Attempt, ConstraintError, InvalidParameterError, UnsupportedFeatureError
from ..lowering import prompts
from ..lowering.schema import PreparedSchema
from ..profile import JsonMode, ModelProfile
from ..usage import DeepInfraUsage

#: Continuations of one answer cut by ``finish_reason: length`` (when the user set no max_tokens).
MAX_CONTINUATIONS = 2

#: What a server answers when it refuses the form of a request (a response_format, a pattern in it).
FORMAT_REFUSALS = (UnsupportedFeatureError, InvalidParameterError)

AnswerT = TypeVar("AnswerT")
AnswerT_contra = TypeVar("AnswerT_contra", contravariant=True)
AcceptedT = TypeVar("AcceptedT")
AcceptedT_co = TypeVar("AcceptedT_co", covariant=True)


@dataclass(frozen=True)
class Stop:
    """Why the loop stopped without an accepted answer, and the counts an error message names."""

    reason: Literal["attempts", "budget", "hopeless"]  # hopeless: the strategy said no retry can help
    answers: int
    max_attempts: int
    spent: int
    budget: int | None


class AttemptStrategy(Protocol[AnswerT_contra, AcceptedT_co]):
    """What differs between constraints; `AttemptLoop` calls it and owns everything else."""

    #: Every judged answer (and refused request) of this constraint, shown in the `ConstraintError`.
    attempts: list[Attempt]

    #: The error raised when no answer was accepted (`ConstraintError` or a subclass naming the constraint).
    error_type: type[ConstraintError]

    def kind(self) -> str:
        """The usage bucket the constraint's stats go to (read when they are recorded)."""
        ...

    def describe(self) -> str:
        """The constraint as named in a `ConstraintError`."""
        ...

    def next_request(self, remaining_tokens: int | None) -> dict[str, Any]:
        """The body of the next request (`remaining_tokens`: what is left of the token budget, if any)."""
        ...

    def judge(self, answer: AnswerT_contra) -> tuple[AcceptedT_co | None, bool]:
        """The accepted value (None when refused) and whether no further attempt can help; a refused answer
        also prepares the next request (feedback, repair, ...)."""
        ...

    def format_refused(self, exc: UnsupportedFeatureError | InvalidParameterError) -> bool:
        """True when the server refused the request's form and the same attempt can go in another form."""
        ...

    def failure(self, stop: Stop) -> str:
        """The message of the `ConstraintError` raised when the loop stops."""
        ...


class AttemptLoop(Generic[AnswerT, AcceptedT]):
    """Bounds, stats and the final error of one constraint's attempts; the strategy supplies the rest.

    `usage` is the usage the requests are counted in: tokens spent are its growth since the loop began, and
    the constraint's stats (round trips, tokens, satisfied or failed) are recorded there once, when the loop
    ends. A round trip is a request that was answered or refused; an attempt is an answer judged (a refused
    form is not one, nor is the continuation of a cut-off answer within one attempt).
    """

    def __init__(
        self,
        strategy: AttemptStrategy[AnswerT, AcceptedT],
        *,
        usage: DeepInfraUsage,
        max_attempts: int,
        token_budget: int | None,
        model: str | None,
    ) -> None:
        self.strategy = strategy
        self.usage = usage
        self.max_attempts = max_attempts
        self.token_budget = token_budget
        self.model = model
        self.answers = 0
        self.round_trips = 0
        self.stop: Stop | None = None
        self._hopeless = False
        self._recorded = False
        self._before = (usage.prompt_tokens, usage.completion_tokens)

    @property
    def spent(self) -> tuple[int, int]:
        """Prompt and completion tokens spent since the loop began."""
        return self.usage.prompt_tokens - self._before[0], self.usage.completion_tokens - self._before[1]

    def next_request(self) -> dict[str, Any] | None:
        """The next request's body, or None when a bound is reached (then `error` says which)."""
        spent = sum(self.spent)
        reason: Literal["attempts", "budget", "hopeless"] | None = None
        if self._hopeless:
            reason = "hopeless"
        elif self.answers >= self.max_attempts:
            reason = "attempts"
        elif self.token_budget is not None and spent >= self.token_budget:
            reason = "budget"
        if reason is not None:
            self.stop = Stop(reason, self.answers, self.max_attempts, spent, self.token_budget)
            return None
        remaining = None if self.token_budget is None else max(1, self.token_budget - spent)
        return self.strategy.next_request(remaining)

    def format_refused(self, exc: UnsupportedFeatureError | InvalidParameterError) -> bool:
        """The server refused the request's form: True to try again in another form; False ends the
        constraint as failed (the caller re-raises)."""
        self.round_trips += 1
        if self.strategy.format_refused(exc):
            return True
        self.record(satisfied=False)
        return False

    def answered(self, answer: AnswerT) -> AcceptedT | None:
        """Judge an answer: the accepted value, or None to go on (`next_request` says whether it may)."""
        self.round_trips += 1
        self.answers += 1
        accepted, hopeless = self.strategy.judge(answer)
        if accepted is not None:
            self.record(satisfied=True)
            return accepted
        self._hopeless = hopeless
        return None

    def error(self) -> ConstraintError:
        """The error of a loop that stopped without an accepted answer (recorded as failed), of the strategy's
        own `ConstraintError` type."""
        self.record(satisfied=False)
        stop = self.stop or Stop("attempts", self.answers, self.max_attempts, sum(self.spent), self.token_budget)
        return self.strategy.error_type(
            self.strategy.failure(stop),
            constraint=self.strategy.describe(),
            attempts=self.strategy.attempts,
            model=self.model,
        )

    def record(self, *, satisfied: bool | None) -> None:
        """Add this constraint's round trips and tokens to its stats, once; `satisfied` None (an error that
        is not the constraint's, e.g. a network failure) counts neither a success nor a failure."""
        if self._recorded:
            return
        self._recorded = True
        stats = self.usage.constraint(self.strategy.kind())
        prompt, completion = self.spent
        stats.round_trips += self.round_trips
        stats.prompt_tokens += prompt
        stats.completion_tokens += completion
        if satisfied is True:
            stats.satisfied += 1
        elif satisfied is False:
            stats.failed += 1


class AttemptLabels(Protocol):
    """Told which attempt is running and, at the end, which was accepted (the reasoning of each reply is
    labelled with it: `interpreter.reasoning.AttemptLabels`)."""

    def begin_attempt(self, attempt: int) -> None: ...

    def end_attempts(self, accepted: int | None) -> None: ...


def run_attempts(
    loop: AttemptLoop[AnswerT, AcceptedT],
    attempt: Callable[[dict[str, Any]], Generator[Any, None, AnswerT]],
    labels: AttemptLabels | None = None,
) -> Generator[Any, None, AcceptedT]:
    """Drive `loop` with `attempt` (one request and its answer; it may stream into a program) until an answer
    is accepted; raise the loop's `ConstraintError` when a bound is reached."""
    accepted_at: int | None = None
    try:
        while (body := loop.next_request()) is not None:
            if labels is not None:
                labels.begin_attempt(loop.answers + 1)
            try:
                answer = yield from attempt(body)
            except FORMAT_REFUSALS as exc:
                if loop.format_refused(exc):
                    continue
                raise
            accepted = loop.answered(answer)
            if accepted is not None:
                accepted_at = loop.answers
                return accepted
    except BaseException:
        loop.record(satisfied=None)
        raise
    finally:
        if labels is not None:
            labels.end_attempts(accepted_at)
    raise loop.error()


async def arun_attempts(
    loop: AttemptLoop[AnswerT, AcceptedT], attempt: Callable[[dict[str, Any]], Awaitable[AnswerT]]
) -> AcceptedT:
    """`run_attempts` for an asyncio sender."""
    try:
        while (body := loop.next_request()) is not None:
            try:
                answer = await attempt(body)
            except FORMAT_REFUSALS as exc:
                if loop.format_refused(exc):
                    continue
                raise
            accepted = loop.answered(answer)
            if accepted is not None:
                return accepted
    except BaseException:
        loop.record(satisfied=None)
        raise
    raise loop.error()


# --------------------------------------------------------------------------- json() and literal select()


@dataclass
class CheckedAnswer:
    """One json/select answer after checking: the raw text, the accepted value (or None), why it was refused."""

    raw: str
    value: str | None
    errors: list[str]
    fatal: bool = False  # no retry can help (the user's max_tokens cut the answer)
    written: bool = False  # the accepted value is already in the program (streamed)
    log_prob: float | None = None  # of the accepted value's tokens (see `interpreter.logprobs`)
    #: the select's option scores, or a json answer's enum fields (`interpreter.logprobs.OptionScores`)
    scores: Any = None


def json_kind(mode: JsonMode) -> str:
    """The usage bucket of a json() answered in `mode` (``json_schema``, ``json_object``, ``json_prompt``)."""
    return "json_prompt" if mode == "prompt" else mode


RequestFor = Callable[[JsonMode], tuple[dict[str, Any] | None, str | None]]
"""The response_format and system instruction of each mode."""


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
    Continuation requests carry the partial answer as the trailing assistant message (`prompts.continuing`)
    and no response_format (a server grammar would restart the document instead of continuing it).
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
    new = {k: v for k, v in body.items() if k != "response_format"}
    new["messages"] = prompts.continuing(body["messages"], piece)
    return new, None


class JsonAttempts:
    """The `AttemptStrategy` of json() and literal select(): answers arrive checked as `CheckedAnswer`."""

    error_type = ConstraintError

    def __init__(
        self,
        *,
        profile: Callable[[], ModelProfile],
        has_schema: bool,
        request: RequestFor,
        feedback: Callable[[CheckedAnswer], str],
        build_body: Callable[[list[dict[str, Any]], dict[str, Any] | None], dict[str, Any]],
        messages: list[dict[str, Any]],
        prefix: str,
        describe: str,
        kind_for: Callable[[JsonMode], str],
    ) -> None:
        self._profile = profile
        self.has_schema = has_schema
        self._request = request
        self._feedback = feedback
        self._build_body = build_body
        # The conversation before the program's partial assistant answer (`prefix`), which goes last.
        self._context = messages[:-1] if prefix else list(messages)
        self._prefix = prefix
        self._describe = describe
        self._kind_for = kind_for
        self.attempts: list[Attempt] = []
        self.last: CheckedAnswer | None = None
        self.mode: JsonMode = profile().best_json_mode(has_schema)

    def kind(self) -> str:
        return self._kind_for(self.mode)

    def describe(self) -> str:
        return self._describe

    def next_request(self, remaining_tokens: int | None) -> dict[str, Any]:
        """The request in the best mode the profile offers now; after a refused answer, with its feedback."""
        self.mode = self._profile().best_json_mode(self.has_schema)
        response_format, instruction = self._request(self.mode)
        if self.last is None:
            messages = prompts.conversation(self._context, trailing=self._prefix)
        else:
            messages = prompts.conversation(
                self._context,
                rejected=self._prefix + self.last.raw,
                feedback=self._feedback(self.last),
                trailing=self._prefix,
            )
        if self.mode == "json_object" and instruction and not self.has_schema and prompts.mentions_json(messages):
            instruction = None
        return self._build_body(prompts.with_instruction(messages, instruction), response_format)

    def judge(self, answer: CheckedAnswer) -> tuple[CheckedAnswer | None, bool]:
        if answer.value is not None:
            return answer, False
        self.attempts.append(Attempt(text=answer.raw, errors=tuple(answer.errors), strategy=self.mode))
        self.last = answer
        return None, answer.fatal

    def format_refused(self, exc: UnsupportedFeatureError | InvalidParameterError) -> bool:
        """True when the model refused the response_format and the profile (which has learned) offers another
        mode: the same attempt is made in that mode."""
        return (
            isinstance(exc, UnsupportedFeatureError)
            and exc.feature == "response_format"
            and self._profile().best_json_mode(self.has_schema) != self.mode
        )

    def failure(self, stop: Stop) -> str:
        early = stop.answers < stop.max_attempts
        spent = " (stopped: no retry can help or the token budget is spent)" if early else ""
        last_errors = "; ".join(self.attempts[-1].errors[:3]) if self.attempts else ""
        return f"{self._describe} was not satisfied in {stop.answers} attempt(s){spent}; last errors: {last_errors}"
