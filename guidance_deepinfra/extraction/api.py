"""Structured extraction over many inputs: one json() extraction per input, hundreds in flight.

    >>> from pydantic import BaseModel
    >>> from guidance_deepinfra import extract
    >>> class Person(BaseModel):
    ...     name: str
    ...     age: int
    >>> people = extract(["Ada, 36, mathematician", "Alan (41)"], Person, concurrency=8)

In an asyncio program (a web service, a notebook cell) use ``await aextract(...)`` instead: same arguments,
same results, and the event loop keeps running other work meanwhile.

Each input is the program ``system(instructions) -> user(text) -> assistant(json("result", schema))``, so
everything json() guarantees on DeepInfra applies: the schema goes to the server as ``response_format`` and
the answer is validated on the client, with retries. By default the program's requests are built by the
same code and sent directly, not streamed (`extraction.fast`), which costs a fraction of a millisecond of CPU
per input; ``fast=False`` runs each input as a guidance program instead, with the same records. Results come
back in input order: the validated value (a pydantic object for a pydantic schema, else a dict) or an
`ExtractionFailure` for that input; a bad input never stops the batch. With ``output=``, every finished
result is appended to a JSONL file as soon as it is done and a rerun skips the ids already there (see
`extraction.records`). Concurrency adapts to 429s (see `extraction.limiter`). ``confidence=True`` asks for logprobs
and gives each result's enum fields every option's probability (``results.confidence``).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigurationError, MissingAPIKeyError
from ..model import DEFAULT_MODEL, DeepInfra, resolve_api_key
from ..transport.client import RetryPolicy
from .budget import CostMeter, Estimate, dry_run
from .engine import Batch, Counts, Done, Failed, Outcome, Record, Retry, Slot, Task
from .fast import FastExtractor
from .inputs import Item, items_from, read_inputs
from .limiter import DEEPINFRA_MAX_CONCURRENCY, AdaptiveLimiter
from .limiter import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY  # requests in flight by default
from .program import DEFAULT_INSTRUCTIONS, Extractor
from .records import RecordLog, read_records
from .schema import Schema, load_schema


@dataclass(frozen=True)
class ExtractionFailure:
    """Why one input has no result. ``line`` is set for records read from a file that could not be used."""

    id: str
    error_type: str
    message: str
    source: str = ""
    line: int | None = None
    attempts: int = 0

    def __bool__(self) -> bool:  # so that ``[r for r in results if r]`` keeps the successes
        return False


class ExtractionResults(list[Any]):
    """The results in input order (value or `ExtractionFailure`), plus the batch's ids and totals."""

    def __init__(
        self,
        values: Iterable[Any],
        ids: list[str],
        counts: Counts,
        lowest_concurrency: int,
        confidence: list[dict[str, dict[str, float]] | None] | None = None,
        *,
        stopped_at_cost: bool = False,
        not_started: int = 0,
    ) -> None:
        super().__init__(values)
        #: The id of each input, in input order.
        self.ids = ids
        #: Per input, ``{field: {option: probability}}`` for each top-level enum field of its result, when
        #: the batch ran with ``confidence=True``; None for a failed input, an answer that came without
        #: logprobs (a model that refuses them), or a batch run without confidence.
        self.confidence: list[dict[str, dict[str, float]] | None] = (
            confidence if confidence is not None else [None] * len(ids)
        )
        #: Inputs finished in this run, and failed in this run.
        self.done = counts.done
        self.failed = counts.failed
        #: Inputs skipped because `output` already held their result.
        self.resumed = counts.resumed
        #: Times an input was queued again after a transient failure, and 429 answers met.
        self.requeued = counts.requeued
        self.rate_limited = counts.rate_limited
        #: DeepInfra's estimated cost (USD) of every request of this run, failed attempts included.
        self.estimated_cost = counts.estimated_cost
        #: The smallest window the limiter went down to after 429s (the `concurrency` asked for if none).
        self.lowest_concurrency = lowest_concurrency
        #: Requests answered by the request cache, and what DeepInfra reported they cost when first made.
        self.cached_calls = counts.cached_calls
        self.saved_cost = counts.saved_cost
        #: True when `max_cost` stopped the batch; then `not_started` inputs have a ``NotStarted`` failure.
        self.stopped_at_cost = stopped_at_cost
        self.not_started = not_started

    @property
    def failures(self) -> list[ExtractionFailure]:
        return [r for r in self if isinstance(r, ExtractionFailure)]

    def by_id(self) -> dict[str, Any]:
        return dict(zip(self.ids, self, strict=True))


