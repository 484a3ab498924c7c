"""Example programs that double as the cassette suite.

Each `Scenario` is a small guidance program plus a check of its result. `guidance-deepinfra demo` runs them
live when ``DEEPINFRA_API_KEY`` is set and otherwise replays the cassettes in ``cassettes/`` (no network).
The cassettes in the repository are synthesized: each scenario's replies are scripted here (``synthetic=``)
and served in DeepInfra's wire format by the loopback fake server, with the fake server's fixed price per
token as their cost. ``--record`` re-records them live and ``--synthesize`` rebuilds them from the scripts;
``cassettes/provenance.json`` says which each one is; the demo explains each kind once and names each
scenario's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from guidance import assistant, gen, system, user

from ..model import DeepInfra
from ..profile import ProfileRegistry
from ..testing.fake_server import Reply
from . import modes as _modes
from . import provenance as _provenance
from . import scenarios_grammar, scenarios_json, scenarios_reasoning
from .modes import REPLAY_KEY as REPLAY_KEY  # the key sent offline
from .modes import make_vcr as make_vcr  # vcrpy as the cassettes use it
from .scenario import Scenario, ScenarioSet

CHAT = ScenarioSet()
scenario = CHAT.scenario


# --------------------------------------------------------------------------- the scenarios


def _check_capital(result: dict[str, Any]) -> None:
    assert result["city"].strip(), "empty capture"
    assert "." not in result["city"], "stop text leaked into the capture"
    assert result["text"].endswith("The capital of France is " + result["city"])


@scenario(
    "prefill_stop",
    "Prefilled assistant text continued by DeepInfra, ended by a stop string.",
    synthetic=[Reply.text("Paris.", completion_tokens=2, prompt_tokens=31)],
    check=_check_capital,
)
def prefill_stop(lm: DeepInfra) -> dict[str, Any]:
    with system():
        lm += "You answer in one short sentence."
    with user():
        lm += "What is the capital of France?"
    with assistant():
        lm += "The capital of France is " + gen("city", stop=".", max_tokens=10, temperature=0)
    return {"city": lm["city"], "text": str(lm), "usage": lm.usage.summary()}


def _check_haiku(result: dict[str, Any]) -> None:
    assert result["haiku"].strip(), "empty capture"
    assert result["calls"] == 2


@scenario(
    "multi_turn",
    "A two-turn conversation with gen(max_tokens) in each assistant turn.",
    synthetic=[
        Reply.text("Rain taps the window\nsoft grey light on the teacup\nthe kettle answers", prompt_tokens=28),
        Reply.text("Autumn rain.", prompt_tokens=70, completion_tokens=3),
    ],
    check=_check_haiku,
)
def multi_turn(lm: DeepInfra) -> dict[str, Any]:
    with user():
        lm += "Write a haiku about rain."
    with assistant():
        lm += gen("haiku", max_tokens=40, temperature=0)
    with user():
        lm += "Give it a title of at most three words."
    with assistant():
        lm += gen("title", max_tokens=10, temperature=0)
    return {"haiku": lm["haiku"], "title": lm["title"], "calls": lm.usage.calls, "usage": lm.usage.summary()}


#: Every scenario by name, in the order the demo runs them: chat, then grammar and json constraints (those
#: live beside the code they exercise and are read from their modules' own sets).
SCENARIOS: dict[str, Scenario] = {
    sc.name: sc
    for group in (CHAT, scenarios_grammar.SCENARIOS, scenarios_json.SCENARIOS, scenarios_reasoning.SCENARIOS)
    for sc in group
}

# --------------------------------------------------------------------------- running


def default_cassette_dir() -> Path:
    here = Path.cwd() / "cassettes"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "cassettes"


#: Where the demo's synthesized replies are scripted, as written in their provenance entries.
SCRIPTED_REPLIES = "guidance_deepinfra/demo/ (__init__.py and scenarios_*.py)"


@contextmanager
def scenario_model(
    sc: Scenario, mode: str, cassette_dir: Path, *, overwrite_provenance: bool = False
) -> Iterator[DeepInfra]:
    """A model wired for `mode`: live, replay (cassette only), record (live, written) or synthesize."""
    with _modes.wired_model(
        mode,
        model=sc.model,
        cassette=cassette_dir / f"{sc.name}.yaml",
        replies=sc.synthetic,
        scripts=SCRIPTED_REPLIES,
        missing_hint="run `guidance-deepinfra demo --synthesize`",
        overwrite_provenance=overwrite_provenance,
        echo=False,
        profiles=ProfileRegistry(),
        **sc.model_kwargs,
    ) as wiring:
        yield wiring.model


def run_scenario(
    sc: Scenario, mode: str, cassette_dir: Path | None = None, *, overwrite_provenance: bool = False
) -> dict[str, Any]:
    directory = cassette_dir or default_cassette_dir()
    with scenario_model(sc, mode, directory, overwrite_provenance=overwrite_provenance) as lm:
        result = sc.program(lm)
    sc.check(result)
    return result


def choose_mode(requested: str | None) -> str:
    return requested or _modes.default_mode()


def source_line(mode: str, sc: Scenario, cassette_dir: Path) -> str:
    """What the user is told about where one scenario's answers (and costs) come from, in `mode`."""
    if mode == "live":
        return "answers from DeepInfra now; costs are DeepInfra's own usage.estimated_cost"
    coming = _modes.new_provenance(mode, sc.model, SCRIPTED_REPLIES)
    if coming is not None:
        doing = "recording live now: " if mode == "record" else "synthesizing now: "
        return doing + _provenance.describe(coming)
    entry = _provenance.read(cassette_dir).get(sc.name)
    if entry is None:
        return "cassette without a provenance entry: where its replies come from is unknown"
    return _provenance.describe(entry)


