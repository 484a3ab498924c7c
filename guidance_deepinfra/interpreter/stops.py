"""Client-side stop handling for `gen(stop=..., stop_regex=..., suffix=..., save_stop_text=...)`.

DeepInfra's `stop` field takes at most 4 plain strings and does not say which one matched, so the plugin
sends literal stops to the server where that cannot change the outcome and always scans the stream itself
too. The scan reproduces guidance's local semantics: generation ends at the earliest position where a stop
(or the suffix) has been completed; the stop text is what a local model's lexer hides there (for one stop, or
stops that cannot overlap, the stop that ended; otherwise llguidance decides, see `_RegexStops.stop_start`);
the capture is the text before it; the stop text is empty when the model ended for another reason; a suffix
is written out after the capture when it was reached.

A ``stop_regex`` is read by llguidance, the regex engine a local model's stop runs on, so its dialect is
guidance's (``\\p{Lu}``, ``[[:digit:]]``, ``(?i)``, ...). Each streamed character is fed once to a compiled
matcher of ``(?s:.*)(?:stop)``, which accepts exactly when the text so far ends with a stop: the scan is
linear in the reply.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import llguidance
from guidance._ast import LiteralNode, RegexNode

from ..errors import InvalidProgramError
from ..lowering.pattern import literal_alternatives
from ..transport.body import API_STOP_LIMIT


@dataclass
class StopSpec:
    """What ends a `gen`: literal strings and/or one regex, plus whether the ending text is emitted."""

    literals: list[str] = field(default_factory=list)
    regex: str | None = None
    emit_suffix: str | None = None

    @property
    def api_stops(self) -> list[str]:
        """The stop strings DeepInfra can apply on the server (never more than its documented 4).

        None when the server's cut could differ from a local model's: a server cuts at the first stop it
        finds (in its own order, once per token), a local model at the earliest end, so two stops whose
        occurrences can overlap (``"ab"`` and ``"b"``, ``"ab"`` and ``"bc"``) may be cut too early there, and
        the text cut away can never be seen again. One stop, or stops that cannot overlap, are safe: the
        client's scan still decides, over all of them.
        """
        if self.regex is not None or self.emit_suffix is not None:
            # A suffix must be seen to be emitted; the server would strip it and not say whether it matched.
            return []
        if not _cannot_overlap(self.literals):
            return []
        return self.literals[:API_STOP_LIMIT]


def _cannot_overlap(literals: list[str]) -> bool:
    """True when no occurrence of one stop can share a character with an occurrence of another."""
    for a in literals:
        for b in literals:
            if a == b:
                continue
            if a in b or any(a.endswith(b[:k]) for k in range(1, min(len(a), len(b)))):
                return False
    return True


def stop_spec_for(stop: LiteralNode | RegexNode | None, suffix: LiteralNode | None) -> StopSpec | None:
    """Lower a RuleNode's stop/suffix into a `StopSpec`; None when nothing ends the gen early.

    A gen with both a stop and a suffix is refused, as llguidance refuses it when a local model compiles the
    program ("multiple stop/suffix conditions"): which one ends the gen and what is written would be a guess.
    """
    if suffix is not None and stop is not None:
        raise InvalidProgramError(
            f"gen() cannot have both a stop and a suffix (stop {_describe_stop(stop)}, suffix {suffix.value!r}); "
            "guidance refuses this program on a local model too: keep one and write the other as text"
        )
    if suffix is not None and suffix.value:
        return StopSpec(literals=[suffix.value], emit_suffix=suffix.value)
    if stop is None:
        return None
    if isinstance(stop, LiteralNode):
        if not isinstance(stop.value, str):
            raise InvalidProgramError(f"stop must be a string, got {type(stop.value).__name__}")
        return StopSpec(literals=[stop.value]) if stop.value else None
    if stop.regex is None:
        return None
    literals = literal_alternatives(stop.regex)
    if literals is not None and _cannot_overlap(literals):
        return StopSpec(literals=literals)
    # Stops whose occurrences can overlap (["a11", "1"]) leave which text is the stop to llguidance's lexer,
    # as a local model does, so they take the regex path.
    compiled_stop_regex(stop.regex)  # an invalid regex fails here, before any request
    return StopSpec(regex=stop.regex)


def _describe_stop(stop: LiteralNode | RegexNode) -> str:
    if isinstance(stop, RegexNode):
        return f"regex {stop.regex!r}"
    return repr(stop.value)


# --------------------------------------------------------------------------- stop_regex with llguidance


@lru_cache(maxsize=1)
def _byte_tokenizer() -> llguidance.LLTokenizer:
    """guidance's byte-level tokenizer (one token per byte), the one its local engine runs on."""
    from guidance.models._byte_tokenizer import ByteTokenizer

    return ByteTokenizer()._ll_tokenizer


