"""Checking model text against a guidance grammar with llguidance, compiled once and reused.

`GrammarNode.match` builds the llguidance grammar and a parser on every call (milliseconds). Here a grammar
is compiled once per grammar string (from ``node.ll_grammar(enforce_max_tokens=False)``: there is no
tokenizer to count tokens with) into a template `LLMatcher` over a byte tokenizer; each check deep-copies
the template (microseconds) and feeds the text's bytes. The same bytes are accepted as by guidance's own
`ByteParser`, because both run llguidance on the same grammar one byte per token.

Captures need llguidance's interpreter, which reports them as it goes; that is slower per byte, so it runs
once, on the text finally accepted, and is skipped when the only capture is the whole text.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import llguidance
from guidance._ast import GrammarNode, JsonNode, RuleNode

from .errors import InvalidProgramError

#: Replies longer than this are not searched for an embedded match (the search is quadratic).
EXTRACT_LIMIT = 4000

_EOS = 256


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

    def __init__(self, grammar: str, whole_capture: tuple[str, bool] | None) -> None:
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
        self.has_captures = "[capture" in grammar
        # A whole-text capture is trusted only when the grammar holds no other (a Lark body may add some).
        self._whole_capture = whole_capture if grammar.count("[capture") == 1 else None
        self._interpreter: llguidance.LLInterpreter | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ checks

    def check(self, text: str) -> Verdict:
        """Feed `text` and report how far it is valid and where it could end (well under a millisecond)."""
        data = text.encode()
        matcher = self._template.deep_copy()
        viable = matcher.try_consume_tokens(list(data))
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

    # ------------------------------------------------------------------ captures

    def captures(self, text: str) -> dict[str, Any]:
        """Named captures of an accepted `text`, as guidance's `GrammarNode.match` reports them.

        Values are strings, or lists of strings for ``list_append`` captures.
        """
        if not self.has_captures:
            return {}
        if self._whole_capture is not None:
            name, is_list = self._whole_capture
            return {name: [text] if is_list else text}
        return self._run_interpreter(text.encode())

    def _run_interpreter(self, data: bytes) -> dict[str, Any]:
        with self._lock:
            if self._interpreter is None:
                self._interpreter = llguidance.LLInterpreter(byte_tokenizer(), self.grammar, True, True, log_level=0)
            interpreter = self._interpreter.deep_copy()
        found: dict[str, Any] = {}
        produced = bytearray()
        interpreter.process_prompt([])
        mask, stopped = _step(interpreter, produced, found)
        position = 0
        for byte in data:
            if position < len(produced):
                if produced[position] != byte:
                    raise AssertionError("captures asked for a text the grammar does not accept")
                position += 1
                continue
            if stopped or mask is None or not mask[byte]:
                raise AssertionError("captures asked for a text the grammar does not accept")
            interpreter.commit_token(byte)
            mask, stopped = _step(interpreter, produced, found)
            position += 1
        if not stopped:
            interpreter.commit_token(_EOS)
            _step(interpreter, produced, found)
        return found


def _step(
    interpreter: llguidance.LLInterpreter, produced: bytearray, found: dict[str, Any]
) -> tuple[bytes | None, bool]:
    """One llguidance step: record new text and captures; return the byte mask and whether it stopped."""
    mask, raw = interpreter.compute_mask()
    response = json.loads(raw)
    for item in response["progress"]:
        kind = item.get("object")
        if kind == "text":
            produced.extend(bytes.fromhex(item["hex"]))
        elif kind == "capture":
            name: str = item["name"]
            value = bytes.fromhex(item["hex"]).decode("utf-8", errors="replace")
            if name.startswith("__LIST_APPEND:"):
                found.setdefault(name[len("__LIST_APPEND:") :], []).append(value)
            else:
                found[name] = value
    return mask, bool(response["stop"])


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
    compiled = CompiledGrammar(grammar, _whole_capture(node))
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


def _whole_capture(node: GrammarNode) -> tuple[str, bool] | None:
    """(name, list_append) when the only capture is `node` itself spanning the whole text; else None."""
    if not isinstance(node, RuleNode) or node.capture is None:
        return None
    if node.stop is not None or node.suffix is not None or node.stop_capture is not None:
        return None
    if _has_capture(node.value):
        return None
    return node.capture, bool(node.list_append)


def _has_capture(node: GrammarNode) -> bool:
    if isinstance(node, RuleNode) and (node.capture is not None or node.stop_capture is not None):
        return True
    return any(_has_capture(child) for child in node.children())


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
