"""What a program has cost on DeepInfra: calls, tokens, dollars, and the work spent on constraints."""

from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ConstraintStats:
    """Round trips and tokens spent on one kind of constraint (``json_schema``, ``regex``, ``select``...)."""

    satisfied: int = 0
    failed: int = 0
    round_trips: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def round_trips_per_success(self) -> float:
        """Requests per satisfied constraint, failed ones included (NaN before any success)."""
        return self.round_trips / self.satisfied if self.satisfied else float("nan")

    @property
    def tokens_per_success(self) -> float:
        """Prompt plus completion tokens per satisfied constraint (NaN before any success)."""
        total = self.prompt_tokens + self.completion_tokens
        return total / self.satisfied if self.satisfied else float("nan")


@dataclass
class DeepInfraUsage:
    """Totals accumulated on a model state; read with ``lm.usage`` after running a program.

    ``estimated_cost`` is DeepInfra's own ``usage.estimated_cost`` (USD) summed over calls; it reflects the
    service tier that served each call. Calls cut short on the client (a regex stop) may report no usage;
    they are counted in ``calls_without_usage``.

    ``reasoning_tokens`` are the completion tokens a reasoning model spent thinking, as DeepInfra reports them
    (``completion_tokens_details.reasoning_tokens``); they are part of ``completion_tokens``, and billed as
    output. ``reasoning_cost`` is their share of ``estimated_cost``: DeepInfra reports one cost per call, so
    each call's cost is shared out over its tokens in proportion to their number (an estimate; where output
    tokens cost more than prompt tokens, the true share is larger).

    Calls answered from the request cache are not in ``calls``, the token counts or ``estimated_cost``
    (nothing was sent or paid): they are ``cached_calls``, and ``saved_cost`` is what DeepInfra reported for
    them when they were first made.
    """

    calls: int = 0
    cached_calls: int = 0
    saved_cost: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated_cost: float = 0.0
    reasoning_cost: float = 0.0
    calls_without_usage: int = 0
    constraints: dict[str, ConstraintStats] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add_chunk_usage(self, usage: Any) -> tuple[int, int]:
        """Add a stream chunk's ``usage`` object (or a non-streamed answer's usage dict); return its tokens."""
        if isinstance(usage, dict):
            usage = _UsageView(usage)
        extra = getattr(usage, "model_extra", None) or {}
        if extra.get("replayed_from_cache") is True:  # marked by the transport's replay (`transport.cached`)
            cost = extra.get("estimated_cost")
            if isinstance(cost, (int, float)):
                self.saved_cost += float(cost)
            return 0, 0
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) if details is not None else None
        if cached is None and isinstance(details, dict):
            cached = details.get("cached_tokens")
        self.cached_tokens += int(cached or 0)
        thought = _reasoning_tokens(getattr(usage, "completion_tokens_details", None), completion)
        self.reasoning_tokens += thought
        cost = extra.get("estimated_cost", getattr(usage, "estimated_cost", None))
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            self.estimated_cost += float(cost)
            if thought:
                self.reasoning_cost += float(cost) * thought / max(1, prompt + completion)
        return prompt, completion

    def constraint(self, kind: str) -> ConstraintStats:
        """The counters of one constraint kind, created on first use."""
        return self.constraints.setdefault(kind, ConstraintStats())

    def summary(self) -> str:
        """A short human-readable account of calls, tokens, cost and constraint work."""
        text = (
            f"{self.calls} call(s), {self.prompt_tokens} prompt + {self.completion_tokens} completion tokens"
            f" ({self.cached_tokens} cached), estimated cost ${self.estimated_cost:.6f}"
        )
        if self.reasoning_tokens:
            text += f"\n  reasoning: {self.reasoning_tokens} of the completion tokens (~${self.reasoning_cost:.6f})"
        if self.cached_calls:
            text += f"\n  request cache: {self.cached_calls} call(s) answered from it, saving ${self.saved_cost:.6f}"
        for kind, stats in sorted(self.constraints.items()):
            text += f"\n  {kind}: {stats.satisfied} satisfied, {stats.failed} failed, {stats.round_trips} round trip(s)"
        return text


def _reasoning_tokens(details: Any, completion: int) -> int:
    """``completion_tokens_details.reasoning_tokens`` (an object or a dict), bounded by the completion tokens."""
    if details is None:
        return 0
    value = details.get("reasoning_tokens") if isinstance(details, dict) else getattr(details, "reasoning_tokens", None)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, completion) if completion else value


class _UsageView:
    """A usage dict read like the SDK's usage object (extra fields such as ``estimated_cost`` included)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.prompt_tokens = fields.get("prompt_tokens")
        self.completion_tokens = fields.get("completion_tokens")
        self.prompt_tokens_details = fields.get("prompt_tokens_details")
        self.completion_tokens_details = fields.get("completion_tokens_details")
        self.model_extra = fields


class SharedUsage(DeepInfraUsage):
    """Totals that several threads add to at once: a model's ledger, which `extract`'s workers share.

    ``total += n`` reads, adds and writes; two threads interleaving those steps lose an update, so every
    update here holds a lock.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def add_chunk_usage(self, usage: Any) -> tuple[int, int]:
        with self._lock:
            return super().add_chunk_usage(usage)

    def count(self, *, calls: int = 0, calls_without_usage: int = 0, cached_calls: int = 0) -> None:
        """Add to the call counters."""
        with self._lock:
            self.calls += calls
            self.cached_calls += cached_calls
            self.calls_without_usage += calls_without_usage

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedUsage:
        with self._lock:
            values = {f.name: copy.deepcopy(getattr(self, f.name), memo) for f in dataclasses.fields(self)}
        return SharedUsage(**values)
