"""What a batch will cost before it runs (`dry_run`) and what it has cost while it runs (`CostMeter`).

The meter counts DeepInfra's own ``usage.estimated_cost`` of every answer the model's transport receives
(failed attempts and retries included), as each arrives; answers replayed from the request cache are counted
apart as saved. `extract(..., max_cost=...)` stops taking new inputs once the spent total reaches its bound.

The dry run sends nothing: it builds each input's first request as the batch would and estimates its tokens
from its size. A request's prompt is its messages and response format at about `CHARS_PER_TOKEN` characters
per token (English text with a Llama-style tokenizer; code and other languages take more tokens), its answer
at most ``max_tokens``; retries, continuations and feedback come on top, so the estimate is of the first
attempts. Requests the cache already answers are counted as free.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..transport.cached import REPLAY_MARK
from ..transport.client import TransportObserver
from .fast import FastExtractor
from .inputs import Item

#: Characters per token assumed by the dry run's estimate.
CHARS_PER_TOKEN = 4.0


class CostMeter(TransportObserver):
    """Sums the estimated cost of the answers a transport receives: spent (live) and saved (replayed)."""

    def __init__(self, bound: float | None = None, on_reached: Callable[[], None] | None = None) -> None:
        self.spent = 0.0
        self.saved = 0.0
        self.cached_calls = 0
        #: `on_reached` is called once, on the thread that received the answer, when `spent` reaches `bound`.
        self.bound = bound
        self.reached = False
        self._on_reached = on_reached
        self._lock = threading.Lock()

    def on_usage(self, usage: Any, *, model: str | None) -> None:
        fields = usage if isinstance(usage, dict) else (getattr(usage, "model_extra", None) or {})
        cost = fields.get("estimated_cost")
        replayed = fields.get(REPLAY_MARK) is True
        with self._lock:
            if replayed:
                self.cached_calls += 1
            if isinstance(cost, (int, float)):
                if replayed:
                    self.saved += float(cost)
                else:
                    self.spent += float(cost)
            reached = not self.reached and self.bound is not None and self.spent >= self.bound
            self.reached = self.reached or reached
        if reached and self._on_reached is not None:
            self._on_reached()


@dataclass(frozen=True)
class Estimate:
    """A dry run's count of requests and estimate of tokens and cost (see the module doc for how)."""

    inputs: int
    skipped: int
    requests: int
    cached: int
    prompt_tokens: int
    completion_tokens: int | None
    price: tuple[float, float] | None

    @property
    def cost(self) -> float | None:
        """USD for the requests not answered by the cache, or None without a price (or without max_tokens,
        when only the prompt side is known)."""
        if self.price is None or self.completion_tokens is None:
            return None
        return (self.prompt_tokens * self.price[0] + self.completion_tokens * self.price[1]) / 1e6

    def report(self) -> str:
        lines = [
            f"dry run: nothing sent. {self.inputs} input(s), {self.skipped} already in the output (skipped): "
            f"{self.requests} first request(s), {self.cached} of them answered by the request cache",
            f"  prompt tokens of the other {self.requests - self.cached}: about {self.prompt_tokens:,} "
            f"(their messages and response format at {CHARS_PER_TOKEN:g} characters per token)",
        ]
        if self.completion_tokens is None:
            lines.append("  answer tokens: not bounded (give --max-tokens to bound and estimate them)")
        else:
            lines.append(f"  answer tokens: at most {self.completion_tokens:,} (max_tokens per request)")
        cost = self.cost
        if cost is not None:
            lines.append(
                f"  estimated cost: at most ${cost:.4f} at ${self.price[0]:g} / ${self.price[1]:g} per million "  # type: ignore[index]
                "prompt / answer tokens"
            )
        elif self.price is not None:
            prompt_cost = self.prompt_tokens * self.price[0] / 1e6
            lines.append(f"  estimated cost: ${prompt_cost:.4f} for the prompts, plus the answers (not bounded)")
        else:
            lines.append("  estimated cost: give --price IN,OUT (USD per million prompt and answer tokens)")
        lines.append("  retries, continuations and feedback requests come on top of these first attempts")
        return "\n".join(lines)


def prompt_tokens_of(body: dict[str, Any]) -> int:
    """The estimated prompt tokens of a request body: its messages and response format by size."""
    sent = {"messages": body.get("messages"), "response_format": body.get("response_format")}
    return int(len(json.dumps(sent, ensure_ascii=False)) / CHARS_PER_TOKEN) + 1


def dry_run(
    extractor: FastExtractor,
    items: Iterable[Item],
    *,
    finished: set[str],
    price: tuple[float, float] | None,
) -> Estimate:
    """Count and estimate the first requests of `items` not in `finished`, sending nothing."""
    run = extractor.http.cache
    inputs = skipped = requests = cached = prompt = 0
    completion: int | None = 0
    for item in items:
        inputs += 1
        if item.id in finished:
            skipped += 1
            continue
        body = extractor.first_body(item.text)
        requests += 1
        if run is not None:
            key, occurrence = run.claim(extractor.http.base_url, {**body, "stream": False})
            if run.store.lookup(key, occurrence) is not None:
                cached += 1
                continue
        prompt += prompt_tokens_of(body)
        max_tokens = body.get("max_tokens")
        completion = completion + max_tokens if isinstance(max_tokens, int) and completion is not None else None
    return Estimate(inputs, skipped, requests, cached, prompt, completion, price)
