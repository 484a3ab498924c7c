"""Client-side constraints: regex, Lark/CFG and mixed grammars generated, checked by llguidance, repaired.

Any grammar node the JSON mixin does not take (``gen(regex=...)``, ``regex()``, ``lark``/EBNF, ``select``
over non-literal alternatives, ``substring``, joins that are not self-contained, repeats, subgrammars) lands
here as a `RuleNode`. It is compiled once with llguidance (an invalid regex or grammar is refused before any
request), run through the strategy ladder in `enforcement.ladder`, and only text llguidance accepts is written to the
program. The program text and every capture (the node's own, nested ``gen(name=...)``, ``select(name=...)``,
``list_append``, ``save_stop_text``) come from llguidance's interpreter forced along the accepted answer
(`enforcement.follow`), so they are what a local model's run sets: hidden stops stay hidden.

What the program receives: the accepted text, i.e. the forced prefix plus the valid continuation. When a reply
holds more than a match (prose after it, or around one single embedded match), only the match is kept: the
longest prefix of the reply that is a complete match, else the one match embedded in it. A local model would
have stopped there, because the grammar allows nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from guidance._ast import RuleNode
from guidance.trace import OutputAttr, TextOutput

from ..interpreter.base import DeepInfraBaseInterpreter
from .follow import Followed
from .ladder import LADDER, GrammarLadder, LadderOptions, constraint_kind
from .matcher import compile_node


class GrammarMixin(DeepInfraBaseInterpreter):
    """Handles every grammar node that DeepInfra cannot enforce on the server."""

    #: Which rungs of the ladder run; benchmarks and tests switch rungs off on one model object.
    grammar_options: LadderOptions = LADDER

    def constrained_rule(self, node: RuleNode, **kwargs: Any) -> Iterator[OutputAttr]:
        compiled = compile_node(node)  # refuses an invalid regex or grammar before any request
        self._check_can_generate()
        if compiled.fully_forced:
            yield from self._write(compiled.follow(compiled.forced_prefix))
            return
        ladder = GrammarLadder(
            self,
            node,
            compiled,
            kind=constraint_kind(node),
            options=self.grammar_options,
            sampling_params=kwargs.get("sampling_params"),
        )
        followed = yield from ladder.run()
        yield from self._write(followed)

    def _write(self, followed: Followed) -> Iterator[OutputAttr]:
        """Write the local run's text and captures into the program."""
        if followed.text:
            self.state.apply_text(followed.text)
            yield TextOutput(value=followed.text, is_generated=True)
        for name, value in followed.captures.items():
            log_prob = followed.log_probs.get(name)
            if isinstance(value, list):
                each = log_prob if isinstance(log_prob, list) and len(log_prob) == len(value) else [None] * len(value)
                for item, item_log_prob in zip(value, each, strict=True):
                    yield self.state.apply_capture(name, item, log_prob=item_log_prob, is_append=True)
            else:
                yield self.state.apply_capture(name, value, log_prob=log_prob if isinstance(log_prob, float) else None)
