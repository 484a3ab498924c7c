"""`DeepInfra`: the guidance model object users create, and the interpreter it runs programs with.

The interpreter is composed here from mixins, as guidance composes ``OpenAIInterpreter`` beside its ``OpenAI``
model: this is the one place above both the base chat interpreter (`interpreter.base`) and the constraint
mixins that build on it (`enforcement`), so neither has to import the other's room upwards.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from guidance._schema import SamplingParams
from guidance.models import Model

from .bounds import check_positive_int
from .cache.store import DEFAULT_MAX_BYTES, CacheRun, open_cache, resolve_path
from .enforcement.grammar import GrammarMixin
from .enforcement.json_select import JsonSelectMixin
from .enforcement.tool_calls import ToolCallMixin
from .errors import ConfigurationError, MissingAPIKeyError
from .interpreter.base import DeepInfraBaseInterpreter, DeepInfraImageMixin, DeepInfraState
from .interpreter.reasoning import ReasoningEntry
from .profile import DEFAULT_MODEL as DEFAULT_MODEL  # the model used when none is named
from .profile import PROFILES, ModelProfile, ProfileRegistry
from .transport.client import DEFAULT_BASE_URL, RetryPolicy, Transport
from .usage import DeepInfraUsage

API_KEY_VARIABLES = ("DEEPINFRA_API_KEY", "DEEPINFRA_TOKEN")


class DeepInfraInterpreter(DeepInfraImageMixin, JsonSelectMixin, GrammarMixin, ToolCallMixin, DeepInfraBaseInterpreter):
    """guidance interpreter for DeepInfra chat models: the base chat interpreter plus one mixin per kind of node.

    Each constraint mixin overrides `constrained_rule` for the nodes it handles and passes the rest on with
    `super()`: JSON and literal selects go to DeepInfra's server-side structured output (`JsonSelectMixin`),
    everything else is generated and checked with llguidance on the client (`GrammarMixin`). Tool calls are
    checked against their tools' schemas before any tool runs (`ToolCallMixin`). The image mixin sends image
    nodes as image parts of the user message.
    """


def resolve_api_key(api_key: str | None) -> str:
    """The key from the argument, then DEEPINFRA_API_KEY, then DEEPINFRA_TOKEN."""
    if api_key:
        return api_key
    for name in API_KEY_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    raise MissingAPIKeyError(
        "no DeepInfra API key: pass api_key=... or set DEEPINFRA_API_KEY (or DEEPINFRA_TOKEN) in the environment"
    )


def resolve_base_url(base_url: str | None) -> str:
    """The base URL from the argument, then DEEPINFRA_BASE_URL, then DeepInfra's OpenAI-compatible endpoint."""
    return base_url or os.environ.get("DEEPINFRA_BASE_URL") or DEFAULT_BASE_URL


def _check_shared_transport(transport: Transport, **given: Any) -> None:
    """Refuse transport settings given beside a shared `transport`: they are that transport's own."""
    if not isinstance(transport, Transport):
        raise ConfigurationError(f"transport must be a DeepInfra model's Transport, got {type(transport).__name__}")
    defaults = {"timeout": 120.0, "stream_deadline": 900.0, "client_kwargs": {}, "cache": None}
    clashing = sorted(name for name, value in given.items() if value != defaults.get(name))
    if clashing:
        raise ConfigurationError(
            f"{', '.join(clashing)} cannot be given with a shared transport: they are the transport's own "
            f"({transport!r})"
        )


def cache_run(cache: str | os.PathLike[str] | bool | None, max_bytes: int = DEFAULT_MAX_BYTES) -> CacheRun | None:
    """The cache run a new transport answers from: `cache` as `DeepInfra` reads it, else the environment's."""
    path = resolve_path(cache)
    return None if path is None else CacheRun(open_cache(path, max_bytes=max_bytes))


