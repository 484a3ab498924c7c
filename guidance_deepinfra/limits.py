"""Bounds on the work spent satisfying client-checked constraints.

Defaults come from the model (``DeepInfra(max_attempts=...)``); a block can override them for the nodes run
inside it::

    with guidance_deepinfra.limits(max_attempts=5, token_budget=2000):
        lm += gen("phone", regex=r"\\d{3}-\\d{4}")

The override is held in a context variable, so it follows ``lm.stream()`` into its worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

from .errors import ConfigurationError


@dataclass(frozen=True)
class Limits:
    """``max_attempts``: requests per constraint, first try included. ``token_budget``: prompt plus
    completion tokens per constraint (None for no budget beyond the attempt bound)."""

    max_attempts: int | None = None
    token_budget: int | None = None

    def merged_over(self, base: Limits) -> Limits:
        """These limits where set, `base` elsewhere."""
        return replace(
            base,
            **{
                k: v
                for k, v in (("max_attempts", self.max_attempts), ("token_budget", self.token_budget))
                if v is not None
            },
        )


_CURRENT: ContextVar[Limits] = ContextVar("guidance_deepinfra_limits", default=Limits())  # noqa: B039 - frozen


@contextmanager
def limits(*, max_attempts: int | None = None, token_budget: int | None = None) -> Iterator[Limits]:
    """Override constraint bounds for the nodes run inside the block."""
    if max_attempts is not None and max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}")
    if token_budget is not None and token_budget < 1:
        raise ConfigurationError(f"token_budget must be positive, got {token_budget}")
    new = Limits(max_attempts, token_budget).merged_over(_CURRENT.get())
    token = _CURRENT.set(new)
    try:
        yield new
    finally:
        _CURRENT.reset(token)


def current_limits(default_max_attempts: int, default_token_budget: int | None = None) -> Limits:
    """The bounds in force: the innermost `limits` block over the model's defaults."""
    return _CURRENT.get().merged_over(Limits(default_max_attempts, default_token_budget))
