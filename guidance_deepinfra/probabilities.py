"""`option_probs`: every option of a select (or of a JSON enum field) with its probability.

By default the numbers come from the request that made the choice, at no extra cost (see `interpreter.logprobs` for
how they are read from ``top_logprobs``). ``exact=True`` scores each option by continuation instead:
requests that hand DeepInfra the conversation with the answer's text up to the option as the trailing
assistant message, ask for one token with ``top_logprobs=20``, and follow each option's text token by token
down the listed alternatives. That costs one extra request per distinct token prefix visited (1 when every
option is a single token; about 1 + options × (tokens per option − 1) otherwise), each resending the whole
conversation as prompt tokens and generating one token, at most `max_requests` in all.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from .errors import ConfigurationError, InvalidProgramError
from .interpreter.logprobs import OptionProb, OptionScores, TokenScore, encoded_option, enum_field_probs

#: ``top_logprobs`` of an exact-scoring request: the most DeepInfra documents.
EXACT_TOP_LOGPROBS = 20
DEFAULT_MAX_REQUESTS = 32


def option_probs(
    lm: Any, name: str, *, field: str | None = None, exact: bool = False, max_requests: int = DEFAULT_MAX_REQUESTS
) -> dict[str, OptionProb] | list[dict[str, OptionProb] | None] | None:
    """Every option's probability for the select captured as `name` (or the enum `field` of a json capture).

    Returns ``{option: OptionProb(option, prob, bound)}`` in the options' order; ``bound`` marks a value
    that is only an upper bound. A list_append capture gives one such dict per appended value. None when
    the answer came without logprobs (the model refused them, or ``logprobs=False``). ``exact=True`` makes
    extra requests (see the module doc for their number) and counts them in ``lm.usage``.
    """
    interpreter = getattr(lm, "_interpreter", None)
    state: Any = getattr(interpreter, "state", None)
    if not isinstance(getattr(state, "option_scores", None), dict):
        raise ConfigurationError(f"option_probs() needs a DeepInfra model, not {type(lm).__name__}")
    if name not in state.captures:
        raise InvalidProgramError(f"no capture named {name!r}")
    if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
        raise ConfigurationError(f"max_requests must be a positive integer, got {max_requests!r}")
    kept = state.option_scores.get(name)
    if isinstance(kept, list):
        return [_one(interpreter, entry, name, field, exact, max_requests) for entry in kept]
    return _one(interpreter, kept, name, field, exact, max_requests)


def _one(
    interpreter: Any, kept: Any, name: str, field: str | None, exact: bool, max_requests: int
) -> dict[str, OptionProb] | None:
    if isinstance(kept, dict):
        if field is None:
            raise InvalidProgramError(f"{name!r} is a json capture: name its enum field with field=...")
        kept = kept.get(field)
    elif field is not None and kept is not None:
        raise InvalidProgramError(f"{name!r} is a select capture, it has no field {field!r}")
    if kept is None:
        return None
    if not isinstance(kept, OptionScores):
        raise InvalidProgramError(f"{name!r} holds no option scores")
    if not exact:
        return dict(kept.options)
    return score_by_continuation(interpreter, kept, max_requests=max_requests)


def score_by_continuation(interpreter: Any, kept: OptionScores, *, max_requests: int) -> dict[str, OptionProb]:
    """Each option's probability, followed token by token through continuation requests (the exact mode)."""
    if kept.request is None:
        raise InvalidProgramError("these options were not scored from a request; exact scoring cannot redo it")
    targets = {option: encoded_option(option, quoted=kept.quoted) for option in kept.options}
    totals = dict.fromkeys(targets, 0.0)
    bounded: set[str] = set()
    frontier: list[tuple[bytes, float, list[str]]] = [(b"", 0.0, list(targets))]
    requests = 0
    while frontier:
        prefix, log_prob, options = frontier.pop(0)
        top = None
        if requests < max_requests and _decodable(prefix):
            requests += 1
            top = _next_token(interpreter, kept, prefix.decode())
        if top is None:  # out of requests, or a prefix that ends inside a character: the path is a bound
            for option in options:
                totals[option] += math.exp(log_prob)
                bounded.add(option)
            continue
        shown = sum(math.exp(lp) for _piece, lp in top)
        children: dict[bytes, tuple[float, list[str]]] = {}
        for option in options:
            rest = targets[option][len(prefix) :]
            fitting = [(piece, lp) for piece, lp in top if piece and (rest.startswith(piece) or piece.startswith(rest))]
            if not fitting:
                totals[option] += math.exp(log_prob) * max(0.0, 1.0 - shown)
                bounded.add(option)
            for piece, lp in fitting:
                if len(piece) >= len(rest):
                    totals[option] += math.exp(log_prob + lp)
                else:
                    children.setdefault(piece, (log_prob + lp, []))[1].append(option)
        frontier.extend((prefix + piece, lp, opts) for piece, (lp, opts) in children.items())
    return {option: OptionProb(option, min(1.0, totals[option]), option in bounded) for option in targets}


def _next_token(interpreter: Any, kept: OptionScores, written: str) -> list[tuple[bytes, float]] | None:
    """The alternatives for the token after the answer's lead and `written` (None if none came back)."""
    body = _continuation_request(kept, written)
    interpreter.collect(body)
    tokens = interpreter.request_tokens
    if tokens is None or not tokens.usable or not tokens.tokens:
        return None
    first: TokenScore = tokens.tokens[0]
    alternatives = dict(first.top)
    alternatives.setdefault(first.data, first.logprob)
    return list(alternatives.items())


def _continuation_request(kept: OptionScores, written: str) -> dict[str, Any]:
    dropped = ("response_format", "stop", "tools", "tool_choice")
    body = {k: v for k, v in (kept.request or {}).items() if k not in dropped}
    messages: list[dict[str, Any]] = copy.deepcopy(list(body.get("messages") or []))
    if messages and messages[-1].get("role") == "assistant" and isinstance(messages[-1].get("content"), str):
        messages[-1]["content"] += kept.lead + written
    else:
        messages.append({"role": "assistant", "content": kept.lead + written})
    body.update(messages=messages, max_tokens=1, logprobs=True, top_logprobs=EXACT_TOP_LOGPROBS)
    return body


def _decodable(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def enum_confidence(
    text: str, logprobs: Sequence[Any], schema: Any, *, enforced: bool = True, generated_at: int = 0
) -> dict[str, dict[str, OptionProb]]:
    """Every option's probability for each top-level string-enum field of a JSON reply read elsewhere.

    `text` is the reply's content and `logprobs` its ``choices[0].logprobs.content`` entries (SDK objects or
    dicts), for callers that send their own requests (a batch of extractions, for example). `enforced`: the
    reply was made under a json_schema ``response_format`` (see `interpreter.logprobs.option_distribution`).
    `generated_at`: the byte of `text` where the tokens begin (negative when they begin before it, as when
    `text` is the JSON document found inside a longer reply). Fields the tokens do not cover are left out;
    an entry that is not a usable token logprob gives ``{}``.
    """
    tokens = [TokenScore.from_wire(entry) for entry in logprobs]
    if any(token is None for token in tokens):
        return {}
    usable = [t for t in tokens if t is not None]
    return enum_field_probs(text, usable, schema, generated_at=generated_at, enforced=enforced)


__all__: Sequence[str] = ["enum_confidence", "option_probs"]
