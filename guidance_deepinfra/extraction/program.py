"""The per-input guidance program of `extract` and the metering around it.

Each input runs ``system(instructions) -> user(text) -> assistant(json("result", schema))`` on a fresh
copy (`DeepInfra.fresh`) of one base model. An `InputObserver` registered on the model's transport sees
every answer's usage, so the cost of every request an input made (failed attempts included) is known, and
every 429 it meets is reported to the `AdaptiveLimiter` as it happens. Errors are sorted into the engine's
outcomes: transient ones are retried, per-input ones become error records, and the ones no input can fix
stop the batch.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pydantic
from guidance import assistant, system, user
from guidance._ast import LiteralNode

from ..bounds import limits
from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    ConstraintError,
    DeepInfraError,
    InvalidProgramError,
    ModelNotFoundError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    UnsupportedFeatureError,
)
from ..interpreter.base import DeepInfraBaseInterpreter
from ..interpreter.logprobs import OptionProb
from ..lowering.schema_json import json
from ..model import DeepInfra
from ..probabilities import option_probs
from ..transport.client import Transport, TransportObserver
from ..usage import DeepInfraUsage
from .engine import Done, Failed, Outcome, Retry
from .inputs import Item
from .schema import Schema

#: ``top_logprobs`` asked for confidence when the model's own setting is None (the model default).
CONFIDENCE_TOP_LOGPROBS = 5


class _NotAsked:
    """The batch did not ask for confidence: records get no ``confidence`` key."""


NOT_ASKED = _NotAsked()
Scored = dict[str, dict[str, float]] | None | _NotAsked

DEFAULT_INSTRUCTIONS = (
    "Extract the information the JSON schema asks for from the text the user sends. Use only what the text "
    "states. Where the text does not say and the schema allows null or leaving a field out, do that rather "
    "than guess."
)

#: Errors that no retry or other input can fix: the batch stops (finished records stay written).
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    AuthenticationError,
    ModelNotFoundError,
    UnsupportedFeatureError,
    ConfigurationError,
    InvalidProgramError,
)
#: Errors that may pass: the input is queued again (after the transport's own retries ran out).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RateLimitError,
    ServerError,
    RequestTimeoutError,
    ConnectionFailedError,
    ProtocolError,
)


class InputObserver(TransportObserver):
    """What the transport reports about the current input's requests, per worker thread.

    Registered on the model's transport for the batch: every answer's usage (failed attempts included) is
    added to the input being measured on the thread that sent it, and every 429 is passed at once, before
    the transport's backoff, to that input's congestion signal (one slot per 429, as on the fast path).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def measuring(self, on_rate_limited: Callable[[], None] | None = None) -> Iterator[DeepInfraUsage]:
        """The usage of this thread's requests while the block runs; its 429s go to `on_rate_limited`."""
        usage = DeepInfraUsage()
        self._local.usage, self._local.signal = usage, on_rate_limited
        try:
            yield usage
        finally:
            self._local.usage = self._local.signal = None

    def on_usage(self, usage: Any, *, model: str | None) -> None:
        measured = getattr(self._local, "usage", None)
        if measured is not None:
            measured.add_chunk_usage(usage)
            measured.calls += 1

    def on_rate_limit(self, retry_after: float | None, *, model: str | None) -> None:
        signal = getattr(self._local, "signal", None)
        if signal is not None:
            signal()


# --------------------------------------------------------------------------- the program


class Extractor:
    """Runs the extraction program for one input at a time as a guidance program; shared by worker threads.

    This is the general path (streamed, through guidance and the openai SDK); `extraction.fast` sends the same
    requests directly and is what `extract` uses unless asked otherwise.
    """

    def __init__(
        self,
        base: DeepInfra,
        schema: Schema,
        *,
        instructions: str | None,
        max_attempts: int,
        max_tokens: int | None = None,
        temperature: float | None = None,
        confidence: bool = False,
    ) -> None:
        self.schema = schema
        self.instructions = DEFAULT_INSTRUCTIONS if instructions is None else instructions
        self.max_attempts = max_attempts
        self.confidence = confidence
        self.max_tokens = max_tokens
        self.temperature = temperature
        # Built once: a schema json() refuses fails here, before any request, and the node (immutable) is
        # shared by every input instead of being rebuilt and re-checked per input.
        self._answer = answer_node(schema, max_tokens=max_tokens, temperature=temperature)
        # This batch's own settings (logprobs only for confidence) on the model's transport and profiles.
        self._base = base.fresh(echo=False)
        asking_logprobs(self._base._interpreter, confidence)  # type: ignore[arg-type]
        self.transport: Transport = base.transport
        if base.transport.cache is not None:
            # A run of the request cache of its own, as on the fast path: a batch run again on the same model
            # object replays from the first answer. The copy shares everything else (client, counters, observers).
            batch_transport = copy.copy(base.transport)
            batch_transport.cache = base.transport.cache.fresh()
            self._base._interpreter.transport = batch_transport  # type: ignore[attr-defined]
            self._base._interpreter.client = batch_transport  # type: ignore[attr-defined]
        self.observer = InputObserver()

    def observing(self) -> AbstractContextManager[TransportObserver]:
        """The block in which inputs are metered: `observer` is registered on the model's transport."""
        return self.transport.observing(self.observer)

    def program(self, text: str) -> Any:
        """The guidance program: instructions, the input, a JSON answer for the schema; returns the state."""
        # A model with no trace parent, so finished programs are freed instead of hanging off one base model.
        lm = self._base.fresh()
        if self.instructions:
            with system():
                lm += LiteralNode(self.instructions)
        with user():
            lm += LiteralNode(text)  # a node, not a string: input text is never parsed for guidance tags
        with assistant():
            lm += self._answer
        return lm

    def __call__(self, item: Item, on_rate_limited: Callable[[], None] | None = None) -> Outcome:
        with self.observer.measuring(on_rate_limited) as usage, limits(max_attempts=self.max_attempts):
            try:
                lm = self.program(item.text)
            except BaseException as exc:  # noqa: BLE001 - sorted (or re-raised) by outcome_of_error
                return outcome_of_error(exc, usage.estimated_cost)
        confidence = program_confidence(lm) if self.confidence else NOT_ASKED
        return outcome_of_answer(self.schema, str(lm["result"]), usage.estimated_cost, confidence)


