"""Per-model capability profiles.

DeepInfra serves many models behind one API and they differ: some refuse ``json_object`` or
``json_schema`` with a 405, some have no tool calling, some may refuse logprobs. A `ModelProfile` says what
one model supports. It starts optimistic (everything DeepInfra documents), is narrowed when DeepInfra
refuses a feature for that model (the answer is remembered for the life of the process and a warning is
issued once), and can be declared up front by the user so no request is wasted on learning it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

#: How a model reasons (`ModelProfile.reasoning`): not known yet, not at all, in a delta field of its own
#: (``reasoning_content``), or inline in ``content`` as ``<think>...</think>``.
ReasoningShape = Literal["unknown", "none", "field", "inline"]

REASONING_SHAPES: tuple[ReasoningShape, ...] = get_args(ReasoningShape)

JsonMode = Literal["json_schema", "json_object", "prompt"]

#: The model used when none is named: a current DeepInfra chat model with JSON mode and tool calling. Here,
#: below everything, so the command line's help can name it without importing the model (and guidance).
DEFAULT_MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


@dataclass(frozen=True)
class ModelProfile:
    """What one DeepInfra model supports.

    - ``json_schema``: ``response_format={"type": "json_schema", ...}`` is accepted.
    - ``json_object``: ``response_format={"type": "json_object"}`` is accepted.
    - ``regex_format``: ``response_format={"type": "regex", ...}`` (listed in DeepInfra's OpenAPI spec only;
      unverified, so it is off unless the user turns it on).
    - ``tools``: ``tools``/``tool_choice`` are accepted.
    - ``logprobs``: ``logprobs``/``top_logprobs`` are accepted.
    - ``continuation``: a trailing assistant message is continued (DeepInfra documents this as
      "response continuation"); when False, prefilled assistant text is refused with a clear error.
    - ``reasoning``: how the model reasons, ``"unknown"`` until a reply shows it (learned from the first reply
      that carries reasoning), ``"none"``, ``"field"`` (``reasoning_content``) or ``"inline"`` (``<think>``
      in ``content``). For ``"inline"`` a reply's text before a ``</think>`` that has no opening tag is
      reasoning too; for a model known to reason, stop strings are not sent to the server (they could fire
      inside the reasoning) and the client's own stop scan, which starts after the reasoning, ends the text.
    """

    json_schema: bool = True
    json_object: bool = True
    regex_format: bool = False
    tools: bool = True
    logprobs: bool = True
    continuation: bool = True
    reasoning: ReasoningShape = "unknown"

    def __post_init__(self) -> None:
        if self.reasoning not in REASONING_SHAPES:
            from .errors import ConfigurationError

            raise ConfigurationError(
                f"ModelProfile(reasoning={self.reasoning!r}): expected one of {list(REASONING_SHAPES)}"
            )

    @property
    def reasons(self) -> bool:
        """Whether the model is known to reason (in a field or inline)."""
        return self.reasoning in ("field", "inline")

    def best_json_mode(self, has_schema: bool) -> JsonMode:
        """The strongest JSON enforcement this model offers for a schema (or a schema-less json())."""
        if has_schema and self.json_schema:
            return "json_schema"
        if self.json_object:
            return "json_object"
        if not has_schema and self.json_schema:
            return "json_schema"
        return "prompt"

    def without(self, feature: str) -> ModelProfile:
        """A copy with one feature (an on/off field, not `reasoning`) switched off."""
        return dataclasses.replace(self, **{feature: False})  # type: ignore[arg-type]

    def reasoning_as(self, shape: ReasoningShape) -> ModelProfile:
        """A copy that says the model reasons this way."""
        return dataclasses.replace(self, reasoning=shape)


class ProfileRegistry:
    """What is known of each model's capabilities, shared by every `DeepInfra` model object in the process.

    Two kinds of knowledge, kept apart because they have different owners:

    - declared, by model name, for the whole process (`declare_profile`): an explicit user statement;
    - learned from DeepInfra's refusals, by (base_url, model): one endpoint refusing a feature says nothing
      of another endpoint serving a model of the same name.

    A profile passed to one model object (``DeepInfra(name, profile=...)``) is that object's own and is not
    stored here; it is handed to `get` by the object. Declarations, the object's or the process's, always win
    over what was learned; what was learned lasts for the process's life.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._declared: dict[str, ModelProfile] = {}
        self._learned: dict[tuple[str, str], ModelProfile] = {}
        self._warned: set[tuple[str, str, str]] = set()

    def get(self, model: str, base_url: str = "", own: ModelProfile | None = None) -> ModelProfile:
        """The profile in force: the object's `own`, else declared, else learned for (base_url, model), else
        the documented defaults."""
        if own is not None:
            return own
        with self._lock:
            if model in self._declared:
                return self._declared[model]
            return self._learned.get((base_url, model), ModelProfile())

    def known_models(self) -> list[str]:
        """Every model name this registry holds a profile for, declared or learned (a 404's suggestions)."""
        with self._lock:
            return list(dict.fromkeys([*self._declared, *(model for _, model in self._learned)]))

    def declare(self, model: str, profile: ModelProfile) -> None:
        """Fix a model's capabilities for the whole process; nothing is learned for it afterwards."""
        with self._lock:
            self._declared[model] = profile

    def learn_unsupported(
        self, model: str, feature: str, message: str, base_url: str = "", own: ModelProfile | None = None
    ) -> ModelProfile:
        """Record that `model` at `base_url` refused `feature`; warn once per (base_url, model, feature).

        Nothing is stored for a model whose profile was declared (its object's `own` or process-wide): the
        declaration stands and the caller decides whether it can fall back for this one request.
        """
        key = (base_url, model)
        with self._lock:
            declared = own if own is not None else self._declared.get(model)
            current = declared or self._learned.get(key, ModelProfile())
            updated = current.without(feature)
            if declared is None:
                self._learned[key] = updated
            first = (base_url, model, feature) not in self._warned
            self._warned.add((base_url, model, feature))
        if first:
            warnings.warn(
                f"DeepInfra model {model!r} does not support {feature} ({message}); "
                f"falling back at this base URL for the rest of this process. Declare it with "
                f"guidance_deepinfra.declare_profile({model!r}, ModelProfile({feature}=False)) to skip the probe.",
                UnsupportedFeatureWarning,
                stacklevel=4,
            )
        return updated

    def learn_reasoning(
        self, model: str, shape: ReasoningShape, base_url: str = "", own: ModelProfile | None = None
    ) -> ModelProfile:
        """Record how `model` at `base_url` was seen to reason (from a reply); a declared profile stands, and
        what is known already is not overwritten by a later reply."""
        key = (base_url, model)
        with self._lock:
            declared = own if own is not None else self._declared.get(model)
            if declared is not None:
                return declared
            current = self._learned.get(key, ModelProfile())
            if current.reasoning == "unknown" and shape != "unknown":
                current = current.reasoning_as(shape)
                self._learned[key] = current
            return current

    def forget(self, model: str | None = None, base_url: str | None = None) -> None:
        """Drop learned (not declared) answers: all, or those of one model and/or one base URL."""

        def matches(found_url: str, found_model: str) -> bool:
            return (model is None or found_model == model) and (base_url is None or found_url == base_url)

        with self._lock:
            self._learned = {k: v for k, v in self._learned.items() if not matches(*k)}
            self._warned = {w for w in self._warned if not matches(w[0], w[1])}