def _matcher(regex: str, what: str) -> llguidance.LLMatcher:
    tokenizer = _byte_tokenizer()
    try:
        grammar = llguidance.LLMatcher.grammar_from_regex(regex)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    except Exception as exc:  # noqa: BLE001 - llguidance raises several types for regexes it cannot read
        is_error, messages = True, [str(exc)]
    if is_error:
        raise InvalidProgramError(f"invalid stop_regex {what!r}: {(messages or ['refused'])[0].strip()}")
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise InvalidProgramError(f"invalid stop_regex {what!r}: {matcher.get_error()}")
    return matcher


@dataclass(frozen=True)
class CompiledStopRegex:
    """Template matchers for one stop regex; scanners deep-copy them (microseconds), never recompile.

    ``search`` accepts exactly the texts that end with a match; ``anchored`` accepts the matches themselves
    and tells whether a text can still become one.
    """

    regex: str
    search: llguidance.LLMatcher
    anchored: llguidance.LLMatcher
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    lexer: list[llguidance.LLInterpreter] = field(default_factory=list, compare=False)

    def copy(self, which: str) -> llguidance.LLMatcher:
        with self.lock:  # a template is shared by threads; copying is the only thing done to it
            return (self.search if which == "search" else self.anchored).deep_copy()

    def gen_interpreter(self) -> llguidance.LLInterpreter:
        """A fresh llguidance interpreter of ``gen(stop_regex=regex)``: the grammar a local model runs."""
        with self.lock:
            if not self.lexer:
                from guidance._grammar import gen as grammar_gen

                grammar = grammar_gen(stop_regex=self.regex, name="body", stop_capture="stop").ll_grammar()
                self.lexer.append(llguidance.LLInterpreter(_byte_tokenizer(), grammar, True, True, log_level=0))
            return self.lexer[0].deep_copy()


@lru_cache(maxsize=256)
def compiled_stop_regex(regex: str) -> CompiledStopRegex:
    """The compiled matchers for `regex`, in llguidance's dialect; `InvalidProgramError` if it is invalid."""
    anchored = _matcher(regex, regex)
    search = _matcher(f"(?s:.*)(?:{regex})", regex)
    return CompiledStopRegex(regex, search, anchored)


def _feed(matcher: llguidance.LLMatcher, data: bytes) -> bool:
    """Feed `data`; False (and the matcher left unusable) when the matcher refuses a byte."""
    return bool(matcher.try_consume_tokens(list(data)) == len(data))


def _feed_char(matcher: llguidance.LLMatcher, char: str) -> bool:
    """Feed one character's UTF-8 bytes (an ASCII character is one token: the common case, kept cheap)."""
    code = ord(char)
    if code < 0x80:
        return bool(matcher.try_consume_tokens([code]) == 1)
    return _feed(matcher, char.encode())


