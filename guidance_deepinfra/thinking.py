"""How much a reasoning model may think: per model, and for one block of a program.

DeepInfra documents two request fields for it, ``reasoning_effort`` (``none``, ``low``, ``medium``, ``high``;
``none`` turns reasoning off) and a ``reasoning`` object ``{"effort": ..., "enabled": ...}`` (``enabled: false``
equals effort ``none``); its API reference also lists ``chat_template_kwargs``, which some chat templates read
(``{"enable_thinking": false}`` on Qwen3). A model object sets them once, ``DeepInfra(model,
reasoning_effort="low")``, and a block overrides them for the nodes run inside it::

    with guidance_deepinfra.reasoning(effort="none"):
        lm += json("answer", schema=Answer)

Values are checked here, before any request, so a typo costs no round trip. The override is held in a context
variable, like `limits`, so it follows ``lm.stream()`` into its worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .errors import InvalidProgramError

#: The efforts DeepInfra documents for ``reasoning_effort`` and ``reasoning.effort``.
EFFORTS = ("none", "low", "medium", "high")


class ReasoningSettingError(InvalidProgramError):
    """A reasoning setting DeepInfra does not document (an unknown effort, a contradiction, a bad type)."""


@dataclass(frozen=True)
class ReasoningSetting:
    """What a request says about reasoning; None fields are not sent (the model's own default applies).

    ``effort`` alone is sent as ``reasoning_effort``; with ``enabled`` it goes in the ``reasoning`` object.
    """

    effort: str | None = None
    enabled: bool | None = None
    chat_template_kwargs: Mapping[str, Any] | None = None

    def merged_over(self, base: ReasoningSetting) -> ReasoningSetting:
        """This setting where it says something, `base` elsewhere (template kwargs merged key by key).

        An inner effort overrides an outer ``enabled: false`` and the other way round, since either alone
        decides whether the model reasons."""
        effort, enabled = self.effort, self.enabled
        if effort is None and enabled is None:
            effort, enabled = base.effort, base.enabled
        elif enabled is None and base.enabled is not None:
            enabled = effort != "none"
        elif effort is None and base.effort is not None:
            effort = base.effort if enabled else "none"
        kwargs: dict[str, Any] | None = None
        if base.chat_template_kwargs or self.chat_template_kwargs:
            kwargs = {**(base.chat_template_kwargs or {}), **(self.chat_template_kwargs or {})}
        return ReasoningSetting(effort, enabled, kwargs)

    @property
    def disabled(self) -> bool:
        """True when the setting turns reasoning off."""
        return self.effort == "none" or self.enabled is False

    def fields(self) -> dict[str, Any]:
        """The request fields that carry this setting."""
        out: dict[str, Any] = {}
        if self.enabled is not None:
            obj: dict[str, Any] = {"enabled": self.enabled}
            if self.effort is not None and self.enabled:
                obj["effort"] = self.effort
            out["reasoning"] = obj
        elif self.effort is not None:
            out["reasoning_effort"] = self.effort
        if self.chat_template_kwargs:
            out["chat_template_kwargs"] = dict(self.chat_template_kwargs)
        return out


def reasoning_setting(
    effort: str | None = None,
    enabled: bool | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> ReasoningSetting:
    """A checked `ReasoningSetting`; `ReasoningSettingError` names what is wrong."""
    if effort is not None and effort not in EFFORTS:
        raise ReasoningSettingError(
            f"reasoning_effort {effort!r} is not one DeepInfra accepts; use one of {list(EFFORTS)}"
        )
    if enabled is not None and not isinstance(enabled, bool):
        raise ReasoningSettingError(f"reasoning enabled must be True or False, got {enabled!r}")
    if enabled is False and effort not in (None, "none"):
        raise ReasoningSettingError(
            f"reasoning enabled=False contradicts effort {effort!r}: leave out one of them (effort 'none' "
            "also turns reasoning off)"
        )
    if chat_template_kwargs is not None:
        if not isinstance(chat_template_kwargs, Mapping) or not all(isinstance(k, str) for k in chat_template_kwargs):
            raise ReasoningSettingError(
                f"chat_template_kwargs must be a dict with string keys, got {chat_template_kwargs!r}"
            )
        try:
            json.dumps(dict(chat_template_kwargs), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ReasoningSettingError(f"chat_template_kwargs must hold JSON values: {exc}") from None
    return ReasoningSetting(effort, enabled, dict(chat_template_kwargs) if chat_template_kwargs else None)


def setting_from_fields(fields: Mapping[str, Any]) -> ReasoningSetting:
    """The setting carried by request fields given as defaults (``request_defaults``): ``reasoning_effort``,
    a ``reasoning`` object and ``chat_template_kwargs``, checked."""
    obj = fields.get("reasoning")
    effort = fields.get("reasoning_effort")
    enabled = None
    if obj is not None:
        if not isinstance(obj, Mapping) or set(obj) - {"effort", "enabled"}:
            raise ReasoningSettingError(f"reasoning must be an object with 'effort' and/or 'enabled', got {obj!r}")
        inner = obj.get("effort")
        if effort is not None and inner is not None and inner != effort:
            raise ReasoningSettingError(f"reasoning_effort {effort!r} and reasoning.effort {inner!r} disagree")
        effort = inner if inner is not None else effort
        enabled = obj.get("enabled")
    if effort is not None and not isinstance(effort, str):
        raise ReasoningSettingError(f"reasoning_effort must be a string, one of {list(EFFORTS)}; got {effort!r}")
    return reasoning_setting(effort, enabled, fields.get("chat_template_kwargs"))


_NOT_SET = ReasoningSetting()
_CURRENT: ContextVar[ReasoningSetting] = ContextVar("guidance_deepinfra_reasoning", default=_NOT_SET)  # noqa: B039


@contextmanager
def reasoning(
    effort: str | None = None,
    *,
    enabled: bool | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> Iterator[ReasoningSetting]:
    """Override the reasoning setting for the nodes run inside the block (checked here, before any request)."""
    new = reasoning_setting(effort, enabled, chat_template_kwargs).merged_over(_CURRENT.get())
    token = _CURRENT.set(new)
    try:
        yield new
    finally:
        _CURRENT.reset(token)


def current_reasoning(model_setting: ReasoningSetting) -> ReasoningSetting:
    """The setting in force: the innermost `reasoning` block over the model's own."""
    block = _CURRENT.get()
    return block.merged_over(model_setting) if block is not _NOT_SET else model_setting