class UnsupportedFeatureWarning(UserWarning):
    """Issued once when a model is found not to support a feature and the plugin falls back."""


#: The on/off capabilities (a refused request field switches one off); `reasoning` is not one of them.
_FEATURE_FIELDS = {f.name for f in dataclasses.fields(ModelProfile) if f.type in (bool, "bool")}


def profile_field_for(feature: str, request_format: str | None = None) -> str | None:
    """Map a refused request field (and the response_format type we sent) to the profile field to clear."""
    if feature == "response_format":
        if request_format in ("json_schema", "json_object"):
            return request_format
        if request_format == "regex":
            return "regex_format"
        return None
    return feature if feature in _FEATURE_FIELDS else None


PROFILES = ProfileRegistry()

#: Model names the package itself uses (its default model and the demo's reasoning model); with the models
#: the registry knows, the names a 404 for a mistyped model is compared with. DeepInfra's own model list is
#: not fetched for that: an error message sends nothing.
NAMED_MODELS = ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "deepseek-ai/DeepSeek-R1-0528")


def closest_models(model: str, registry: ProfileRegistry | None = None) -> list[str]:
    """Up to three known model names close to `model` (a typo, a wrong case, a missing organisation)."""
    import difflib

    known = [*(registry or PROFILES).known_models(), *NAMED_MODELS]
    by_lower = {name.lower(): name for name in reversed(known) if name != model}
    wanted = model.lower()
    tails = {name.rsplit("/", 1)[-1]: name for name in by_lower}  # "Llama-3.3..." given without "meta-llama/"
    found = difflib.get_close_matches(wanted, list(by_lower), n=3, cutoff=0.75)
    found += [tails[t] for t in difflib.get_close_matches(wanted, list(tails), n=3, cutoff=0.75)]
    return [by_lower[name] for name in dict.fromkeys(found)][:3]


