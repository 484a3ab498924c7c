"""Translating a regular guidance grammar into a server-side constraint: a regex, a JSON Schema
``pattern``, or an ``enum``.

The translation must never widen the language: whatever the server lets through must also be accepted by
llguidance (it is checked afterwards anyway, since server enforcement is unverified). Narrowing is allowed,
because every string the server can produce is then one a local model could produce. Dialect differences
between llguidance's regex (Rust ``regex-syntax``) and ECMA-262 (JSON Schema ``pattern``), and how each is
handled:

- ``\\d``, ``\\w``, ``\\s`` are Unicode classes in llguidance, ASCII (or different) in ECMA: written as the
  ASCII classes ``[0-9]``, ``[A-Za-z0-9_]``, ``[\\t\\n\\v\\f\\r ]`` (narrower).
- ``\\D``, ``\\W``, ``\\S``, ``\\p{..}``, ``\\b``, anchors, inline flags ``(?i)``, class set operations
  (``&&``, ``--``, ``~~``), nested or POSIX classes, and shorthand escapes inside a negated class would
  widen or change the meaning: such grammars are not sent to the server at all.
- ``.`` excludes only ``\\n`` in llguidance and also ``\\r``, U+2028, U+2029 in ECMA (narrower): kept.
- Named groups ``(?P<n>..)`` become ``(?:..)``; lazy quantifiers become greedy (same language for a full
  match).
- ECMA ``pattern`` is a search, so the translation is anchored as ``^(?:...)$``.
- Characters outside the Basic Multilingual Plane are refused (ECMA without the ``u`` flag sees them as two
  code units).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from guidance._ast import (
    GrammarNode,
    JoinNode,
    LiteralNode,
    RegexNode,
    RepeatNode,
    RuleNode,
    SelectNode,
)

#: Largest finite language sent as an ``enum``.
ENUM_LIMIT = 64

_SHORTHAND = {"d": "0-9", "w": "A-Za-z0-9_", "s": "\\t\\n\\v\\f\\r "}
_SIMPLE_ESCAPES = {"n": "\\n", "t": "\\t", "r": "\\r", "f": "\\f", "v": "\\v"}
_ECMA_META = set("\\^$.|?*+()[]{}/")
#: The characters guidance's ``quote_regex`` escapes when it turns a gen's stop strings into a regex.
_STOP_META = set("\\+*?^$(){}[].|")


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
            if i + 1 >= len(regex) or regex[i + 1] not in _STOP_META:
                return None
            current.append(regex[i + 1])
            i += 2
            continue
        if ch == "|":
            parts.append("".join(current))
            current = []
        elif ch in _STOP_META:
            return None
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    if any(p == "" for p in parts):
        return None
    return parts


class Untranslatable(Exception):
    """The grammar has no safe server-side form."""


@dataclass(frozen=True)
class ServerForm:
    """A server-side rendering of a regular grammar: `regex` (unanchored, full-match) and maybe `enum`."""

    regex: str
    enum: tuple[str, ...] | None = None

    @property
    def anchored(self) -> str:
        return f"^(?:{self.regex})$"

    def json_schema(self) -> dict[str, object]:
        if self.enum is not None:
            return {"type": "string", "enum": list(self.enum)}
        return {"type": "string", "pattern": self.anchored}


def server_form(node: GrammarNode, skip: str = "") -> ServerForm | None:
    """The server-side form of `node`, or None when it cannot be sent without changing its meaning.

    `skip` is literal text the grammar starts with that is already in the assistant message (the forced
    prefix); it is left out of the form, or None is returned when it is not a run of leading literals.
    """
    parts = _flatten(node)
    while skip and parts:
        head = parts[0]
        if not isinstance(head, LiteralNode):
            return None
        if skip.startswith(head.value):
            skip = skip[len(head.value) :]
            parts = parts[1:]
        elif head.value.startswith(skip):
            parts = [LiteralNode(head.value[len(skip) :]), *parts[1:]]
            skip = ""
        else:
            return None
    if skip:
        return None
    rest: GrammarNode = parts[0] if len(parts) == 1 else JoinNode(tuple(parts)) if parts else LiteralNode("")
    try:
        regex = _node_regex(rest)
    except Untranslatable:
        return None
    return ServerForm(regex=regex, enum=_finite(rest))


def is_regular(node: GrammarNode) -> bool:
    """Whether `node` is built only from literals, regexes, selects, joins, repeats and plain rules."""
    if isinstance(node, LiteralNode):
        return True
    if isinstance(node, RegexNode):
        return node.regex is not None
    if isinstance(node, RuleNode) and (node.stop is not None or node.suffix is not None or node.lazy):
        return False
    if isinstance(node, (SelectNode, JoinNode, RepeatNode, RuleNode)):
        return all(is_regular(child) for child in node.children())
    return False


def _flatten(node: GrammarNode) -> list[GrammarNode]:
    """The sequence of parts of nested joins (through plain rules, whose captures do not matter here)."""
    if isinstance(node, RuleNode) and node.stop is None and node.suffix is None and not node.lazy:
        return _flatten(node.value)
    if isinstance(node, JoinNode):
        return [part for child in node.nodes for part in _flatten(child)]
    return [node]


def _node_regex(node: GrammarNode) -> str:
    if isinstance(node, LiteralNode):
        return _escape_literal(node.value)
    if isinstance(node, RegexNode):
        if node.regex is None:
            raise Untranslatable("free text")
        return f"(?:{translate_regex(node.regex)})"
    if isinstance(node, SelectNode):
        if not node.alternatives:
            raise Untranslatable("empty select")
        return "(?:" + "|".join(_node_regex(a) for a in node.alternatives) + ")"
    if isinstance(node, JoinNode):
        return "".join(_node_regex(n) for n in node.nodes)
    if isinstance(node, RepeatNode):
        upper = "" if node.max is None else str(node.max)
        return f"(?:{_node_regex(node.node)}){{{node.min},{upper}}}"
    if isinstance(node, RuleNode):
        if node.stop is not None or node.suffix is not None or node.stop_capture is not None or node.lazy:
            raise Untranslatable("stop conditions")
        return _node_regex(node.value)
    raise Untranslatable(type(node).__name__)


def _finite(node: GrammarNode) -> tuple[str, ...] | None:
    """All strings of a small finite language, or None."""
    try:
        values = _finite_set(node)
    except Untranslatable:
        return None
    if not values or len(values) > ENUM_LIMIT:
        return None
    return tuple(sorted(values))


def _finite_set(node: GrammarNode) -> set[str]:
    if isinstance(node, LiteralNode):
        return {node.value}
    if isinstance(node, RegexNode) and node.regex is not None:
        literals = literal_alternatives(node.regex)
        if literals is None:
            raise Untranslatable("infinite or not literal")
        return set(literals)
    if isinstance(node, SelectNode):
        out: set[str] = set()
        for alternative in node.alternatives:
            out |= _finite_set(alternative)
            if len(out) > ENUM_LIMIT:
                raise Untranslatable("too many")
        return out
    if isinstance(node, JoinNode):
        combined = {""}
        for part in node.nodes:
            combined = {a + b for a, b in itertools.product(combined, _finite_set(part))}
            if len(combined) > ENUM_LIMIT:
                raise Untranslatable("too many")
        return combined
    if isinstance(node, RuleNode) and node.stop is None and node.suffix is None:
        return _finite_set(node.value)
    raise Untranslatable(type(node).__name__)


def _escape_literal(text: str) -> str:
    _check_bmp(text)
    return "".join("\\" + ch if ch in _ECMA_META else _plain_char(ch) for ch in text)


def _plain_char(ch: str) -> str:
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"\\x{ord(ch):02x}"
    return ch


def _check_bmp(text: str) -> None:
    if any(ord(ch) > 0xFFFF for ch in text):
        raise Untranslatable("astral characters")


_QUANTIFIER = re.compile(r"\{(\d+)(,(\d*))?\}")


def translate_regex(regex: str) -> str:
    """Rewrite an llguidance regex in the conservative ECMA subset described above, or raise Untranslatable."""
    _check_bmp(regex)
    out: list[str] = []
    i = 0
    depth = 0
    atom_ready = False  # whether a quantifier may follow
    while i < len(regex):
        ch = regex[i]
        if ch == "\\":
            piece, i = _escape(regex, i, in_class=False)
            out.append(piece)
            atom_ready = True
            continue
        if ch == "[":
            piece, i = _char_class(regex, i)
            out.append(piece)
            atom_ready = True
            continue
        if ch == "(":
            if regex.startswith("(?:", i):
                i += 3
            elif regex.startswith("(?P<", i) or (regex.startswith("(?<", i) and regex[i + 3 : i + 4] not in ("=", "!")):
                close = regex.find(">", i)
                if close < 0 or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", regex[regex.find("<", i) + 1 : close]):
                    raise Untranslatable("bad group name")
                i = close + 1
            elif regex.startswith("(?", i):
                raise Untranslatable("flags or lookaround")
            else:
                i += 1
            out.append("(?:")
            depth += 1
            atom_ready = False
            continue
        if ch == ")":
            if depth == 0:
                raise Untranslatable("unbalanced")
            depth -= 1
            out.append(")")
            atom_ready = True
            i += 1
            continue
        if ch in "*+?":
            if not atom_ready:
                raise Untranslatable("quantifier without atom")
            out.append(ch)
            i += 1
            if i < len(regex) and regex[i] in "?+":
                i += 1  # lazy/possessive: same language for a full match
            atom_ready = False
            continue
        if ch == "{":
            m = _QUANTIFIER.match(regex, i)
            if m is None or not atom_ready:
                raise Untranslatable("brace")
            out.append(m.group(0))
            i = m.end()
            if i < len(regex) and regex[i] == "?":
                i += 1
            atom_ready = False
            continue
        if ch == "|":
            out.append("|")
            atom_ready = False
            i += 1
            continue
        if ch in "^$":
            raise Untranslatable("anchor")
        if ch in "}]":
            raise Untranslatable("stray bracket")
        if ch == ".":
            out.append(".")
        elif ch == "/":
            out.append("\\/")
        else:
            out.append(_plain_char(ch))
        atom_ready = True
        i += 1
    if depth:
        raise Untranslatable("unbalanced")
    return "".join(out)


def _escape(regex: str, i: int, *, in_class: bool) -> tuple[str, int]:
    if i + 1 >= len(regex):
        raise Untranslatable("trailing backslash")
    nxt = regex[i + 1]
    if nxt in _SHORTHAND:
        body = _SHORTHAND[nxt]
        return (body if in_class else f"[{body}]"), i + 2
    if nxt in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[nxt], i + 2
    if nxt == "x":
        m = re.match(r"\\x([0-9A-Fa-f]{2})", regex[i:])
        if m is None:
            raise Untranslatable("long hex escape")
        return m.group(0), i + 4
    if not nxt.isalnum() and nxt.isascii() and nxt not in " \t\n":
        return "\\" + nxt, i + 2
    raise Untranslatable(f"escape \\{nxt}")


def _char_class(regex: str, i: int) -> tuple[str, int]:
    """Translate ``[...]`` starting at `i`; return the ECMA text and the index after it."""
    j = i + 1
    negated = j < len(regex) and regex[j] == "^"
    if negated:
        j += 1
    parts: list[str] = []
    first = True
    while True:
        if j >= len(regex):
            raise Untranslatable("unclosed class")
        ch = regex[j]
        if ch == "]" and not first:
            j += 1
            break
        if ch == "[":
            raise Untranslatable("nested or POSIX class")
        if regex.startswith(("&&", "--", "~~"), j):
            raise Untranslatable("class set operation")
        if ch == "\\":
            nxt = regex[j + 1 : j + 2]
            if negated and nxt in _SHORTHAND:
                raise Untranslatable("shorthand in a negated class")
            piece, j = _escape(regex, j, in_class=True)
            parts.append(piece)
        elif ch in "]^-":
            # a literal ']' first, or '^'/'-' placed literally; '-' between members stays a range
            parts.append("-" if ch == "-" else "\\" + ch)
            j += 1
        else:
            parts.append(_plain_char(ch))
            j += 1
        first = False
    return ("[^" if negated else "[") + "".join(parts) + "]", j