def source_lines(mode: str, scenarios: list[Scenario], cassette_dir: Path) -> tuple[list[str], list[str | None]]:
    """The sentences said once above every scenario, and each scenario's own short source (None: as above).

    Replaying, each kind of cassette is explained once (`provenance.explain`) and each scenario names its
    own (`provenance.tag`: synthesized on a date, or recorded live on a date with a model); in the other
    modes every scenario's source is the same sentence, said once.
    """
    if mode != "replay":
        lines = list(dict.fromkeys(source_line(mode, sc, cassette_dir) for sc in scenarios))
        return lines, [None] * len(scenarios)
    entries = _provenance.read(cassette_dir)
    said: list[str] = []
    tags: list[str | None] = []
    for sc in scenarios:
        entry = entries.get(sc.name)
        if entry is None:
            tags.append(source_line(mode, sc, cassette_dir))
            continue
        sentence = _provenance.explain(entry)
        if sentence not in said:
            said.append(sentence)
        tags.append(_provenance.tag(entry))
    return said, tags


def run_demo(
    mode: str | None = None,
    names: list[str] | None = None,
    cassette_dir: Path | None = None,
    *,
    overwrite_provenance: bool = False,
) -> int:
    """Run the scenarios, print each result, and return the number that failed their check.

    Recording or synthesizing over cassettes of the other kind raises `ConfigurationError` before any
    request unless `overwrite_provenance` is set.
    """
    chosen = choose_mode(mode)
    directory = cassette_dir or default_cassette_dir()
    chosen_names = names or list(SCENARIOS)
    _modes.check_provenance(chosen, directory, chosen_names, overwrite=overwrite_provenance)  # before any request
    where = {
        "live": "LIVE against DeepInfra (DEEPINFRA_API_KEY is set)",
        "replay": f"OFFLINE, replaying the cassettes in {directory.name}/ (no key set)",
        "record": "LIVE, re-recording cassettes",
        "synthesize": "OFFLINE, synthesizing cassettes from scripted replies with the loopback fake server",
    }[chosen]
    print(f"guidance-deepinfra demo: {where}")
    said, tags = source_lines(chosen, [SCENARIOS[name] for name in chosen_names], directory)
    for sentence in said:
        print(f"source: {sentence}")
    failures = 0
    for name, tag in zip(chosen_names, tags, strict=True):
        sc = SCENARIOS[name]
        print(f"\n== {sc.name}: {sc.description}")
        if tag is not None:
            print(f"   source: {tag}")
        try:
            result = run_scenario(sc, chosen, directory, overwrite_provenance=overwrite_provenance)
        except Exception as exc:  # noqa: BLE001 - the demo reports and goes on
            failures += 1
            print(f"   FAILED: {type(exc).__name__}: {exc}")
            continue
        for key, value in result.items():
            if key != "text":
                print(f"   {key}: {value}")
    print(f"\n{len(chosen_names) - failures} passed, {failures} failed")
    return failures
