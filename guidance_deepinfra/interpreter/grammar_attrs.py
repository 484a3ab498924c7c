"""The sampling attributes one grammar request carries: each gen's own ``temperature`` and ``max_tokens``.

A local model applies a gen's attributes while that gen generates. A grammar sent to DeepInfra as one request
has one ``temperature`` and one ``max_tokens``, so:

* ``temperature``: every gen inside the grammar (and every Lark rule's ``temperature=`` attribute) that sets
  one must agree; that value is sent. Where the temperature changes between the top-level parts of a join,
  or between the items of a Lark grammar's ``start`` sequence, the grammar is split there into statements
  run one after the other (`request_statements`, `split_lark`), each request carrying its own temperature and
  continuing the text before it, as a local run samples each part at its own. Only temperatures that differ
  inside one part (a capture, a select, a Lark alternative) cannot be split and are refused before any request.
* ``max_tokens``: when the grammar sets any, the request's bound is the most tokens a local run could spend on
  the whole grammar (bounded gens count their ``max_tokens``, literal text its bytes, a select its longest
  option, a bounded repeat its count times its item): never less than a local run may use. When some part of
  the grammar is unbounded (a regex gen without ``max_tokens``, a Lark grammar), no bound can be computed and
  none is sent; the answer is checked all the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guidance._ast import GrammarNode, JoinNode, LarkNode, LiteralNode, RepeatNode, RuleNode, RuleRefNode, SelectNode

from ..errors import InvalidProgramError

_LARK_TEMPERATURE = re.compile(r"\btemperature\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


@dataclass(frozen=True)
class RequestAttributes:
    temperature: float | None = None
    max_tokens: int | None = None
    #: The grammar itself sets ``max_tokens`` somewhere (a reply cut at the bound is the model's end).
    user_bound: bool = False


def temperatures(node: GrammarNode) -> set[float]:
    """Every temperature a gen (or a Lark rule) inside `node` asks for."""
    found: set[float] = set()
    for part in _walk(node):
        if isinstance(part, RuleNode) and part.temperature is not None:
            found.add(float(part.temperature))
        elif isinstance(part, LarkNode):
            found.update(_LarkRules(part.lark_grammar).reached("start"))
    return found


def request_attributes(node: GrammarNode) -> RequestAttributes:
    """The attributes to send for `node`, or `InvalidProgramError` when its gens disagree on temperature."""
    found = temperatures(node)
    bounded = any(isinstance(part, RuleNode) and part.max_tokens is not None for part in _walk(node))
    if len(found) > 1:
        shown = ", ".join(str(t) for t in sorted(found))
        raise InvalidProgramError(
            f"one part of this grammar mixes different temperatures ({shown}) where it cannot be split (inside "
            "a capture, a select or a Lark alternative): DeepInfra samples a request at one temperature, so they "
            "cannot be honoured together; give the part one temperature, or make the parts with different "
            "temperatures consecutive parts of a `+` join or of a Lark grammar's start rule"
        )
    temperatures_ = found
    temperature = temperatures_.pop() if temperatures_ else None
    max_tokens = _bound(node, set()) if bounded else None
    if bounded and max_tokens is None and split_statements(node) is None:
        raise InvalidProgramError(
            "a gen's max_tokens inside this grammar cannot be honoured: another part of the grammar is unbounded, "
            "so no max_tokens can be sent for its one request, and DeepInfra's tokens cannot be counted on the "
            "client; put the gen with max_tokens at the top level of the `+` join or in its own `lm +=` statement "
            "(it then runs as a request of its own), or bound the other parts"
        )
    return RequestAttributes(temperature=temperature, max_tokens=max_tokens or None, user_bound=bounded)


def _walk(node: GrammarNode) -> list[GrammarNode]:
    found: list[GrammarNode] = []
    seen: set[int] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        pending.extend(current.children())
        if isinstance(current, RuleRefNode) and current.target is not None:
            pending.append(current.target)
    return found


def _bound(node: GrammarNode, active: set[int]) -> int | None:
    """The most tokens a local run spends on `node` (a token holds at least one byte), or None if unbounded."""
    if id(node) in active:
        return None  # recursion
    if isinstance(node, LiteralNode):
        return len(node.value.encode())
    active = active | {id(node)}
    if isinstance(node, RuleNode):
        inner = _bound(node.value, active)
        if node.max_tokens is not None:
            inner = node.max_tokens if inner is None else min(inner, node.max_tokens)
        if inner is None:
            return None
        stop = len(node.stop.value.encode()) if isinstance(node.stop, LiteralNode) else 0
        suffix = len(node.suffix.value.encode()) if node.suffix is not None else 0
        return inner + stop + suffix
    if isinstance(node, JoinNode):
        parts = [_bound(part, active) for part in node.nodes]
        return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)
    if isinstance(node, SelectNode):
        options = [_bound(option, active) for option in node.alternatives]
        return None if any(o is None for o in options) else max((o for o in options if o is not None), default=0)
    if isinstance(node, RepeatNode) and node.max is not None:
        item = _bound(node.node, active)
        return None if item is None else item * node.max
    return None


def _flat_parts(node: JoinNode) -> list[GrammarNode]:
    parts: list[GrammarNode] = []
    for part in node.nodes:
        parts.extend(_flat_parts(part) if isinstance(part, JoinNode) else [part])
    return parts


def _has_limit(node: GrammarNode) -> bool:
    return any(isinstance(part, RuleNode) and part.max_tokens is not None for part in _walk(node))


def _stop_repeated_next(parts: list[GrammarNode], index: int) -> bool:
    """A gen whose multi-byte stop string begins the literal text forced right after it (``gen(stop="==") +
    "== "``): llguidance 1.5 fails internally on that grammar (a local run raises the same failure), while the
    two parts run one after the other, as two statements, give the text the program describes."""
    part = parts[index]
    following = parts[index + 1] if index + 1 < len(parts) else None
    stop = part.stop if isinstance(part, RuleNode) else None
    return (
        isinstance(stop, LiteralNode)
        and len(stop.value.encode()) > 1
        and isinstance(following, LiteralNode)
        and following.value.startswith(stop.value)
    )


def split_statements(node: GrammarNode, *, for_limits: bool = True) -> list[GrammarNode] | None:
    """`node` split into statements run one after the other: each top-level gen whose stop the next text
    repeats, and (`for_limits`) each top-level gen with ``max_tokens``, becomes a statement of its own.

    None when that does not give every statement a bound it can send: the node is not a join, or a limit
    sits inside a part that is not bounded as a whole.
    """
    if not isinstance(node, JoinNode):
        return None
    parts = _flat_parts(node)
    statements: list[GrammarNode] = []
    group: list[GrammarNode] = []

    def close_group() -> None:
        if group:
            statements.append(group[0] if len(group) == 1 else JoinNode(tuple(group)))
            group.clear()

    for index, part in enumerate(parts):
        limited = for_limits and isinstance(part, RuleNode) and part.max_tokens is not None
        if limited or _stop_repeated_next(parts, index):
            close_group()
            statements.append(part)
        else:
            group.append(part)
    close_group()
    if for_limits and any(_has_limit(s) for s in statements if not (isinstance(s, RuleNode) and s.max_tokens)):
        return None
    return statements


def request_statements(node: JoinNode) -> list[GrammarNode]:
    """The join as one grammar and one request, or split into statements run one after the other.

    A local model samples each gen at its own temperature and stops it at its own token limit. One request
    carries one ``temperature``: the join is first split where the temperature changes between its top-level
    parts (`temperature_groups`). One request carries one ``max_tokens``: when a group's parts are all bounded
    it is their sum (`request_attributes`); when some part is unbounded, each gen with a limit at the top level
    becomes a request of its own, and the text a local run gives is the same (each statement continues the
    text before it). A limit nested deeper is refused before any request by `request_attributes`. A gen whose
    multi-byte stop the next literal repeats is also run on its own (see `_stop_repeated_next`).
    """
    out: list[GrammarNode] = []
    for group in temperature_groups(node):
        if not isinstance(group, JoinNode):
            out.append(group)
            continue
        statements = split_statements(group, for_limits=_has_limit(group) and _bound(group, set()) is None)
        out.extend(statements if statements is not None and len(statements) > 1 else [group])
    return out


def temperature_groups(node: JoinNode) -> list[GrammarNode]:
    """The join's top-level parts grouped into runs that ask for one temperature (or none).

    Text and other parts that ask for none join the group after them (they are sent as the start of that
    request, its assistant prefix), or the last group at the end; a part that itself mixes temperatures stands
    alone (a Lark grammar is split by `split_lark`; anything else is refused by `request_attributes`).
    """
    parts: list[GrammarNode] = []
    for part in _flat_parts(node):
        pieces = split_lark(part) if len(temperatures(part)) > 1 else None
        parts.extend(pieces or [part])
    groups: list[list[GrammarNode]] = []
    current: list[GrammarNode] = []
    current_temperature: float | None = None
    pending: list[GrammarNode] = []
    for part in parts:
        found = temperatures(part)
        if not found:
            pending.append(part)
            continue
        temperature = next(iter(found)) if len(found) == 1 else None
        if current and (
            temperature is None or (current_temperature is not None and temperature != current_temperature)
        ):
            groups.append(current)
            current = []
        current.extend([*pending, part])
        pending = []
        current_temperature = temperature
        if temperature is None:  # a part mixing temperatures is a statement of its own
            groups.append(current)
            current, current_temperature = [], None
    current.extend(pending)
    if current:
        groups.append(current)
    if len(groups) <= 1:
        return [node]
    return [group[0] if len(group) == 1 else JoinNode(tuple(group)) for group in groups]


# --------------------------------------------------------------------------- Lark grammars

_RULE_HEAD = re.compile(r"^(?P<name>[?!]?[A-Za-z_]\w*)[ \t]*(?:\[(?P<attrs>[^\]\n]*)\])?[ \t]*:", re.M)
_DIRECTIVE = re.compile(r"^%", re.M)
_ITEM = re.compile(
    r"""\s*(?:"(?:[^"\\]|\\.)*"i?|/(?:[^/\\]|\\.)+/[a-z]*|@?[A-Za-z_]\w*(?:\[[^\]]*\])?|\((?:[^()"/]|"(?:[^"\\]|\\.)*"|/(?:[^/\\]|\\.)+/)*\))[?*+]?(?:\{[^}]*\})?"""
)
_NAME = re.compile(r"(?<![\w\"/])[A-Za-z_]\w*")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|/(?:[^/\\]|\\.)+/')