def declare_profile(model: str, profile: ModelProfile) -> None:
    """Declare what `model` supports, for every DeepInfra model object in this process."""
    PROFILES.declare(model, profile)


# --------------------------------------------------------------------------- profile files written by the probe

#: The ``format`` of the file `guidance-deepinfra probe` writes.
PROBE_FORMAT = "guidance-deepinfra probe 1"


def load_profiles(path: str | os.PathLike[str]) -> dict[str, ModelProfile]:
    """Every model's profile in a file written by ``guidance-deepinfra probe``.

    Fields this version does not know are ignored and missing ones keep their defaults, so a file from a newer
    or older plugin still loads. A file that is not a probe file raises `ConfigurationError`.
    """
    from .errors import ConfigurationError

    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the profile file {file}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT or not isinstance(data.get("models"), dict):
        raise ConfigurationError(f"{file} is not a profile file written by `guidance-deepinfra probe`")
    profiles: dict[str, ModelProfile] = {}
    for model, entry in data["models"].items():
        fields = entry.get("profile") if isinstance(entry, dict) else None
        if not isinstance(fields, dict):
            raise ConfigurationError(f"{file}: model {model!r} has no profile")
        known = {k: v for k, v in fields.items() if k in _FEATURE_FIELDS}
        wrong = sorted(k for k, v in known.items() if not isinstance(v, bool))
        if wrong:
            raise ConfigurationError(f"{file}: model {model!r} has non-boolean profile fields {wrong}")
        reasoning = fields.get("reasoning", "unknown")
        if reasoning not in REASONING_SHAPES:
            raise ConfigurationError(
                f"{file}: model {model!r} has reasoning {reasoning!r}; expected one of {list(REASONING_SHAPES)}"
            )
        profiles[model] = ModelProfile(**known, reasoning=reasoning)
    return profiles


def load_profile(path: str | os.PathLike[str], model: str) -> ModelProfile:
    """One model's profile from a probe file, for ``DeepInfra(model, profile=load_profile(path, model))``."""
    from .errors import ConfigurationError

    profiles = load_profiles(path)
    if model not in profiles:
        raise ConfigurationError(f"{path} holds no profile for {model!r}; it has {sorted(profiles)}")
    return profiles[model]


def declare_profiles(path: str | os.PathLike[str]) -> list[str]:
    """`declare_profile` every model of a probe file; returns the models declared."""
    profiles = load_profiles(path)
    for model, profile in profiles.items():
        declare_profile(model, profile)
    return sorted(profiles)
