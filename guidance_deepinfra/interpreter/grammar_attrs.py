"""The sampling attributes one grammar request carries: each gen's own ``temperature`` and ``max_tokens``.

A local model applies a gen's attributes while that gen generates. A grammar sent to DeepInfra as one request
has one ``temperature`` and one ``max_tokens``, so:

* ``temperature``: every gen inside the grammar (and every Lark rule's ``temperature=`` attribute) that sets
  one must agree; that value is sent. Different temperatures in one grammar cannot be honoured in one request
  and are refused before any request (run the parts as separate statements).
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


def request_attributes(node: GrammarNode) -> RequestAttributes:
    """The attributes to send for `node`, or `InvalidProgramError` when its gens disagree on temperature."""
    temperatures: set[float] = set()
    bounded = False
    for part in _walk(node):
        if isinstance(part, RuleNode):
            if part.temperature is not None:
                temperatures.add(float(part.temperature))
            bounded = bounded or part.max_tokens is not None
        elif isinstance(part, LarkNode):
            temperatures.update(float(value) for value in _LARK_TEMPERATURE.findall(part.lark_grammar))
    if len(temperatures) > 1:
        shown = ", ".join(str(t) for t in sorted(temperatures))
        raise InvalidProgramError(
            f"one grammar mixes gens with different temperatures ({shown}): DeepInfra samples a request at one "
            "temperature, so they cannot be honoured together; run the parts as separate `lm +=` statements"
        )
    temperature = temperatures.pop() if temperatures else None
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

    A local model stops each gen at its own token limit. One request carries one ``max_tokens``: when the
    join's parts are all bounded it is their sum (`request_attributes`); when some part is unbounded, each gen
    with a limit at the top level of the join becomes a request of its own, and the text a local run gives is
    the same (each statement continues the text before it). A limit nested deeper is refused before any
    request by `request_attributes`. A gen whose multi-byte stop the next literal repeats is also run on its
    own (see `_stop_repeated_next`).
    """
    statements = split_statements(node, for_limits=_has_limit(node) and _bound(node, set()) is None)
    return statements if statements is not None and len(statements) > 1 else [node]