class _LarkRules:
    """The rules of a Lark grammar text: each rule's body and attributes, and the temperatures a part of it
    reaches (its own ``temperature=`` attributes and those of every rule it refers to, transitively)."""

    def __init__(self, text: str) -> None:
        self.text = text
        heads = list(_RULE_HEAD.finditer(text))
        ends = sorted([m.start() for m in heads] + [m.start() for m in _DIRECTIVE.finditer(text)] + [len(text)])
        self.bodies: dict[str, tuple[int, int]] = {}
        self.attrs: dict[str, str] = {}
        for head in heads:
            name = head.group("name").lstrip("?!")
            self.bodies[name] = (head.end(), next(e for e in ends if e > head.start()))
            self.attrs[name] = head.group("attrs") or ""

    def reached(self, item: str) -> set[float]:
        """The temperatures `item` (a rule name, or a piece of a rule body) asks for, nested rules included;
        every temperature in the text when the grammar has no rule of that name (it could not be read)."""
        if item == "start" and "start" not in self.bodies:
            return {float(v) for v in _LARK_TEMPERATURE.findall(self.text)}
        found = {float(v) for v in _LARK_TEMPERATURE.findall(item if item not in self.bodies else "")}
        seen: set[str] = set()
        pending = [item] if item in self.bodies else _NAME.findall(_STRINGS.sub("", item))
        while pending:
            name = pending.pop()
            if name in seen or name not in self.bodies:
                continue
            seen.add(name)
            found.update(float(v) for v in _LARK_TEMPERATURE.findall(self.attrs[name]))
            begin, end = self.bodies[name]
            pending.extend(_NAME.findall(_STRINGS.sub("", self.text[begin:end])))
        return found

    def start_items(self) -> list[str] | None:
        """The items of the ``start`` rule when it is one sequence (no alternatives), else None."""
        if "start" not in self.bodies:
            return None
        begin, end = self.bodies["start"]
        body = self.text[begin:end]
        if "|" in _STRINGS.sub("", body):
            return None
        items: list[str] = []
        at, stop = 0, len(body.rstrip())
        while at < stop:
            match = _ITEM.match(body, at)
            if match is None or match.end() == at:
                return None
            items.append(match.group(0).strip())
            at = match.end()
        return items

    def with_start(self, items: list[str]) -> str:
        """The grammar text with the ``start`` sequence replaced by `items`."""
        begin, end = self.bodies["start"]
        return self.text[:begin] + " " + " ".join(items) + "\n" + self.text[end:]