class DeepInfra(Model):
    """A guidance model backed by a DeepInfra-hosted chat model.

    Parameters
    ----------
    model:
        DeepInfra model name, e.g. ``"meta-llama/Llama-3.3-70B-Instruct-Turbo"`` (the default).
    api_key:
        Defaults to ``DEEPINFRA_API_KEY``, then ``DEEPINFRA_TOKEN``. A missing key fails here, not at the
        first request.
    base_url:
        Defaults to ``DEEPINFRA_BASE_URL``, then ``https://api.deepinfra.com/v1/openai``.
    sampling_params:
        guidance sampling parameters; ``top_k``, ``min_p`` and ``repetition_penalty`` are passed to
        DeepInfra (guidance's own OpenAI backend refuses them).
    echo:
        Render the program as it runs (in notebooks), as every guidance model does.
    max_retries, timeout:
        Retries for 429/5xx/timeouts (exponential backoff with jitter, Retry-After honoured; default 4, or
        the `retry` policy's own) and the per-request timeout in seconds.
    request_defaults:
        Documented DeepInfra fields sent with every request, e.g. ``{"seed": 7, "service_tier": "priority"}``.
        Unknown fields are refused here.
    reasoning_effort, reasoning, chat_template_kwargs:
        How much a reasoning model thinks before it answers (see `guidance_deepinfra.thinking`):
        ``reasoning_effort`` one of ``none``, ``low``, ``medium``, ``high`` (``none`` turns reasoning off),
        ``reasoning`` DeepInfra's object ``{"effort": ..., "enabled": ...}``, ``chat_template_kwargs`` what the
        model's chat template reads (``{"enable_thinking": False}`` on Qwen3). Checked here; a
        ``with guidance_deepinfra.reasoning(...)`` block overrides them for part of a program. DeepInfra
        counts reasoning as output tokens, so it shares each request's ``max_tokens`` with the answer.
    logprobs, top_logprobs:
        Ask for token log probabilities (guidance's token view uses them); dropped automatically for a model
        that refuses them.
    profile:
        Declare this model object's capabilities (see `ModelProfile`) instead of learning them from
        refusals. It belongs to this object alone; `declare_profile` declares one for the whole process.
    max_attempts:
        Default bound on attempts for client-checked constraints (JSON validation, regex, grammars).
    cache:
        A file of answers to re-use (``True`` for ``responses.sqlite3`` in the user's cache directory; default:
        the ``GUIDANCE_DEEPINFRA_CACHE`` environment variable, a path or ``1``, else no cache; ``False`` for
        none whatever the environment says). A request sent before with the same body to the same base URL
        is answered from the file, the k-th identical request of this model object (and its copies) by the
        k-th answer stored for it, and goes through every check as a live answer does. ``lm.usage`` counts
        such calls as ``cached_calls`` and their cost as ``saved_cost``. See `cache.store`.
    cache_max_bytes:
        The cache file's bound on stored answers; the least recently used go first past it.
    transport:
        The `Transport` of another model to share (its connection pool, retry policy, request counters and
        observers) instead of building one; then the key, endpoint, timeouts, retries and client options are
        the transport's own and cannot be given here.
    client_kwargs:
        Passed to ``openai.OpenAI`` (e.g. ``http_client``, ``default_headers``).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        sampling_params: SamplingParams | None = None,
        echo: bool = True,
        max_retries: int | None = None,
        timeout: float | None = 120.0,
        stream_deadline: float | None = 900.0,
        request_defaults: dict[str, Any] | None = None,
        logprobs: bool = True,
        top_logprobs: int | None = 5,
        profile: ModelProfile | None = None,
        max_attempts: int = 3,
        retry: RetryPolicy | None = None,
        reasoning_effort: str | None = None,
        reasoning: dict[str, Any] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        profiles: ProfileRegistry | None = None,
        transport: Transport | None = None,
        cache: str | os.PathLike[str] | bool | None = None,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
        **client_kwargs: Any,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"model must be a non-empty DeepInfra model name, got {model!r}")
        check_positive_int("max_attempts", max_attempts)
        check_positive_int("top_logprobs", top_logprobs)
        if transport is None:
            key = resolve_api_key(api_key)
            policy = retry or RetryPolicy()
            if max_retries is not None and max_retries != policy.max_retries:
                policy = dataclasses.replace(policy, max_retries=max_retries)  # never rewrite the caller's policy
            transport = Transport(
                api_key=key,
                base_url=resolve_base_url(base_url),
                timeout=timeout,
                stream_deadline=stream_deadline,
                retry=policy,
                cache=cache_run(cache, cache_max_bytes),
                **client_kwargs,
            )
        else:
            _check_shared_transport(
                transport,
                api_key=api_key,
                base_url=base_url,
                max_retries=max_retries,
                retry=retry,
                timeout=timeout,
                stream_deadline=stream_deadline,
                client_kwargs=client_kwargs,
                cache=cache,
            )
        if profile is not None and not isinstance(profile, ModelProfile):
            raise ConfigurationError(f"profile must be a ModelProfile, got {type(profile).__name__}")
        given = {
            "reasoning_effort": reasoning_effort,
            "reasoning": reasoning,
            "chat_template_kwargs": chat_template_kwargs,
        }
        if any(v is not None for v in given.values()):
            request_defaults = {**(request_defaults or {}), **{k: v for k, v in given.items() if v is not None}}
        registry = profiles or PROFILES
        interpreter = DeepInfraInterpreter(
            model,
            transport,
            profiles=registry,
            request_defaults=request_defaults,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            max_attempts=max_attempts,
            own_profile=profile,
        )
        super().__init__(
            interpreter=interpreter,
            sampling_params=sampling_params if sampling_params is not None else SamplingParams(),  # type: ignore[typeddict-item]
            echo=echo,
        )

    def __repr__(self) -> str:
        return f"DeepInfra(model={self.model_name!r})"

    def fresh(self, *, echo: bool | None = None) -> DeepInfra:
        """A new model object with this one's settings and an empty program.

        It shares what belongs to the model rather than to one program: the transport (connections, retry
        policy, counters, observers), the profiles learned from refusals and the `total_usage` ledger. It
        keeps this object's settings (model name, request defaults, logprobs, attempts, own profile,
        sampling parameters) and `echo` unless given. Unlike ``lm + ...``, it has no link to this object's
        program or trace, so programs grown from it are freed as soon as they are dropped: what a batch
        running one program per input (``extract(..., fast=False)``) needs.
        """
        interpreter = self._interpreter
        model = DeepInfra(
            self.model_name,
            transport=self.transport,
            profiles=interpreter.profiles,  # type: ignore[attr-defined]
            profile=interpreter.own_profile,  # type: ignore[attr-defined]
            request_defaults=interpreter.request_defaults,  # type: ignore[attr-defined]
            logprobs=interpreter.logprobs,  # type: ignore[attr-defined]
            top_logprobs=interpreter.top_k,  # type: ignore[attr-defined]
            max_attempts=interpreter.max_attempts,  # type: ignore[attr-defined]
            sampling_params=self.sampling_params.copy(),
            echo=self.echo if echo is None else echo,
        )
        model._interpreter.ledger = interpreter.ledger  # type: ignore[attr-defined]  # one model's total_usage
        return model

    @property
    def model_name(self) -> str:
        """The DeepInfra model name requests are sent to."""
        return str(self._interpreter.model)  # type: ignore[attr-defined]

    @property
    def _state(self) -> DeepInfraState:
        return self._interpreter.state  # type: ignore[return-value]

    @property
    def usage(self) -> DeepInfraUsage:
        """Calls, tokens, DeepInfra's estimated cost and constraint work accumulated by this program."""
        return self._state.usage

    @property
    def total_usage(self) -> DeepInfraUsage:
        """Usage of every call made through this model object and everything derived from it, including
        attempts that ended in an error. `usage` covers only the calls behind this program state."""
        return self._interpreter.ledger  # type: ignore[attr-defined,no-any-return]

    @property
    def reasoning(self) -> list[ReasoningEntry]:
        """The reasoning of each call from a reasoning model, oldest first, kept out of the program text and
        captures. Each entry reads as its text and says its `source` (``field``, ``inline``, ``closing``), the
        `capture` and `attempt` it belongs to and whether that attempt was `accepted`."""
        return list(self._state.reasoning)

    @property
    def finish_reasons(self) -> list[str | None]:
        """DeepInfra's ``finish_reason`` for each call, oldest first."""
        return list(self._state.finish_reasons)

    @property
    def last_requests(self) -> list[dict[str, Any]]:
        """The last requests this model's transport sent (up to 20, oldest first, every copy of the model and
        extract's fast path included): each ``{"body": ..., "answer": ..., "finish_reason": ...}`` as sent and
        received, with ``"reasoning"``, ``"error"`` or ``"from_cache"`` where they apply. The key is in no
        body (it is sent in a header, which is not kept); a key echoed in an answer is shown masked."""
        return self.transport.exchanges.last()

    @property
    def transport(self) -> Transport:
        """The HTTP transport (retry policy and request counters) shared by this model's states."""
        return self._interpreter.transport  # type: ignore[attr-defined,no-any-return]