# --------------------------------------------------------------------------- the batch


def check_concurrency(concurrency: int) -> int:
    if not isinstance(concurrency, int) or not 1 <= concurrency <= DEEPINFRA_MAX_CONCURRENCY:
        raise ConfigurationError(
            f"concurrency must be between 1 and {DEEPINFRA_MAX_CONCURRENCY} (DeepInfra's limit of concurrent "
            f"requests per model), got {concurrency!r}"
        )
    return concurrency


def make_model(
    model: str | DeepInfra,
    *,
    api_key: str | None,
    base_url: str | None,
    retry: RetryPolicy | None,
    model_options: dict[str, Any],
) -> DeepInfra:
    """The base model: the one given, or a new one with the batch's retry policy."""
    if isinstance(model, DeepInfra):
        if api_key or base_url or model_options:
            raise ConfigurationError("api_key, base_url and model options go to DeepInfra(...), not beside it")
        return model
    # The window of requests in flight is what backs off from a real limit; each request's own backoff can be
    # short, so that an input that met a random 429 does not trail the batch by seconds.
    policy = dataclasses.replace(retry) if retry is not None else RetryPolicy(max_retries=2, base_delay=0.25)
    model_options.setdefault("echo", False)
    return DeepInfra(model, api_key=api_key, base_url=base_url, retry=policy, **model_options)