class _RegexStops:
    """Earliest stop of one regex in text fed character by character, each character once.

    Also tracks where the leftmost text that may still begin a stop starts (`hold_from`): text before it can
    be shown, text from it on is held back until decided. Finding the next such start after one dies costs a
    re-scan; that work is bounded by a multiple of the text length, past which everything from the last known
    start is held (never wrong, only later shown).
    """

    _RESCAN_FACTOR = 2
    _RESCAN_SLACK = 4096

    def __init__(self, regex: str) -> None:
        self.compiled = compiled_stop_regex(regex)
        self._search = self.compiled.copy("search")
        self._candidate: llguidance.LLMatcher | None = None
        self._starts_a_stop: dict[str, bool] = {}
        self._rescan_work = 0
        self._gave_up = False
        self.hold_from = 0
        self.immediate = self._search.is_accepting()  # the regex matches the empty text

    def feed(self, buffer: str, start: int) -> int | None:
        """`buffer[start:]` is new; return the end (character index) of the earliest stop, if one ended."""
        search = self._search
        for index in range(start, len(buffer)):
            char = buffer[index]
            if not _feed_char(search, char):  # cannot happen for valid text; treat as the end of matching
                return None
            if not self._gave_up:
                self._track_hold(buffer, index, char)
            if search.is_accepting():
                return index + 1
        return None

    def _track_hold(self, buffer: str, index: int, char: str) -> None:
        if self._candidate is not None:
            if not _feed_char(self._candidate, char):
                self._candidate = self._next_candidate(buffer, self.hold_from + 1, index + 1)
        elif self._can_start(char):
            self._candidate = self.compiled.copy("anchored")
            _feed_char(self._candidate, char)
            self.hold_from = index
        else:
            self.hold_from = index + 1

    def _can_start(self, char: str) -> bool:
        known = self._starts_a_stop.get(char)
        if known is None:
            known = _feed(self.compiled.copy("anchored"), char.encode())
            self._starts_a_stop[char] = known
        return known

    def _next_candidate(self, buffer: str, first: int, end: int) -> llguidance.LLMatcher | None:
        """The anchored matcher of the leftmost start in [first, end) whose text is still viable."""
        for start in range(first, end):
            if not self._can_start(buffer[start]):
                continue
            data = buffer[start:end].encode()
            self._rescan_work += len(data)
            if self._rescan_work > self._RESCAN_FACTOR * end + self._RESCAN_SLACK:
                self._gave_up = True  # hold from the last known start from now on
                return None
            matcher = self.compiled.copy("anchored")
            if _feed(matcher, data):
                self.hold_from = start
                return matcher
        self.hold_from = end
        return None

    def stop_start(self, buffer: str, end: int) -> int:
        """Where the stop text of the stop ending at `end` starts, as a local model's lexer decides it.

        Which text llguidance hides as the stop depends on every way the stop could still be matching at
        `end` (with stops ``a11|1`` and text ``a1``, it hides ``a1``), and each of those started at or after
        the leftmost text that may still begin a stop. So llguidance's own interpreter of the gen is run on
        the reply from there to `end`: usually a few characters; its cost is bounded by that window.
        """
        window_start = self._leftmost_viable(buffer, end)
        split = _lexer_split(self.compiled.gen_interpreter(), buffer[window_start:end])
        if split is None:  # llguidance did not end the gen exactly there: keep the shortest stop instead
            return self.shortest_start(buffer, end)
        return end - len(split)

    def _leftmost_viable(self, buffer: str, end: int) -> int:
        """The leftmost start whose text up to `end` may still be (or is) a stop."""
        if not self._gave_up:
            return min(self.hold_from, end)
        for start in range(self.hold_from, end):
            if self._can_start(buffer[start]) and self._viable(buffer, start, end):
                return start
        return end

    def _viable(self, buffer: str, start: int, end: int) -> bool:
        """Whether `buffer[start:end]` may still be (or is) a stop, fed in growing blocks until refused, so
        a candidate costs about as much as it survives, not the whole rest of the reply."""
        matcher = self.compiled.copy("anchored")
        position, block = start, 16
        while position < end:
            if not _feed(matcher, buffer[position : position + block].encode()):
                return False
            position += block
            block *= 2
        return True

    def shortest_start(self, buffer: str, end: int) -> int:
        """Start of the shortest match ending at `end`.

        "Some match of the text `buffer[w:end]` ends at its end" holds for w = 0 and, once false, stays false
        for larger w; its last true w is found by galloping then halving, so the cost is about the stop
        text's length times its logarithm, not the reply's.
        """

        def ends_with_match(w: int) -> bool:
            matcher = self.compiled.copy("search")
            return _feed(matcher, buffer[w:end].encode()) and bool(matcher.is_accepting())

        if ends_with_match(end):
            return end
        good, bad, step = 0, end, 1
        while step <= end:
            w = end - step
            if ends_with_match(w):
                good = w
                break
            bad = w
            step *= 2
        while bad - good > 1:
            middle = (good + bad) // 2
            if ends_with_match(middle):
                good = middle
            else:
                bad = middle
        return good


