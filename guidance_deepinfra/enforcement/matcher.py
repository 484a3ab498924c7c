"""Checking model text against a guidance grammar with llguidance, compiled once and reused.

`GrammarNode.match` builds the llguidance grammar and a parser on every call (milliseconds). Here a grammar
is compiled once per grammar string (from ``node.ll_grammar(enforce_max_tokens=False)``: there is no
tokenizer to count tokens with) into a template `LLMatcher` over a byte tokenizer; each check deep-copies
the template (microseconds) and feeds the text's bytes. The same bytes are accepted as by guidance's own
`ByteParser`, because both run llguidance on the same grammar one byte per token.

What the program receives (its text and captures: hidden stops, ``save_stop_text``, ``list_append``) is
not read from this matcher but from llguidance's interpreter forced along the answer (`enforcement.follow`), as a local
model's run gives it. The matcher here serves the ladder: quick prefix checks, trimming and repair points.

An llguidance failure (``is_error()``: an internal error on some input) is never read as "the text is wrong":
it raises `InvalidProgramError`, and a grammar whose compiled template fails is dropped from the cache.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import llguidance
from guidance._ast import GrammarNode, JsonNode, LiteralNode, RuleNode, RuleRefNode

from ..errors import InvalidProgramError
from .follow import Followed, Follower, GrammarEngineFailure

#: Replies longer than this are not searched for an embedded match (the search is quadratic).
EXTRACT_LIMIT = 4000


@lru_cache(maxsize=1)
def byte_tokenizer() -> llguidance.LLTokenizer:
    """guidance's byte-level tokenizer (one token per byte, EOS = 256), built once."""
    from guidance.models._byte_tokenizer import ByteTokenizer

    return ByteTokenizer()._ll_tokenizer


@dataclass(frozen=True)
class Verdict:
    """What llguidance says about one candidate text (byte offsets into its UTF-8 encoding).

    ``viable``: length of the longest prefix the grammar can still extend to a match.
    ``complete``: the whole text is a match. ``longest_match``: the longest prefix that is a complete match
    (None when there is none). ``forced_next``: text the grammar forces right after the viable prefix.
    ``can_extend``: the grammar allows more text after the viable prefix.
    """

    text: str
    viable: int
    complete: bool
    longest_match: int | None
    forced_next: str = ""
    can_extend: bool = False

    @property
    def size(self) -> int:
        return len(self.text.encode())

    def prefix(self, n_bytes: int) -> str:
        """The text's first `n_bytes`, cut back to a character boundary."""
        return self.text.encode()[:n_bytes].decode("utf-8", errors="ignore")

    @property
    def viable_text(self) -> str:
        return self.prefix(self.viable)

    @property
    def matched_text(self) -> str | None:
        return None if self.longest_match is None else self.prefix(self.longest_match)


class CompiledGrammar:
    """One grammar, compiled once: cheap checks, the forced prefix, and captures of an accepted text."""

    def __init__(
        self, grammar: str, *, closing_stops: tuple[str, ...] = (), stop_captures: frozenset[str] = frozenset()
    ) -> None:
        self.grammar = grammar
        tokenizer = byte_tokenizer()
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
        if is_error:
            raise InvalidProgramError(f"invalid regex or grammar: {messages[0].strip()}")
        self._template = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self._template.is_error():
            raise InvalidProgramError(f"invalid regex or grammar: {self._template.get_error()}")
        self.forced_prefix = self._template.compute_ff_bytes().decode("utf-8", errors="ignore")
        self.accepts_empty = self._template.is_accepting()
        if self._template.is_error():
            raise InvalidProgramError(f"llguidance fails on this grammar: {_first_line(self._template.get_error())}")
        self._follower = Follower(grammar, closing_stops=closing_stops, stop_captures=stop_captures)
        ended = self._template.deep_copy()
        ended.consume_tokens(list(self.forced_prefix.encode()))
        #: The grammar is all forced text: a local model generates nothing for it, so no request is made.
        self.fully_forced = ended.is_stopped()

    # ------------------------------------------------------------------ checks

    def check(self, text: str) -> Verdict:
        """Feed `text` and report how far it is valid and where it could end (well under a millisecond)."""
        data = text.encode()
        matcher = self._template.deep_copy()
        viable = matcher.try_consume_tokens(list(data))
        if matcher.is_error():
            self._renew()
            raise InvalidProgramError(
                f"llguidance fails on this grammar for the text {text[:60]!r}: {_first_line(matcher.get_error())} "
                "(a local model's run of the grammar fails the same way)"
            )
        complete = viable == len(data) and matcher.is_accepting()
        longest: int | None = viable if matcher.is_accepting() else None
        forced_next = "" if complete else matcher.compute_ff_bytes().decode("utf-8", errors="ignore")
        can_extend = not matcher.is_stopped()
        position = viable
        while longest is None and position > 0:
            matcher.rollback(1)
            position -= 1
            if matcher.is_accepting():
                longest = position
        return Verdict(
            text=text,
            viable=viable,
            complete=complete,
            longest_match=longest,
            forced_next=forced_next,
            can_extend=can_extend,
        )

    def is_match(self, text: str) -> bool:
        return self.check(text).complete

    def find_embedded(self, text: str, *, min_start: int = 0) -> tuple[int, int] | None:
        """The one match embedded in `text` (character offsets), or None when there is none or several.

        Candidates are the longest matches starting at each character; a candidate inside another one is
        not a different answer. Two or more distinct candidates make the text ambiguous, and nothing is
        taken from it: picking one would be a guess.
        """
        if len(text) > EXTRACT_LIMIT:
            return None
        spans: list[tuple[int, int]] = []
        covered_to = -1
        for start in range(min_start, len(text)):
            verdict = self.check(text[start:])
            if not verdict.longest_match:
                continue
            end = start + len(verdict.prefix(verdict.longest_match))
            if end <= covered_to:
                continue  # inside an earlier, longer candidate
            spans.append((start, end))
            covered_to = end
        distinct = [s for s in spans if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in spans)]
        return distinct[0] if len(distinct) == 1 else None

    def _renew(self) -> None:
        """After an llguidance failure: drop this grammar from the cache and rebuild its template.

        A failure inside one copy can poison state llguidance shares with the template it was copied from,
        after which every later check would fail; the grammar is compiled afresh instead.
        """
        _forget(self)
        self._template = llguidance.LLMatcher(byte_tokenizer(), self.grammar, log_level=0)

    # ------------------------------------------------------------------ the local run

    def follow(self, text: str) -> Followed:
        """llguidance's run of the grammar along `text`: the program text and captures a local run gives."""
        try:
            return self._follower.follow(text)
        except GrammarEngineFailure as exc:
            _forget(self)
            raise InvalidProgramError(
                f"llguidance fails on this grammar for the text {text[:60]!r}: {exc} "
                "(a local model's run of the grammar fails the same way)"
            ) from None

    def captures(self, text: str) -> dict[str, Any]:
        """Named captures of an accepted `text`, as a local run sets them (lists for ``list_append``)."""
        return self.follow(text).captures


