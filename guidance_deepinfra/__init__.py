"""Run guidance programs on DeepInfra's hosted models.

    >>> from guidance import gen, assistant, user
    >>> from guidance_deepinfra import DeepInfra
    >>> lm = DeepInfra("meta-llama/Llama-3.3-70B-Instruct-Turbo")
    >>> with user():
    ...     lm += "Name a colour."
    >>> with assistant():
    ...     lm += gen("colour", max_tokens=5)

Importing this package also makes the model reachable as ``guidance.models.DeepInfra``.
"""

from __future__ import annotations

import guidance.models as _guidance_models

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
from .extraction.api import aextract as aextract  # the same, awaited in asyncio programs
from .extraction.api import extract as extract  # one json() program per input, concurrent and resumable
from .interpreter.logprobs import OptionProb as OptionProb
from .lowering.schema_json import json as json  # guidance json() without llguidance build-time refusals
from .model import DEFAULT_MODEL, DeepInfra
from .probabilities import enum_confidence as enum_confidence  # enum fields of a JSON reply read elsewhere
from .probabilities import option_probs as option_probs  # every select option's probability, from one call
from .profile import PROFILES, ModelProfile, UnsupportedFeatureWarning, declare_profile
from .thinking import ReasoningSetting as ReasoningSetting  # what a request says about reasoning
from .thinking import reasoning as reasoning  # `with reasoning("none"): ...` for one block of a program
from .transport.client import DEFAULT_BASE_URL, RetryPolicy
from .transport.client import TransportObserver as TransportObserver  # watch usage, 429s and retry waits
from .usage import ConstraintStats, DeepInfraUsage

_guidance_models.DeepInfra = DeepInfra  # type: ignore[attr-defined]


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
    "declare_profile",
    "enum_confidence",
    "extract",
    "limits",
    "option_probs",
    "reasoning",
]
