"""Every demo scenario replays from its cassette: the request bodies we send must equal the recorded ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guidance_deepinfra.demo import SCENARIOS, run_scenario

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_replays(name: str) -> None:
    result = run_scenario(SCENARIOS[name], "replay", CASSETTES)
    assert result


def test_every_cassette_has_a_provenance() -> None:
    provenance = json.loads((CASSETTES / "provenance.json").read_text())
    names = {p.stem for p in CASSETTES.glob("*.yaml")}
    assert names == set(SCENARIOS)
    assert names <= set(provenance)
    for entry in provenance.values():
        assert entry["provenance"] in ("recorded live", "synthesized from the documented wire format")


def test_a_changed_request_body_fails_replay() -> None:
    import guidance_deepinfra.demo as demo

    sc = SCENARIOS["prefill_stop"]
    original = sc.model_kwargs
    sc.model_kwargs = {**original, "request_defaults": {"seed": 1}}
    try:
        with pytest.raises(Exception, match="(?i)cassette|match"):
            demo.run_scenario(sc, "replay", CASSETTES)
    finally:
        sc.model_kwargs = original


def test_cassettes_hold_no_credentials() -> None:
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text().lower()
        assert "authorization" not in text
        assert "bearer" not in text


def test_demo_command_replays_offline_without_a_key(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from guidance_deepinfra.cli import main

    monkeypatch.chdir(CASSETTES.parent)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "OFFLINE, replaying recorded DeepInfra traffic" in out
    assert f"{len(SCENARIOS)} passed, 0 failed" in out


def test_demo_goes_live_when_a_key_is_set(monkeypatch) -> None:
    from guidance_deepinfra.demo import choose_mode

    monkeypatch.setenv("DEEPINFRA_API_KEY", "k")
    assert choose_mode(None) == "live"
    monkeypatch.delenv("DEEPINFRA_API_KEY")
    monkeypatch.setenv("DEEPINFRA_TOKEN", "k")
    assert choose_mode(None) == "live"
    monkeypatch.delenv("DEEPINFRA_TOKEN")
    assert choose_mode(None) == "replay"