def _first_line(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[0] if lines else "internal error"


def grammar_text(node: GrammarNode) -> str:
    """The llguidance grammar for `node`, without token limits (no tokenizer exists to count them)."""
    try:
        return node.ll_grammar(enforce_max_tokens=False)
    except Exception as exc:  # noqa: BLE001 - guidance raises several types for programs it cannot lower
        raise InvalidProgramError(f"this grammar cannot be compiled: {exc}") from None


_CACHE: dict[str, CompiledGrammar] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 256


#: Node identity -> (node, compiled). Identity, not equality: guidance's subgrammar nodes all compare equal.
#: The node is kept so its id cannot be reused while the entry lives.
_BY_NODE: dict[int, tuple[GrammarNode, CompiledGrammar]] = {}


def compile_node(node: GrammarNode) -> CompiledGrammar:
    """The compiled grammar for `node`, from the cache keyed by its llguidance grammar string.

    Serializing a node to its grammar string costs more than a check, so the node object itself is a
    first-level key (guidance nodes are immutable).
    """
    entry = _BY_NODE.get(id(node))
    if entry is not None and entry[0] is node:
        return entry[1]
    grammar = grammar_text(node)
    with _CACHE_LOCK:
        cached = _CACHE.get(grammar)
    if cached is not None:
        _remember(node, cached)
        return cached
    _refuse_loose_json(node)
    stops, stop_captures = _stops_of(node)
    compiled = CompiledGrammar(grammar, closing_stops=stops, stop_captures=stop_captures)
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[grammar] = compiled
    _remember(node, compiled)
    return compiled


def _remember(node: GrammarNode, compiled: CompiledGrammar) -> None:
    with _CACHE_LOCK:
        if len(_BY_NODE) >= _CACHE_SIZE:
            _BY_NODE.pop(next(iter(_BY_NODE)))
        _BY_NODE[id(node)] = (node, compiled)


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
        _BY_NODE.clear()


def _forget(compiled: CompiledGrammar) -> None:
    """Drop a compiled grammar that llguidance broke on, so a later program compiles it afresh."""
    with _CACHE_LOCK:
        if _CACHE.get(compiled.grammar) is compiled:
            del _CACHE[compiled.grammar]
        for key, (_, cached) in list(_BY_NODE.items()):
            if cached is compiled:
                del _BY_NODE[key]


def _stops_of(node: GrammarNode) -> tuple[tuple[str, ...], frozenset[str]]:
    """The literal stops of the gens in `node` and their ``save_stop_text`` names (see `enforcement.follow`)."""
    stops: list[str] = []
    names: set[str] = set()
    seen: set[int] = set()
    pending: list[GrammarNode] = [node]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RuleNode):
            if isinstance(current.stop, LiteralNode):
                stops.append(current.stop.value)
            if current.stop_capture is not None:
                names.add(current.stop_capture)
        pending.extend(current.children())
        if isinstance(current, RuleRefNode) and current.target is not None:
            pending.append(current.target)
    return tuple(stops), frozenset(names)


def _refuse_loose_json(node: GrammarNode) -> None:
    """Refuse a json() inside a grammar whose schema llguidance would enforce only in part.

    json() on its own is validated with jsonschema against the whole schema. Inside a grammar (joined with a
    regex gen, say) only llguidance checks the text, and json()'s ``lenient`` and ``coerce_one_of`` options
    let it skip keywords it does not implement (``uniqueItems``, unknown formats) and read ``oneOf`` as
    ``anyOf``, so a capture could break the schema. Such a schema must be checked strictly or not at all.
    """
    for part in _json_nodes(node):
        schema: dict[str, Any] = dict(part.schema) if part.schema is not None else {"type": "object"}
        schema["x-guidance"] = {**(part.llg_options or {}), "lenient": False, "coerce_one_of": False}
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
            is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
        except Exception as exc:  # noqa: BLE001 - llguidance raises several types for schemas it cannot read
            is_error, messages = True, [str(exc)]
        if is_error:
            raise InvalidProgramError(
                "a json() joined with a regex or grammar is checked by llguidance alone, which cannot enforce "
                f"all of this schema ({messages[0].strip() if messages else 'refused'}); run the json() on its "
                "own (joined only with text, gen, select or json), where the whole schema is validated"
            )


def _json_nodes(node: GrammarNode) -> list[JsonNode]:
    if isinstance(node, JsonNode):
        return [node]
    return [found for child in node.children() for found in _json_nodes(child)]
