"""Client-side stop handling for `gen(stop=..., stop_regex=..., suffix=..., save_stop_text=...)`.

DeepInfra's `stop` field takes at most 4 plain strings and does not say which one matched, so the plugin
sends literal stops to the server where that is enough and always scans the stream itself too. The scan
reproduces guidance's local semantics: generation ends at the earliest position where a stop (or the suffix)
has been completed; the capture is the text before it; the stop text is what matched (empty when the
model ended for another reason); a suffix is written out after the capture when it was reached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from guidance._ast import LiteralNode, RegexNode

from .errors import InvalidProgramError

API_STOP_LIMIT = 4

_META = set("\\+*?^$(){}[].|")


def literal_alternatives(regex: str) -> list[str] | None:
    """Recover the literal strings from a regex made by guidance's ``quote_regex`` + ``"|".join``.

    guidance turns ``gen(stop=["a", "b"])`` into the regex ``a|b`` with metacharacters escaped. If `regex`
    is such an alternation of literals, return them (so they can go to DeepInfra's `stop` field); if it
    uses any real regex feature, return None.
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(regex):
        ch = regex[i]
        if ch == "\\":
            if i + 1 >= len(regex) or regex[i + 1] not in _META:
                return None
            current.append(regex[i + 1])
            i += 2
            continue
        if ch == "|":
            parts.append("".join(current))
            current = []
        elif ch in _META:
            return None
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    if any(p == "" for p in parts):
        return None
    return parts


@dataclass
class StopSpec:
    """What ends a `gen`: literal strings and/or one regex, plus whether the ending text is emitted."""

    literals: list[str] = field(default_factory=list)
    regex: str | None = None
    emit_suffix: str | None = None

    @property
    def api_stops(self) -> list[str]:
        """The stop strings DeepInfra can apply on the server (never more than its documented 4)."""
        if self.regex is not None or self.emit_suffix is not None:
            # A suffix must be seen to be emitted; the server would strip it and not say whether it matched.
            return []
        return self.literals[:API_STOP_LIMIT]


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
    if literals is not None:
        return StopSpec(literals=literals)
    try:
        stop_pattern(stop.regex)
    except re.error as exc:
        raise InvalidProgramError(f"invalid stop_regex {stop.regex!r}: {exc}") from None
    return StopSpec(regex=stop.regex)


def _describe_stop(stop: LiteralNode | RegexNode) -> str:
    if isinstance(stop, RegexNode):
        return f"regex {stop.regex!r}"
    return repr(stop.value)


#: Global inline flags such as ``(?i)``: Python accepts them only at the very start of a pattern.
_LEADING_FLAGS = re.compile(r"(?:\(\?[aiLmsux]+\))+")


def stop_pattern(regex: str) -> re.Pattern[str]:
    """`regex` as the scanner uses it: a match that ends where the text scanned so far ends.

    Leading global flags stay in front of the wrapping group, where Python requires them.
    """
    flags = _LEADING_FLAGS.match(regex)
    head = flags.group(0) if flags else ""
    return re.compile(f"{head}(?:{regex[len(head) :]})\\Z", re.DOTALL)


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
        self._pattern = stop_pattern(spec.regex) if spec.regex else None

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
        out = self._buffer[self._emitted :]
        self._emitted = len(self._buffer)
        return out

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
            if idx >= 0 and (best is None or idx + len(lit) < best[1]):
                best = (idx, idx + len(lit))
        if self._pattern is not None:
            limit = best[1] if best is not None else len(self._buffer)
            for end in range(self._checked_end + 1, limit + 1):
                m = self._pattern.search(self._buffer, 0, end)
                if m is not None and m.end() > m.start():
                    if best is None or end < best[1]:
                        best = (m.start(), end)
                    break
        self._checked_end = len(self._buffer)
        return best

    def _holdback(self) -> int:
        if self._pattern is not None:
            # A regex match may start anywhere; keep it all until a stop or the end.
            return len(self._buffer) - self._emitted
        hold = 0
        for lit in self.spec.literals:
            for k in range(min(len(lit) - 1, len(self._buffer)), 0, -1):
                if self._buffer.endswith(lit[:k]):
                    hold = max(hold, k)
                    break
        return hold