def _lexer_split(interpreter: llguidance.LLInterpreter, window: str) -> str | None:
    """The stop text llguidance's interpreter of the gen captures on `window`, or None if it does not stop
    exactly at the window's end."""
    found: dict[str, str] = {}

    def step() -> tuple[Any, bool]:
        mask, raw = interpreter.compute_mask()
        response = json.loads(raw)
        for item in response["progress"]:
            if item.get("object") == "capture":
                found[item["name"]] = bytes.fromhex(item["hex"]).decode("utf-8", errors="replace")
        return mask, bool(response["stop"])

    interpreter.process_prompt([])
    mask, stopped = step()
    for byte in window.encode():
        if stopped or mask is None or not mask[byte]:
            return None
        interpreter.commit_token(byte)
        mask, stopped = step()
    if not stopped or "stop" not in found or found.get("body", "") + found["stop"] != window:
        return None
    return found["stop"]


class StopScanner:
    """Feeds streamed text, holds back what may still turn into a stop, and finds the earliest stop.

    `feed` returns the text that is safe to show now; once a stop is found `done` is True, `stop_text` holds
    what matched and nothing after it is ever emitted.
    """

    def __init__(self, spec: StopSpec) -> None:
        self.spec = spec
        self._buffer = ""
        self._emitted = 0
        self._checked_end = 0
        self.done = False
        self.stop_text = ""
        self._regex = _RegexStops(spec.regex) if spec.regex else None

    def feed(self, text: str) -> str:
        if self.done:
            return ""
        self._buffer += text
        found = self._find()
        if found is not None:
            start, end = found
            self.done = True
            self.stop_text = self._buffer[start:end]
            out = self._buffer[self._emitted : start]
            self._buffer = self._buffer[:start]
            self._emitted = start
            return out
        safe = len(self._buffer) - self._holdback()
        out = self._buffer[self._emitted : safe] if safe > self._emitted else ""
        self._emitted = max(self._emitted, safe)
        return out

    def finish(self) -> str:
        """The stream ended: release what was held back (no stop was completed)."""
        if self.done:
            return ""
        if self._regex is not None and self._regex.immediate:
            self.done = True  # a regex matching the empty text stops before anything, as it does locally
            self._buffer = ""
            return ""
        out = self._buffer[self._emitted :]
        self._emitted = len(self._buffer)
        return out

    @property
    def stops_before_anything(self) -> bool:
        """The stop regex matches the empty text: the gen ends at once, with nothing generated."""
        return self._regex is not None and self._regex.immediate

    @property
    def text(self) -> str:
        """Everything before the stop (or everything, if none was found)."""
        return self._buffer

    def _find(self) -> tuple[int, int] | None:
        best: tuple[int, int] | None = None
        for lit in self.spec.literals:
            # Only a stop ending in the new text can be new; search from where it could start.
            start_from = max(0, self._checked_end - len(lit) + 1)
            idx = self._buffer.find(lit, start_from)
            if idx < 0:
                continue
            candidate = (idx, idx + len(lit))
            # The earliest end wins; at the same end, the shortest stop (as a local model's lexer decides).
            if best is None or candidate[1] < best[1] or (candidate[1] == best[1] and candidate[0] > best[0]):
                best = candidate
        if self._regex is not None:
            if self._regex.immediate:
                return (0, 0)
            end = self._regex.feed(self._buffer, self._checked_end)
            if end is not None and (best is None or end < best[1]):
                best = (self._regex.stop_start(self._buffer, end), end)
        self._checked_end = len(self._buffer)
        return best

    def _holdback(self) -> int:
        if self._regex is not None:
            return len(self._buffer) - max(self._regex.hold_from, self._emitted)
        hold = 0
        for lit in self.spec.literals:
            for k in range(min(len(lit) - 1, len(self._buffer)), 0, -1):
                if self._buffer.endswith(lit[:k]):
                    hold = max(hold, k)
                    break
        return hold
