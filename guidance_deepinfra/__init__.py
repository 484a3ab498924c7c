"""Run guidance programs on DeepInfra's hosted models.

    >>> from guidance import gen, assistant, user
    >>> from guidance_deepinfra import DeepInfra
    >>> lm = DeepInfra("meta-llama/Llama-3.3-70B-Instruct-Turbo")
    >>> with user():
    ...     lm += "Name a colour."
    >>> with assistant():
    ...     lm += gen("colour", max_tokens=5)

Importing this package also makes the model reachable as ``guidance.models.DeepInfra``.

The names whose modules load guidance, openai, jsonschema or the extraction engine are imported on first
use (`__getattr__` below): ``import guidance_deepinfra`` alone, and the command line's ``--help``, load none
of them, and a program pays only for the parts it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _registration
from ._version import __version__ as __version__
from .bounds import Limits, limits
from .errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    ConstraintError,
    ContextLengthError,
    DeepInfraError,
    InvalidParameterError,
    InvalidProgramError,
    MissingAPIKeyError,
    ModelNotFoundError,
    ProtocolError,
    RateLimitError,
    ReasoningBudgetWarning,
    RequestTimeoutError,
    ServerError,
    ToolArgumentsError,
    UnclosedReasoningError,
    UnsupportedFeatureError,
)
from .profile import DEFAULT_MODEL, PROFILES, ModelProfile, UnsupportedFeatureWarning, declare_profile
from .thinking import ReasoningSetting as ReasoningSetting  # what a request says about reasoning
from .thinking import reasoning as reasoning  # `with reasoning("none"): ...` for one block of a program
from .usage import ConstraintStats, DeepInfraUsage

if TYPE_CHECKING:
    from .extraction.api import aextract, estimate_extraction, extract
    from .interpreter.logprobs import OptionProb
    from .lowering.schema_json import json as json
    from .model import DeepInfra
    from .probabilities import enum_confidence, option_probs
    from .transport.client import DEFAULT_BASE_URL, RetryPolicy
    from .transport.client import TransportObserver as TransportObserver

#: Public names imported on first use, each with the module that holds it.
_LAZY = {
    "DeepInfra": "model",
    "extract": "extraction.api",  # one json() program per input, concurrent and resumable
    "aextract": "extraction.api",  # the same, awaited in asyncio programs
    "estimate_extraction": "extraction.api",  # requests, tokens and cost of a batch, before anything is sent
    "OptionProb": "interpreter.logprobs",
    "json": "lowering.schema_json",  # guidance json() without llguidance build-time refusals
    "option_probs": "probabilities",  # every select option's probability, from one call
    "enum_confidence": "probabilities",  # enum fields of a JSON reply read elsewhere
    "DEFAULT_BASE_URL": "transport.client",
    "RetryPolicy": "transport.client",
    "TransportObserver": "transport.client",  # watch usage, 429s and retry waits
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_registration.register_with_guidance()

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConstraintError",
    "ConstraintStats",
    "ContextLengthError",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DeepInfra",
    "DeepInfraError",
    "DeepInfraUsage",
    "InvalidParameterError",
    "Limits",
    "InvalidProgramError",
    "MissingAPIKeyError",
    "ModelNotFoundError",
    "ModelProfile",
    "OptionProb",
    "PROFILES",
    "ProtocolError",
    "RateLimitError",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerError",
    "ToolArgumentsError",
    "ReasoningBudgetWarning",
    "UnclosedReasoningError",
    "UnsupportedFeatureError",
    "UnsupportedFeatureWarning",
    "aextract",
    "estimate_extraction",
    "declare_profile",
    "enum_confidence",
    "extract",
    "limits",
    "option_probs",
    "reasoning",
]
