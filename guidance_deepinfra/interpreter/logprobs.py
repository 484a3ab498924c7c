"""Log probabilities of captures and of select options, from the token logprobs DeepInfra returns.

DeepInfra answers ``logprobs=True, top_logprobs=k`` with, for every generated token, its bytes, its log
probability and the k likeliest tokens at that position. Everything here is pure arithmetic on that list;
the interpreter records it per request (`RequestTokens`) and asks these functions for numbers.

How a capture is scored (the README repeats this): a capture's log probability is the sum of the log
probabilities of the tokens that produced its bytes. A token counts when any of its bytes falls inside the
capture (so a token ``" Paris"`` counts for a capture ``Paris``). Only bytes a request generated count:
text the program wrote (a prefilled prefix, a literal, text a grammar forces) has probability 1 and adds
0; when an answer is built over several requests (a JSON document continued after ``finish_reason:
length``, a grammar answer repaired by continuation), each request adds the tokens it generated inside the
capture, and the text it was handed as its assistant prefix adds nothing again. If a request that
generated part of a capture came back without logprobs, the capture's log probability is None.

How select options are scored in the same call: the options' encoded forms (the JSON string the server's
``enum`` makes the model write) share a common start and then diverge. At each token of the answer from
the divergence on, ``top_logprobs`` lists the other tokens the model could have written there; an option
whose text continues with one of them is given the probability of the answer's path to that point times
that token's probability (summed over the tokens of the answer it shares, up to the one where the answer
leaves it). That is the option's probability as the response shows it when the listed token completes the
option, and an upper bound when it only starts it (the rest was never generated). An option no listed
token leads to gets the mass the list leaves unshown where the answer leaves it (an upper bound). The
chosen option's probability is that of its own tokens, from the divergence to its closing quote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Span = tuple[int, int]


@dataclass(frozen=True)
class TokenScore:
    """One generated token: its bytes, its log probability, and the alternatives the server listed."""

    data: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()

    @classmethod
    def from_wire(cls, item: Any) -> TokenScore | None:
        """Read one ``logprobs.content`` entry (SDK object or dict); None when it is not usable."""
        token = _field(item, "token")
        logprob = _field(item, "logprob")
        if not isinstance(token, str) or not _is_number(logprob):
            return None
        top: list[tuple[bytes, float]] = []
        for alt in _field(item, "top_logprobs") or ():
            alt_token, alt_logprob = _field(alt, "token"), _field(alt, "logprob")
            if isinstance(alt_token, str) and _is_number(alt_logprob):
                top.append((_token_bytes(alt_token, _field(alt, "bytes")), float(alt_logprob)))
        return cls(_token_bytes(token, _field(item, "bytes")), float(logprob), tuple(top))


@dataclass
class RequestTokens:
    """The token logprobs of one request's generated text, in order.

    ``complete`` turns False as soon as a piece of text arrives without usable logprobs (a model that
    refuses them, a garbled set the transport dropped): then no number is derived from this request, nor
    when the tokens do not spell exactly the text that arrived (they would score other bytes).
    """

    tokens: list[TokenScore] = field(default_factory=list)
    complete: bool = True
    received: list[str] = field(default_factory=list)

    def add_chunk(self, content: str | None, logprobs: Any) -> None:
        """Record one streamed delta: its text and the ``choice.logprobs`` that came with it."""
        if not content:
            return
        self.received.append(content)
        entries = _field(logprobs, "content") if logprobs is not None else None
        if not entries:
            self.complete = False
            return
        for entry in entries:
            token = TokenScore.from_wire(entry)
            if token is None:
                self.complete = False
                return
            self.tokens.append(token)

    @property
    def usable(self) -> bool:
        return self.complete and joined_bytes(self.tokens) == "".join(self.received).encode()

    def drop_leading(self, characters: int) -> None:
        """Forget the first `characters` of the text (a reply's inline reasoning): its tokens score no answer
        byte. A token that holds both reasoning and answer bytes leaves the request without usable scores."""
        if characters <= 0:
            return
        text = "".join(self.received)
        cut = len(text[:characters].encode())
        self.received = [text[characters:]]
        position, kept = 0, []
        for token in self.tokens:
            if position >= cut:
                kept.append(token)
            elif position + len(token.data) > cut:
                self.complete = False
            position += len(token.data)
        self.tokens = kept


def entries_after(entries: list[Any] | None, text: str, characters: int) -> list[Any] | None:
    """The ``logprobs.content`` entries of a whole reply without those of its first `characters` (its inline
    reasoning); None when there are none or a token holds both reasoning and answer bytes."""
    if entries is None or characters <= 0:
        return entries
    cut, position = len(text[:characters].encode()), 0
    kept: list[Any] = []
    for entry in entries:
        token = TokenScore.from_wire(entry)
        if token is None:
            return None
        if position >= cut:
            kept.append(entry)
        elif position + len(token.data) > cut:
            return None
        position += len(token.data)
    return kept


def capture_log_probs(
    tokens: Sequence[TokenScore] | None,
    spans: Mapping[str, Span | list[Span]],
    *,
    generated_at: int = 0,
) -> dict[str, float | None | list[float | None]]:
    """Each capture's summed log probability over the tokens of one request.

    `spans` gives, per capture name, the byte span ``(start, end)`` of the capture in a text of which this
    request generated the bytes from `generated_at` on (a list of spans for a list_append capture). Tokens
    are laid end to end from `generated_at`; bytes of a span before it or past the last token were not
    generated by this request and add 0. `tokens` None (no logprobs) gives None for every capture the
    request generated part of, and 0.0 for captures it generated nothing of.
    """
    result: dict[str, float | None | list[float | None]] = {}
    for name, span in spans.items():
        if isinstance(span, list):
            result[name] = [span_log_prob(tokens, s, generated_at=generated_at) for s in span]
        else:
            result[name] = span_log_prob(tokens, span, generated_at=generated_at)
    return result


def span_log_prob(tokens: Sequence[TokenScore] | None, span: Span, *, generated_at: int = 0) -> float | None:
    """The summed log probability of the tokens of one request overlapping `span` (see `capture_log_probs`)."""
    start, end = span
    if tokens is None:
        return None if end > start and end > generated_at else 0.0
    total = 0.0
    position = generated_at
    for token in tokens:
        token_end = position + len(token.data)
        if position < end and token_end > start and token_end > position:
            total += token.logprob
        position = token_end
        if position >= end:
            break
    return total


def combine(parts: Sequence[float | None]) -> float | None:
    """A capture's log probability from the contributions of several requests (None if any is unknown)."""
    if any(part is None for part in parts):
        return None
    return float(sum(part for part in parts if part is not None))


@dataclass(frozen=True)
class Piece:
    """The bytes ``[start, end)`` of an answer that one request generated, and that request's tokens.

    An answer repaired by continuation keeps only part of an earlier request's text (the accepted prefix),
    so each request is counted only inside the bytes it gave the final answer.
    """

    start: int
    end: int
    tokens: RequestTokens | None
    #: Where the request's tokens begin, when before `start` (a JSON-string reply's opening quote).
    origin: int | None = None


def pieces_log_prob(span: Span, pieces: Sequence[Piece]) -> float | None:
    """A capture's log probability over an answer built by several requests (see the module doc).

    Bytes of `span` no piece covers were not generated (forced or prefilled text) and add 0.
    """
    parts: list[float | None] = []
    for piece in pieces:
        start, end = max(span[0], piece.start), min(span[1], piece.end)
        if start >= end:
            continue
        usable = piece.tokens.tokens if piece.tokens is not None and piece.tokens.usable else None
        origin = piece.start if piece.origin is None else piece.origin
        parts.append(span_log_prob(usable, (start, end), generated_at=origin))
    return combine(parts)


def reply_pieces(
    candidate: str, reply: str, tokens: RequestTokens | None, *, decoded: str | None = None
) -> list[Piece]:
    """Where one request's reply lies in a candidate answer that ends with it.

    `decoded`: the reply was a JSON string and the candidate ends with its text; its tokens spell the JSON
    (quote included), so they can score the text only when it holds no escape.
    """
    data = candidate.encode()
    if decoded is not None:
        if not candidate.endswith(decoded):
            return []
        start = len(data) - len(decoded.encode())
        stripped = reply.lstrip()
        if stripped[:1] != '"' or stripped[1 : 1 + len(decoded)] != decoded:
            return [Piece(start, len(data), None)]
        origin = start - 1 - len(reply[: len(reply) - len(stripped)].encode())
        return [Piece(start, len(data), tokens, origin)]
    if not candidate.endswith(reply):
        return []
    return [Piece(len(data) - len(reply.encode()), len(data), tokens)]


def carried_pieces(layouts: Mapping[str, Sequence[Piece]], text: str) -> list[Piece]:
    """The pieces of `text`, taken from the candidate judged before that it comes from.

    `text` is such a candidate, a prefix of one (cut after a match), one match inside one, or one's first
    bytes followed by text the grammar inserted (kept for a repair): the bytes it shares with its source keep
    their pieces, inserted bytes get none (probability 1). Without any source, the whole text is unknown.
    """
    data = text.encode()
    best: tuple[int, int, Sequence[Piece]] | None = None
    for source, pieces in layouts.items():
        encoded = source.encode()
        offset = encoded.find(data)
        agree = len(data) if offset >= 0 else _common_prefix_length([encoded, data])
        if best is None or agree >= best[0]:  # a later candidate wins a tie
            best = (agree, max(offset, 0), pieces)
    if best is None or (best[0] == 0 and data):
        return [Piece(0, len(data), None)] if data else []
    agree, offset, pieces = best
    kept: list[Piece] = []
    for piece in pieces:
        start, end = piece.start - offset, min(piece.end - offset, agree)
        if end > max(start, 0):
            origin = (piece.start if piece.origin is None else piece.origin) - offset
            kept.append(Piece(start, end, piece.tokens, origin))
    return kept


def capture_spans(answer: bytes, value: bytes, end: int) -> Span | None:
    """Where a capture lies in the answer when its rule closed after the answer's first `end` bytes were read:
    the last place its bytes end at or before `end` (None when the answer does not hold them, e.g. a
    capture made of text the grammar inserted)."""
    start = answer.rfind(value, 0, max(0, min(end, len(answer))))
    return None if start < 0 else (start, start + len(value))


def grammar_capture_log_probs(
    answer: str,
    captures: Mapping[str, str | list[str]],
    ends: Mapping[str, int | list[int]],
    pieces: Sequence[Piece],
) -> dict[str, float | None | list[float | None]]:
    """The log probability of each capture of a grammar answer (the hook for the grammar path).

    `captures` are the values the grammar's run reported (a list for list_append), `ends` how many answer
    bytes had been read when each was reported, and `pieces` which request generated which bytes of
    `answer`. A capture that cannot be placed in the answer gets None.
    """
    data = answer.encode()

    def one(value: str, end: int) -> float | None:
        span = capture_spans(data, value.encode(), end)
        return None if span is None else pieces_log_prob(span, pieces)

    result: dict[str, float | None | list[float | None]] = {}
    for name, value in captures.items():
        end = ends.get(name)
        if isinstance(value, list):
            positions = end if isinstance(end, list) and len(end) == len(value) else [len(data)] * len(value)
            result[name] = [one(v, e) for v, e in zip(value, positions, strict=True)]
        else:
            result[name] = one(value, end if isinstance(end, int) else len(data))
    return result


def joined_bytes(tokens: Sequence[TokenScore]) -> bytes:
    return b"".join(token.data for token in tokens)


# ----------------------------------------------------------------------------- select options


@dataclass(frozen=True)
class OptionProb:
    """One option's probability. ``bound`` is True when it is only an upper bound (see the module doc)."""

    option: str
    prob: float
    bound: bool = False

    @property
    def log_prob(self) -> float:
        return math.log(self.prob) if self.prob > 0 else -math.inf


def encoded_option(option: str, *, quoted: bool) -> bytes:
    """The bytes an answer writes for `option` after its opening quote (closing quote included)."""
    if not quoted:
        return option.encode()
    return json.dumps(option, ensure_ascii=False)[1:].encode()


def option_distribution(
    tokens: Sequence[TokenScore],
    *,
    start: int,
    chosen_end: int,
    chosen: str,
    options: Sequence[str],
    quoted: bool,
    enforced: bool = False,
) -> dict[str, OptionProb] | None:
    """Every option's probability from one answer's tokens (see the module doc for the method).

    `start` is the byte offset in the answer (the tokens laid end to end) where the chosen option's text
    begins, after its opening quote when `quoted`; `chosen_end` the offset just past the chosen option's
    encoded form (past its closing quote when `quoted`). `enforced` says the server held the answer to the
    options (a json_schema ``enum``): then a listed token that only one option can follow decides that
    option, as the rest is forced. Returns None when the tokens do not cover the chosen option.
    """
    reply = joined_bytes(tokens)
    if chosen_end > len(reply) or start > chosen_end:
        return None
    lead = reply[:start]
    targets = {o: (reply[:chosen_end] if o == chosen else lead + encoded_option(o, quoted=quoted)) for o in options}
    diverge = start + _common_prefix_length([t[start:] for t in targets.values()])
    offsets = _offsets(tokens)
    first = next((i for i, (_s, e) in enumerate(offsets) if e > diverge), None)
    if first is None:
        return None
    result: dict[str, OptionProb] = {}
    for option in options:
        target = targets[option]
        if option == chosen:
            last = next(i for i, (_s, e) in enumerate(offsets) if e >= chosen_end)
            log_prob = sum(t.logprob for t in tokens[first : last + 1])
            result[option] = OptionProb(option, math.exp(log_prob))
            continue
        rivals = list(targets.values()) if enforced else None
        result[option] = _other_option(tokens, offsets, first, option, target, rivals)
    return result


def _other_option(
    tokens: Sequence[TokenScore],
    offsets: list[Span],
    first: int,
    option: str,
    target: bytes,
    rivals: list[bytes] | None,
) -> OptionProb:
    """One option other than the chosen one: follow the answer while it agrees with the option, adding at
    each token the listed alternatives that continue the option, up to the token where the answer leaves it.

    `rivals` (every option's encoded form, when the server enforced the options) lets a listed token that
    only this option can follow count as the whole option.
    """
    path = 0.0
    total = 0.0
    partial = False
    for index in range(first, len(tokens)):
        token, (position, _end) = tokens[index], offsets[index]
        fitting = [(alt, lp) for alt, lp in token.top if alt != token.data and _fits(alt, position, target)]
        total += math.exp(path) * sum(math.exp(lp) for _alt, lp in fitting)
        partial = partial or any(
            position + len(alt) < len(target) and (rivals is None or sum(_fits(alt, position, r) for r in rivals) > 1)
            for alt, _lp in fitting
        )
        if not _fits(token.data, position, target):  # the answer leaves the option here
            if not fitting:
                return OptionProb(option, min(1.0, total + math.exp(path) * _unshown_mass(token)), bound=True)
            return OptionProb(option, min(1.0, total), bound=partial)
        path += token.logprob
        if position + len(token.data) >= len(target):  # the answer so far also spells this option
            break
    return OptionProb(option, min(1.0, total + math.exp(path)), bound=True)


def _fits(piece: bytes, position: int, target: bytes) -> bool:
    """Whether `piece` written at `position` agrees with `target` (it may run past the target's end)."""
    rest = target[position:]
    return rest.startswith(piece) or (len(piece) > len(rest) and piece.startswith(rest) and bool(rest))


def _unshown_mass(token: TokenScore) -> float:
    shown = {alt: lp for alt, lp in token.top}
    shown.setdefault(token.data, token.logprob)
    return max(0.0, 1.0 - sum(math.exp(lp) for lp in shown.values()))


def _offsets(tokens: Sequence[TokenScore]) -> list[Span]:
    spans: list[Span] = []
    position = 0
    for token in tokens:
        spans.append((position, position + len(token.data)))
        position += len(token.data)
    return spans


def _common_prefix_length(values: Sequence[bytes]) -> int:
    if not values:
        return 0
    shortest = min(len(v) for v in values)
    for i in range(shortest):
        if len({v[i] for v in values}) > 1:
            return i
    return shortest


# ----------------------------------------------------------------------------- JSON answers


def string_value_span(text: str, start: int = 0) -> tuple[int, int] | None:
    """Character span of the JSON string at `start` (after whitespace): from after its opening quote to
    after its closing quote; None if no JSON string starts there."""
    position = _skip_space(text, start)
    if position >= len(text) or text[position] != '"':
        return None
    try:
        _value, end = _DECODER.raw_decode(text, position)
    except ValueError:
        return None
    return position + 1, end


def top_level_value_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character spans of the values of a JSON object's top-level keys (empty when `text` is no object)."""
    spans: dict[str, tuple[int, int]] = {}
    position = _skip_space(text, 0)
    if position >= len(text) or text[position] != "{":
        return spans
    position = _skip_space(text, position + 1)
    try:
        while position < len(text) and text[position] != "}":
            key, position = _DECODER.raw_decode(text, position)
            position = _skip_space(text, position)
            if text[position] != ":":
                return {}
            value_start = _skip_space(text, position + 1)
            _value, value_end = _DECODER.raw_decode(text, value_start)
            if isinstance(key, str):
                spans[key] = (value_start, value_end)
            position = _skip_space(text, value_end)
            if position < len(text) and text[position] == ",":
                position = _skip_space(text, position + 1)
    except (ValueError, IndexError):
        return {}
    return spans


def enum_fields(schema: Any) -> dict[str, list[str]]:
    """Top-level properties whose values are a string ``enum`` (directly or through a local ``$ref``)."""
    if not isinstance(schema, dict):
        return {}
    fields: dict[str, list[str]] = {}
    for name, sub in (schema.get("properties") or {}).items():
        resolved = _resolve(schema, sub)
        values = resolved.get("enum") if isinstance(resolved, dict) else None
        if isinstance(values, list) and len(values) > 1 and all(isinstance(v, str) for v in values):
            fields[name] = list(dict.fromkeys(values))
    return fields


def enum_field_probs(
    text: str, tokens: Sequence[TokenScore], schema: Any, *, generated_at: int = 0, enforced: bool = False
) -> dict[str, dict[str, OptionProb]]:
    """For each top-level string-enum field of a JSON answer, every option's probability from its tokens.

    `text` is the answer as generated (tokens laid end to end from byte `generated_at` of it). Fields whose
    value the tokens do not cover, or whose value is not one of the options, are left out. `enforced`: the
    server held the answer to the schema (json_schema mode). This is the hook for any caller holding a JSON
    reply and its logprobs (a batch extraction, for example).
    """
    result: dict[str, dict[str, OptionProb]] = {}
    spans = top_level_value_spans(text)
    for name, options in enum_fields(schema).items():
        if name not in spans:
            continue
        value_start, value_end = spans[name]
        try:
            chosen = json.loads(text[value_start:value_end])
        except ValueError:
            continue
        if chosen not in options or text[value_start] != '"':
            continue
        start = len(text[: value_start + 1].encode()) - generated_at
        end = len(text[:value_end].encode()) - generated_at
        if start < 0:
            continue
        distribution = option_distribution(
            tokens, start=start, chosen_end=end, chosen=chosen, options=options, quoted=True, enforced=enforced
        )
        if distribution is not None:
            result[name] = distribution
    return result


_DECODER = json.JSONDecoder()


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _resolve(root: dict[str, Any], sub: Any) -> Any:
    for _ in range(8):  # a short chain of local references; anything deeper is left alone
        if not isinstance(sub, dict) or not isinstance(sub.get("$ref"), str):
            return sub
        ref = sub["$ref"]
        if not ref.startswith("#/"):
            return sub
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        sub = target
    return sub


def _field(item: Any, name: str) -> Any:
    if isinstance(item, dict):
        return item.get(name)
    return getattr(item, name, None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _token_bytes(token: str, raw: Any) -> bytes:
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)
    return token.encode()


# ----------------------------------------------------------------------------- what the interpreter keeps


@dataclass(frozen=True)
class OptionScores:
    """The options of one select (or one enum field of a JSON answer) and their probabilities.

    ``request`` is the body of the request that chose and ``lead`` the answer's text before the option
    (after its opening quote), kept so that `option_probs(..., exact=True)` can score the options by
    continuation later; ``quoted`` says the option was written as a JSON string.
    """

    chosen: str
    options: dict[str, OptionProb]
    quoted: bool = True
    request: dict[str, Any] | None = None
    lead: str = '"'

    def __deepcopy__(self, memo: dict[int, Any]) -> OptionScores:
        # Never changed once made: guidance copies the program state on every `lm += ...`, and a copy of
        # the request (the whole conversation) per kept select would be waste.
        return self


def score_select(
    raw: str, tokens: RequestTokens | None, chosen: str, options: Sequence[str], *, enforced: bool = False
) -> tuple[float | None, dict[str, OptionProb] | None, str]:
    """(the chosen option's log probability, every option's probability, the text before it) of one answer.

    The answer is a JSON string (json_schema mode), ``{"choice": ...}`` (json_object mode) or the bare option
    (prompt mode). Nothing is derived when the request's logprobs are missing or do not spell the answer.
    """
    located = _locate_choice(raw, chosen)
    if located is None:
        return None, None, '"'
    start_char, end_char, quoted = located
    lead = raw[:start_char].lstrip()
    if tokens is None or not tokens.usable or joined_bytes(tokens.tokens) != raw.encode():
        return None, None, lead
    start, end = len(raw[:start_char].encode()), len(raw[:end_char].encode())
    distribution = option_distribution(
        tokens.tokens, start=start, chosen_end=end, chosen=chosen, options=options, quoted=quoted, enforced=enforced
    )
    if distribution is None:
        return span_log_prob(tokens.tokens, (start, end)), None, lead
    return distribution[chosen].log_prob, distribution, lead


def _locate_choice(raw: str, chosen: str) -> tuple[int, int, bool] | None:
    span = string_value_span(raw)
    if span is not None and _decodes_to(raw[span[0] - 1 : span[1]], chosen):
        return span[0], span[1], True
    value = top_level_value_spans(raw).get("choice")
    if value is not None and raw[value[0]] == '"' and _decodes_to(raw[value[0] : value[1]], chosen):
        return value[0] + 1, value[1], True
    index = raw.find(chosen)
    return (index, index + len(chosen), False) if index >= 0 else None


def _decodes_to(text: str, expected: str) -> bool:
    try:
        return bool(json.loads(text) == expected)
    except ValueError:
        return False


def score_json(
    raw: str, document: str, requests: Sequence[tuple[int, RequestTokens]], schema: Any, *, enforced: bool = False
) -> tuple[float | None, dict[str, dict[str, OptionProb]]]:
    """(the document's log probability, each top-level enum field's options) of a JSON answer.

    `requests` lists, for each request that wrote part of `raw`, the byte offset in `raw` where its text
    begins and its tokens (a document continued after ``finish_reason: length`` has several).
    """
    index = raw.find(document)
    if index < 0 or not requests:
        return None, {}
    span = (len(raw[:index].encode()), len(raw[: index + len(document)].encode()))
    parts: list[float | None] = []
    fields: dict[str, dict[str, OptionProb]] = {}
    for offset, tokens in requests:
        usable = tokens.tokens if tokens.usable else None
        parts.append(span_log_prob(usable, span, generated_at=offset))
        if usable is not None:
            shifted = offset - span[0]  # where this request's text begins, counted from the document's start
            for name, options in enum_field_probs(
                document, usable, schema, generated_at=shifted, enforced=enforced
            ).items():
                fields.setdefault(name, options)
    return combine(parts), fields
