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


def check_positive_int(name: str, value: object) -> None:
    """Refuse a bound that is not a positive whole number (None means "not set")."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be at least 1 (an integer), got {value!r}")


@contextmanager
def limits(*, max_attempts: int | None = None, token_budget: int | None = None) -> Iterator[Limits]:
    """Override constraint bounds for the nodes run inside the block."""
    check_positive_int("max_attempts", max_attempts)
    check_positive_int("token_budget", token_budget)
    new = Limits(max_attempts, token_budget).merged_over(_CURRENT.get())
    token = _CURRENT.set(new)
    try:
        yield new
    finally:
        _CURRENT.reset(token)


def current_limits(default_max_attempts: int, default_token_budget: int | None = None) -> Limits:
    """The bounds in force: the innermost `limits` block over the model's defaults."""
    return _CURRENT.get().merged_over(Limits(default_max_attempts, default_token_budget))