def answer_node(schema: Schema, *, max_tokens: int | None, temperature: float | None) -> Any:
    """The ``json("result", schema)`` node of the extraction program (a schema json() refuses fails here)."""
    try:
        return json("result", schema=schema.json_schema, max_tokens=max_tokens, temperature=temperature)
    except InvalidProgramError:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidProgramError(f"json() refuses the schema: {exc}") from None


def outcome_of_error(exc: BaseException, cost: float) -> Outcome:
    """Sort an input's error: transient ones are retried, per-input ones become error records, and the ones
    no input can fix (and interrupts) are raised to stop the batch."""
    if isinstance(exc, FATAL_ERRORS) or not isinstance(exc, Exception):
        raise exc
    if isinstance(exc, RateLimitError):
        pause = getattr(exc, "retry_after", None) or 0.0  # set by the fast path's transport
        return Retry(type(exc).__name__, str(exc), cost, rate_limited=True, pause=pause)
    if isinstance(exc, TRANSIENT_ERRORS):
        uncounted = exc.uncounted() if isinstance(exc, (ConnectionFailedError, RequestTimeoutError)) else None
        return Retry(type(exc).__name__, str(exc), cost, error=exc, uncounted=uncounted)
    if isinstance(exc, ConstraintError):
        return Failed(type(exc).__name__, _short(str(exc)), cost)
    if isinstance(exc, DeepInfraError):
        return Failed(type(exc).__name__, str(exc), cost)
    return Failed(type(exc).__name__, _short(str(exc)), cost)  # one input's failure must not stop the batch


def outcome_of_answer(schema: Schema, text: str, cost: float, confidence: Scored = NOT_ASKED) -> Outcome:
    """The accepted JSON text as the user's value: pydantic types are built (and checked) here; a JSON schema
    was checked by json() with the same validator. `confidence` goes with it when the batch asked for it."""
    try:
        value = schema.parse(text, checked=True)  # json() accepted it against this schema's own validator
    except (ValueError, pydantic.ValidationError) as exc:
        return Failed("ValidationError", _short(f"{exc}; answer: {text}"), cost)
    if confidence is NOT_ASKED:
        return Done(value, cost, stored=schema.dump(value))
    return Done(value, cost, stored=schema.dump(value), confidence=confidence, scored=True)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- confidence


def asking_logprobs(interpreter: DeepInfraBaseInterpreter, confidence: bool) -> None:
    """Set the build_body settings of an extraction's own interpreter copy: logprobs only for confidence."""
    interpreter.logprobs = confidence
    if confidence and not interpreter.top_k:
        interpreter.top_k = CONFIDENCE_TOP_LOGPROBS


def option_floats(fields: dict[str, dict[str, OptionProb]]) -> dict[str, dict[str, float]]:
    """``{field: {option: OptionProb}}`` as the plain numbers a record holds."""
    return {name: {option: p.prob for option, p in options.items()} for name, options in fields.items()}


def program_confidence(lm: Any) -> dict[str, dict[str, float]] | None:
    """The enum-field confidence of the extraction program's ``result`` capture (None without logprobs).

    The same rule as the fast path: None when any request of the accepted answer came without usable
    logprobs (then the capture's log probability is None too), else every enum field the tokens cover.
    """
    if lm.log_prob("result") is None:
        return None
    fields: dict[str, dict[str, OptionProb]] = {}
    for name in lm._interpreter.state.option_scores.get("result") or {}:
        options = option_probs(lm, "result", field=name)
        if isinstance(options, dict):
            fields[name] = options
    return option_floats(fields)


def _short(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