def split_lark(node: GrammarNode) -> list[GrammarNode] | None:
    """A Lark grammar whose ``start`` rule is one sequence of items asking for different temperatures, as
    grammars that each cover a run of items of one temperature (the same rules, the start sequence cut where the
    temperature changes); None when it cannot be split so (alternatives in ``start``, an item that itself mixes
    temperatures, a capture, a temperature or a max_tokens around the whole grammar, or nothing to split).

    Items that ask for no temperature go with the run after them (they begin that request), or the last run."""
    if not isinstance(node, RuleNode) or node.capture is not None or node.temperature is not None:
        return None
    if node.max_tokens is not None or not isinstance(node.value, LarkNode):
        return None
    rules = _LarkRules(node.value.lark_grammar)
    items = rules.start_items()
    if items is None:
        return None
    runs: list[list[str]] = []
    run_temperature: float | None = None
    pending: list[str] = []
    for item in items:
        found = rules.reached(item)
        if len(found) > 1:
            return None  # one item mixes temperatures: nothing here splits it
        if not found:
            pending.append(item)
            continue
        temperature = next(iter(found))
        if not runs or temperature != run_temperature:
            runs.append([])
        runs[-1].extend([*pending, item])
        pending, run_temperature = [], temperature
    if len(runs) < 2:
        return None
    runs[-1].extend(pending)
    return [RuleNode(name=node.name, value=LarkNode(lark_grammar=rules.with_start(run))) for run in runs]