async def arun_extraction(
    items: Iterable[Item],
    schema: Any,
    *,
    instructions: str | None = None,
    model: str | DeepInfra = DEFAULT_MODEL,
    api_key: str | None = None,
    base_url: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_attempts: int = 3,
    max_requeues: int = 8,
    retry: RetryPolicy | None = None,
    output: str | Path | None = None,
    errors: str | Path | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    fast: bool = True,
    confidence: bool = False,
    max_cost: float | None = None,
    collect: bool = True,
    on_progress: Callable[[Counts, AdaptiveLimiter, int], None] | None = None,
    on_start: Callable[[set[str]], None] | None = None,
    **model_options: Any,
) -> ExtractionResults:
    """`aextract` over prepared items; the CLI calls this with ``collect=False`` and a progress callback."""
    check_concurrency(concurrency)
    if not isinstance(confidence, bool):
        raise ConfigurationError(f"confidence must be True or False, got {confidence!r}")
    if confidence and model_options.get("logprobs") is False:
        raise ConfigurationError("confidence=True needs logprobs: drop logprobs=False")
    if max_attempts < 1 or max_requeues < 0:
        raise ConfigurationError("max_attempts must be at least 1 and max_requeues at least 0")
    if output is not None and errors is not None and Path(output).resolve() == Path(errors).resolve():
        raise ConfigurationError("the output and errors files must differ")
    check_max_cost(max_cost)
    parsed = Schema(schema)
    base = make_model(model, api_key=api_key, base_url=base_url, retry=retry, model_options=dict(model_options))
    limiter = AdaptiveLimiter(concurrency)
    task: Task
    rate_limited_before = base.transport.stats.rate_limited
    options = dict(
        instructions=instructions,
        max_attempts=max_attempts,
        max_tokens=max_tokens,
        temperature=temperature,
        confidence=confidence,
    )
    if fast and not getattr(base.transport, "bounds_every_phase", True):
        raise ConfigurationError(
            "the model was given its own http_client, which only the guidance path uses: pass fast=False to "
            "send every request through it, or drop http_client to use the fast path"
        )
    if fast:
        task = FastExtractor(base, parsed, connections=concurrency + 8, **options)  # type: ignore[arg-type]
    else:
        task = _InThreads(Extractor(base, parsed, **options), threads=concurrency)  # type: ignore[arg-type]

    def rate_limited() -> int:
        return base.transport.stats.rate_limited - rate_limited_before

    results_log, recovered = RecordLog.open(output) if output is not None else (None, None)
    finished = recovered.records if recovered is not None else {}
    counts = Counts()
    values: dict[int, Any] = {}
    scores: dict[int, Any] = {}
    ids: list[str] = []

    def keep(record: Record) -> None:
        index, item, outcome, runs = record
        if collect:
            if isinstance(outcome, Done):
                values[index] = outcome.value
                scores[index] = outcome.confidence
            else:
                assert isinstance(outcome, (Failed, Retry))
                values[index] = ExtractionFailure(
                    item.id, outcome.error_type, outcome.message, item.source, item.line, runs
                )

    def skip(index: int, item: Item) -> bool:
        stored = finished.get(item.id)
        if stored is None or "result" not in stored:
            return False
        if collect:
            scores[index] = stored.get("confidence") if confidence else None
            try:
                values[index] = parsed.load(stored["result"])
            except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
                # Never redone (that would write the id twice): reported, the stored record is left as is.
                values[index] = ExtractionFailure(
                    item.id, "StoredResultInvalid", f"the result stored in {output} no longer fits: {exc}"
                )
        return True

    pulled = [0]

    def numbered() -> Iterator[tuple[int, Item]]:
        for index, item in enumerate(items):
            if collect:
                ids.append(item.id)
            pulled[0] += 1
            yield index, item

    feed = numbered()
    batch: Batch | None = None
    loop = asyncio.get_running_loop()

    loop_thread = threading.get_ident()

    def bound_reached() -> None:  # on the thread that received the answer; the batch lives in the loop's
        if threading.get_ident() == loop_thread:
            if batch is not None:
                batch.stop()  # at once: before the answer's slot goes to the next input
        else:
            loop.call_soon_threadsafe(lambda: batch.stop() if batch is not None else None)

    meter = CostMeter(max_cost, bound_reached)
    cached_before = base.transport.stats.cache_hits

    def metered(c: Counts) -> Counts:
        with c.lock:
            c.cached_calls = base.transport.stats.cache_hits - cached_before
            c.saved_cost = meter.saved
        return c

    errors_log = None
    try:
        async with AsyncExitStack() as stack:
            stack.enter_context(base.transport.observing(meter))
            if isinstance(task, FastExtractor):
                await stack.enter_async_context(task)
            elif isinstance(task, _InThreads):
                stack.callback(task.close)
                stack.enter_context(task.extractor.observing())
            errors_log = RecordLog.open(errors, fresh=True)[0] if errors is not None else None
            if on_start is not None:
                on_start({key for key, record in finished.items() if "result" in record})
            batch = Batch(
                task,
                limiter=limiter,
                results=results_log,
                errors=errors_log,
                on_record=keep,
                max_requeues=max_requeues,
                backoff=lambda n: base.transport.retry.delay(n, None),
                counts=counts,
                on_progress=(lambda c: on_progress(metered(c), limiter, rate_limited())) if on_progress else None,
            )
            if max_cost is not None and max_cost <= 0:
                batch.stop()
            await batch.run(feed, skip)
    finally:
        for log in (results_log, errors_log):
            if log is not None:
                log.close()
    counts.rate_limited = rate_limited()
    metered(counts)
    not_started = 0
    stopped_at_cost = meter.reached or (max_cost is not None and max_cost <= 0)
    if stopped_at_cost:
        # Inputs taken but not started, and those never taken: none has a record; a rerun does them.
        why = f"not started: the batch reached max_cost=${max_cost:g}; rerun with the same output to resume"
        taken = pulled[0]
        for index, item in feed:
            if item.problem is None and not skip(index, item):
                not_started += 1
                if collect:
                    values[index] = ExtractionFailure(item.id, "NotStarted", why, item.source, item.line)
        with counts.lock:
            not_started += taken - counts.done - counts.failed - counts.resumed
        if collect:
            for index in range(len(ids)):
                values.setdefault(index, ExtractionFailure(ids[index], "NotStarted", why))
    return ExtractionResults(
        [values.get(i) for i in range(len(ids))],
        ids,
        counts,
        limiter.lowest,
        [None if isinstance(values.get(i), ExtractionFailure) else scores.get(i) for i in range(len(ids))],
        stopped_at_cost=stopped_at_cost,
        not_started=not_started,
    )


def check_max_cost(max_cost: float | None) -> None:
    if max_cost is None:
        return
    if isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or not max_cost >= 0:
        raise ConfigurationError(f"max_cost must be a number of US dollars, 0 or more, got {max_cost!r}")


