"""Example programs that double as the cassette suite.

Each `Scenario` is a small guidance program plus a check of its result. `guidance-deepinfra demo` runs them
live when ``DEEPINFRA_API_KEY`` is set and otherwise replays the cassettes in ``cassettes/`` (no network).
The cassettes in the repository are synthesized: each scenario's replies are scripted here (``synthetic=``)
and served in DeepInfra's wire format by the loopback fake server, with the fake server's fixed price per
token as their cost. ``--record`` re-records them live and ``--synthesize`` rebuilds them from the scripts;
``cassettes/provenance.json`` says which each one is, and the demo prints it for every scenario.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guidance import assistant, gen, system, user

from ..model import DEFAULT_MODEL, DeepInfra, resolve_base_url
from ..profile import ProfileRegistry
from ..testing.fake_server import FakeDeepInfra, Reply
from ..transport.client import DEFAULT_BASE_URL
from . import provenance as _provenance

Program = Callable[[DeepInfra], dict[str, Any]]
Check = Callable[[dict[str, Any]], None]

REPLAY_KEY = "replay-without-a-key"


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


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    description: str,
    *,
    synthetic: list[Reply],
    check: Check,
    model: str = DEFAULT_MODEL,
    **model_kwargs: Any,
) -> Callable[[Program], Program]:
    def register(program: Program) -> Program:
        SCENARIOS[name] = Scenario(name, description, program, check, synthetic, model, model_kwargs)
        return program

    return register


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


# Scenarios for constraints live beside the code they exercise; importing registers them.
from . import scenarios_grammar, scenarios_json  # noqa: E402, F401

# --------------------------------------------------------------------------- running


def _scrub_request(request: Any) -> Any:
    keep = {"content-type", "accept"}
    request.headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    # Live answers can carry cookies and account or request identifiers; replay needs none of them.
    keep = {"content-type", "retry-after", "date"}
    response["headers"] = {k: v for k, v in response.get("headers", {}).items() if k.lower() in keep}
    return response


def _json_body_matcher(r1: Any, r2: Any) -> None:
    def parse(body: Any) -> Any:
        if isinstance(body, bytes):
            body = body.decode()
        return json.loads(body) if body else None

    a, b = parse(r1.body), parse(r2.body)
    assert a == b, f"request body differs from the recording:\n sent:     {a}\n recorded: {b}"


def make_vcr(record_mode: str) -> Any:
    """vcrpy configured as the project uses it: match on method, path and JSON body; no credentials kept."""
    import vcr

    recorder = vcr.VCR(
        record_mode=record_mode,
        match_on=["method", "path", "json_body"],
        filter_headers=["authorization"],
        before_record_request=_scrub_request,
        before_record_response=_scrub_response,
        decode_compressed_response=True,
    )
    recorder.register_matcher("json_body", _json_body_matcher)
    return recorder


def default_cassette_dir() -> Path:
    here = Path.cwd() / "cassettes"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "cassettes"


def _rewrite_to_deepinfra(path: Path, fake_url: str) -> None:
    text = path.read_text()
    path.write_text(text.replace(fake_url, DEFAULT_BASE_URL))


#: Where the demo's synthesized replies are scripted, as written in their provenance entries.
SCRIPTED_REPLIES = "guidance_deepinfra/demo/ (__init__.py and scenarios_*.py)"


@contextmanager
def scenario_model(sc: Scenario, mode: str, cassette_dir: Path) -> Iterator[DeepInfra]:
    """A model wired for `mode`: live, replay (cassette only), record (live, written) or synthesize."""
    cassette = cassette_dir / f"{sc.name}.yaml"
    kwargs = dict(echo=False, profiles=ProfileRegistry(), **sc.model_kwargs)
    if mode == "live":
        yield DeepInfra(sc.model, **kwargs)
        return
    if mode == "replay":
        if not cassette.exists():
            raise FileNotFoundError(f"no cassette {cassette}; run `guidance-deepinfra demo --synthesize`")
        with make_vcr("none").use_cassette(str(cassette)):
            yield DeepInfra(sc.model, api_key=REPLAY_KEY, base_url=DEFAULT_BASE_URL, max_retries=0, **kwargs)
        return
    if mode == "record":
        base_url = resolve_base_url(None)
        cassette.unlink(missing_ok=True)
        with make_vcr("all").use_cassette(str(cassette)):
            yield DeepInfra(sc.model, base_url=base_url, **kwargs)
        _rewrite_to_deepinfra(cassette, base_url)
        _provenance.write(cassette_dir, sc.name, _provenance.live_entry(sc.model))
        return
    if mode == "synthesize":
        cassette.unlink(missing_ok=True)
        with FakeDeepInfra() as fake:
            fake.push(*sc.synthetic)
            with make_vcr("all").use_cassette(str(cassette)):
                yield DeepInfra(sc.model, api_key=REPLAY_KEY, base_url=fake.base_url, **kwargs)
            _rewrite_to_deepinfra(cassette, fake.base_url)
        _provenance.write(cassette_dir, sc.name, _provenance.synthesized_entry(sc.model, SCRIPTED_REPLIES))
        return
    raise ValueError(f"unknown mode {mode!r}")


def run_scenario(sc: Scenario, mode: str, cassette_dir: Path | None = None) -> dict[str, Any]:
    with scenario_model(sc, mode, cassette_dir or default_cassette_dir()) as lm:
        result = sc.program(lm)
    sc.check(result)
    return result


def choose_mode(requested: str | None) -> str:
    if requested:
        return requested
    return "live" if (os.environ.get("DEEPINFRA_API_KEY") or os.environ.get("DEEPINFRA_TOKEN")) else "replay"


def source_line(mode: str, sc: Scenario, cassette_dir: Path) -> str:
    """What the user is told about where one scenario's answers (and costs) come from, in `mode`."""
    if mode == "live":
        return "answers from DeepInfra now; costs are DeepInfra's own usage.estimated_cost"
    if mode == "record":
        return "recording live now: " + _provenance.describe(_provenance.live_entry(sc.model))
    if mode == "synthesize":
        return "synthesizing now: " + _provenance.describe(_provenance.synthesized_entry(sc.model, SCRIPTED_REPLIES))
    entry = _provenance.read(cassette_dir).get(sc.name)
    if entry is None:
        return "cassette without a provenance entry: where its replies come from is unknown"
    return _provenance.describe(entry)


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
    if chosen in ("record", "synthesize"):
        new_source = _provenance.LIVE if chosen == "record" else _provenance.SYNTHESIZED
        _provenance.check_replaceable(directory, chosen_names, new_source, allowed=overwrite_provenance)
    where = {
        "live": "LIVE against DeepInfra (DEEPINFRA_API_KEY is set)",
        "replay": f"OFFLINE, replaying the cassettes in {directory.name}/ (no key set)",
        "record": "LIVE, re-recording cassettes",
        "synthesize": "OFFLINE, synthesizing cassettes from scripted replies with the loopback fake server",
    }[chosen]
    print(f"guidance-deepinfra demo: {where}")
    failures = 0
    for name in chosen_names:
        sc = SCENARIOS[name]
        print(f"\n== {sc.name}: {sc.description}")
        print(f"   source: {source_line(chosen, sc, directory)}")
        try:
            result = run_scenario(sc, chosen, directory)
        except Exception as exc:  # noqa: BLE001 - the demo reports and goes on
            failures += 1
            print(f"   FAILED: {type(exc).__name__}: {exc}")
            continue
        for key, value in result.items():
            if key != "text":
                print(f"   {key}: {value}")
    print(f"\n{len(chosen_names) - failures} passed, {failures} failed")
    return failures
