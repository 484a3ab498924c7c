"""The last requests a transport sent and what came back, for a user who wants to see the wire.

`DeepInfra.last_requests` reads them: each request body as sent (the key is never in a body; it travels in
the Authorization header only, which is not kept), the answer's text and reasoning as they arrived, why it
ended, and the error if it failed. Every text is passed through the key redaction when read, so a key a
server echoed back is shown masked. Only the last `KEEP` are held, on both transports of a model (the
streamed one and the extraction fast path's), so keeping them costs a bounded amount of memory and about a
microsecond per request.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import redact_secrets

#: How many exchanges a transport keeps.
KEEP = 20


@dataclass
class Exchange:
    """One request and its answer, filled in as the answer arrives."""

    body: dict[str, Any]
    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    from_cache: bool = False

    def watch(self, chunks: Iterator[Any]) -> Iterator[Any]:
        """`chunks` passed on unchanged, their text kept."""
        for chunk in chunks:
            for choice in getattr(chunk, "choices", None) or ():
                delta = choice.delta
                if delta is not None:
                    if delta.content:
                        self.answer.append(delta.content)
                    extra = getattr(delta, "model_extra", None) or {}
                    thought = extra.get("reasoning_content") or extra.get("reasoning")
                    if isinstance(thought, str):
                        self.reasoning.append(thought)
                if choice.finish_reason:
                    self.finish_reason = choice.finish_reason
            yield chunk

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"body": self.body, "answer": "".join(self.answer)}
        if self.reasoning:
            shown["reasoning"] = "".join(self.reasoning)
        shown["finish_reason"] = self.finish_reason
        if self.error is not None:
            shown["error"] = self.error
        if self.from_cache:
            shown["from_cache"] = True
        return redact_secrets(shown)  # type: ignore[no-any-return]


class Exchanges:
    """The last `keep` exchanges of a transport (shared with the fast path's transport beside it)."""

    def __init__(self, keep: int = KEEP) -> None:
        self._items: deque[Exchange] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def begin(self, body: dict[str, Any]) -> Exchange:
        exchange = Exchange(body)
        with self._lock:
            self._items.append(exchange)
        return exchange

    def last(self) -> list[dict[str, Any]]:
        """Oldest first, as plain dicts (copies: changing one changes nothing kept)."""
        with self._lock:
            items = list(self._items)
        return [exchange.as_dict() for exchange in items]