def estimate_extraction(
    items: Iterable[Item],
    schema: Any,
    *,
    instructions: str | None = None,
    model: str | DeepInfra = DEFAULT_MODEL,
    api_key: str | None = None,
    base_url: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    output: str | Path | None = None,
    price: tuple[float, float] | None = None,
    **model_options: Any,
) -> Estimate:
    """What a batch would send, without sending anything: its first requests, how many the request cache
    answers, and their estimated tokens and cost (`extraction.budget` says how it is estimated); the ids in
    `output` are left out, as a run would skip them. `price` is USD per million prompt and answer tokens."""
    if not isinstance(model, DeepInfra) and api_key is None:
        try:
            resolve_api_key(None)
        except MissingAPIKeyError:
            api_key = "sk-dry-run-sends-nothing"  # nothing is sent, so no key is needed
    base = make_model(model, api_key=api_key, base_url=base_url, retry=None, model_options=dict(model_options))
    extractor = FastExtractor(
        base,
        Schema(schema),
        instructions=instructions,
        max_attempts=1,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    finished = set()
    if output is not None and Path(output).exists():
        finished = {str(r["id"]) for r in read_records(output) if "result" in r and "id" in r}
    return dry_run(extractor, items, finished=finished, price=price)


class _InThreads:
    """The guidance path as an asyncio task: each input's program runs on a worker thread."""

    def __init__(self, extractor: Extractor, *, threads: int) -> None:
        self.extractor = extractor
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="extract")

    async def __call__(self, item: Item, slot: Slot) -> Outcome:
        loop = asyncio.get_running_loop()

        def congested() -> None:  # called on the worker thread; the limiter lives in the loop's thread
            loop.call_soon_threadsafe(slot.congested)

        context = contextvars.copy_context()  # a caller's `limits(...)` block applies on the thread too
        return await loop.run_in_executor(self.pool, context.run, self.extractor, item, congested)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def run_extraction(items: Iterable[Item], schema: Any, **options: Any) -> ExtractionResults:
    """`arun_extraction`, waited for (see `run_blocking`)."""
    return run_blocking(arun_extraction(items, schema, **options))


T = TypeVar("T")


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end from synchronous code and return its result.

    Without an event loop in this thread (a script, a worker thread) it gets a loop of its own. When a loop
    is already running in this thread (a notebook cell, a callback of an asyncio program), that loop cannot
    be re-entered, so the coroutine runs on a new thread with its own loop while this one waits; the
    caller's loop is held meanwhile, so in such programs ``await aextract(...)`` is the better call.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="extract-loop", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


