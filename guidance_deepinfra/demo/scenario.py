"""What a demo scenario is, and the set each scenario module fills: shared by the demo and its scenarios.

The scenario modules (`scenarios_json`, `scenarios_grammar`) and the demo's own chat scenarios each build a
`ScenarioSet`; the demo reads them in a fixed order. Nothing here imports the demo, so scenarios never import
the module that runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..model import DEFAULT_MODEL, DeepInfra
from ..testing.fake_server import Reply

Program = Callable[[DeepInfra], dict[str, Any]]
Check = Callable[[dict[str, Any]], None]


@dataclass
class Scenario:
    """A demo program, what its result must satisfy, and the replies used to synthesize its cassette."""

    name: str
    description: str
    program: Program
    check: Check
    synthetic: list[Reply] = field(default_factory=list)
    model: str = DEFAULT_MODEL
    model_kwargs: dict[str, Any] = field(default_factory=dict)


class ScenarioSet:
    """Scenarios in the order they are declared; `scenario` is the decorator that declares one."""

    def __init__(self) -> None:
        self._scenarios: dict[str, Scenario] = {}

    def __iter__(self) -> Iterator[Scenario]:
        return iter(self._scenarios.values())

    def scenario(
        self,
        name: str,
        description: str,
        *,
        synthetic: list[Reply],
        check: Check,
        model: str = DEFAULT_MODEL,
        **model_kwargs: Any,
    ) -> Callable[[Program], Program]:
        def register(program: Program) -> Program:
            self._scenarios[name] = Scenario(name, description, program, check, synthetic, model, model_kwargs)
            return program

        return register