async def aextract(
    inputs: Any,
    schema: Any,
    *,
    instructions: str | None = None,
    model: str | DeepInfra = DEFAULT_MODEL,
    api_key: str | None = None,
    base_url: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_attempts: int = 3,
    max_requeues: int = 8,
    retry: RetryPolicy | None = None,
    output: str | Path | None = None,
    errors: str | Path | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    fast: bool = True,
    confidence: bool = False,
    max_cost: float | None = None,
    **model_options: Any,
) -> ExtractionResults:
    """Extract a `schema` value from every input text, concurrently; results in input order (asyncio).

    Parameters
    ----------
    inputs:
        Texts (ids ``"0"``, ``"1"``, ... by position), a mapping id -> text, ``(id, text)`` pairs, or the
        items of `read_inputs` (a ``.jsonl``/``.csv`` file or a directory of ``.txt`` files).
    schema:
        A pydantic model class (results are instances), a ``pydantic.TypeAdapter``, or a JSON schema (dict or
        JSON text; results are validated dicts).
    instructions:
        The system message; ``None`` for a short default, ``""`` for none.
    model, api_key, base_url, **model_options:
        A model name plus `DeepInfra` options, or a ready `DeepInfra` object (then no other model options).
        ``cache=PATH`` (or ``True``) answers every request sent before from the request cache, so a second
        run over the same inputs into a new output costs nothing; on the fast path each batch counts
        identical requests from the first again (see `DeepInfra`'s ``cache``).
        The fast path uses the model's key, base_url, timeout (the bound of each whole attempt: connecting,
        waiting for the answer and reading it), retry policy, request defaults, sampling parameters and
        profiles. An ``http_client`` given to the model is used only with ``fast=False`` (the fast path
        refuses to run beside it rather than ignore it); other openai client options apply only there too.
    concurrency:
        The most requests in flight, 1..200 (DeepInfra allows 200 concurrent requests per model). Each 429
        narrows the window by one slot (by at most half per round trip) and each success widens it by a
        quarter slot, up to `concurrency` (see `extraction.limiter`).
    max_attempts:
        Requests per input for an answer that validates (json()'s bound).
    max_requeues, retry:
        An input whose request still fails transiently (429, 5xx, timeout) after the transport's retries is
        run again, up to `max_requeues` times, after ``retry.delay`` (the transport's `RetryPolicy`,
        default 2 retries per request, backoff from 0.25 s). A 429 whose Retry-After outlasts the retries
        pauses every new request for that long.
    output, errors:
        JSONL files. Each finished result is appended to `output` (``{"id", "result", "estimated_cost"}``)
        and fsynced before it counts as done; a rerun with the same `output` skips the ids already there and
        returns their stored results. `errors` receives one record per failed input for this run (it is
        emptied first: every input without a result is tried again on the next run; it is removed when the
        run has no failure, and an `output` the run created is removed when no record was written to it).
    fast:
        True (default): send each input's requests directly, not streamed (a fraction of a millisecond of
        CPU per input). False: run each input as a guidance program on a worker thread (streamed, through
        the openai SDK; several milliseconds of CPU per input). Both build the same requests and give the
        same records.
    confidence:
        True: ask each request for logprobs (``logprobs`` and ``top_logprobs``, as the model's settings
        build them) and give, per input, every option's probability for each top-level enum field of its
        result, from the answer that was accepted and at no extra request: ``results.confidence[i]`` is
        ``{field: {option: probability}}``, and each `output` record gets a ``"confidence"`` key. None (null
        in the record) where the answer came without logprobs: a model that refuses them is learned and
        asked again without them, and nothing else changes. False (default): no logprobs are asked for.
    max_cost:
        A bound in US dollars on DeepInfra's reported ``estimated_cost`` of this run's requests (answers from
        the cache cost nothing). Once the answers received reach it, no new input is started; those in
        flight finish and their records are written (so the total can pass the bound by what was in flight).
        Each input not started gets a ``NotStarted`` failure (not written to `errors`), and
        ``results.stopped_at_cost`` is True; a rerun with the same `output` resumes.

    Returns an `ExtractionResults` list: per input, its value or an `ExtractionFailure`. Errors no input
    can fix (wrong key, unknown model, a model without JSON output, an invalid schema) stop the batch and are
    raised; records already written stay. So is a `ConnectionFailedError` when the endpoint cannot be
    reached at all before any answer came (or for twice `concurrency` input runs in a row later): the inputs
    it stops are not marked failed (see `extraction.breaker`).
    """
    return await arun_extraction(
        items_from(inputs),
        schema,
        instructions=instructions,
        model=model,
        api_key=api_key,
        base_url=base_url,
        concurrency=concurrency,
        max_attempts=max_attempts,
        max_requeues=max_requeues,
        retry=retry,
        output=output,
        errors=errors,
        max_tokens=max_tokens,
        temperature=temperature,
        fast=fast,
        confidence=confidence,
        max_cost=max_cost,
        **model_options,
    )


def extract(
    inputs: Any,
    schema: Any,
    *,
    instructions: str | None = None,
    model: str | DeepInfra = DEFAULT_MODEL,
    api_key: str | None = None,
    base_url: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_attempts: int = 3,
    max_requeues: int = 8,
    retry: RetryPolicy | None = None,
    output: str | Path | None = None,
    errors: str | Path | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    fast: bool = True,
    confidence: bool = False,
    max_cost: float | None = None,
    **model_options: Any,
) -> ExtractionResults:
    """Extract a `schema` value from every input text, concurrently; results in input order.

    The blocking form of `aextract`, with the same parameters and results. Called from a thread where an
    event loop is running (a notebook cell), it runs the batch on a thread of its own and holds that loop
    until it is done (see `run_blocking`); ``await aextract(...)`` is the better call there.

    With ``confidence=True`` each result's top-level enum fields come with every option's probability,
    read from the logprobs of the answer that was accepted (no extra request)::

        results = extract(tickets, Ticket, confidence=True)
        results[0].team, results.confidence[0]  # "technical", {"team": {"billing": 0.2, "technical": 0.73, ...}}
    """
    return run_blocking(
        aextract(
            inputs,
            schema,
            instructions=instructions,
            model=model,
            api_key=api_key,
            base_url=base_url,
            concurrency=concurrency,
            max_attempts=max_attempts,
            max_requeues=max_requeues,
            retry=retry,
            output=output,
            errors=errors,
            max_tokens=max_tokens,
            temperature=temperature,
            fast=fast,
            confidence=confidence,
            max_cost=max_cost,
            **model_options,
        )
    )


__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_INSTRUCTIONS",
    "ExtractionFailure",
    "ExtractionResults",
    "Item",
    "aextract",
    "arun_extraction",
    "Schema",
    "estimate_extraction",
    "extract",
    "load_schema",
    "read_inputs",
    "read_records",
    "run_extraction",
]
