"""Every demo scenario replays from its cassette: the request bodies we send must equal the recorded ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from guidance_deepinfra import __version__
from guidance_deepinfra.demo import SCENARIOS, run_scenario
from guidance_deepinfra.demo.provenance import explain, tag, today
from guidance_deepinfra.testing import FakeDeepInfra
from guidance_deepinfra.testing.fake_server import COST_PER_TOKEN

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_replays(name: str) -> None:
    result = run_scenario(SCENARIOS[name], "replay", CASSETTES)
    assert result


def test_every_cassette_has_a_provenance() -> None:
    provenance = json.loads((CASSETTES / "provenance.json").read_text())
    names = {p.stem for p in CASSETTES.glob("*.yaml")}
    assert names == set(SCENARIOS)
    assert names == set(provenance)
    for name, entry in provenance.items():
        assert entry["source"] in ("synthesized", "live")
        assert entry["model"] == SCENARIOS[name].model
        assert entry["date"] and entry["plugin_version"]
        if entry["source"] == "synthesized":
            assert entry["price_per_token_usd"] == COST_PER_TOKEN


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
    assert "OFFLINE, replaying the cassettes in cassettes/" in out
    assert f"{len(SCENARIOS)} passed, 0 failed" in out
    provenance = json.loads((CASSETTES / "provenance.json").read_text())
    for name, entry in provenance.items():  # each scenario names its own cassette's source, in a few words
        assert f"== {name}: {SCENARIOS[name].description}\n   source: {tag(entry)}\n" in out
    for sentence in {explain(entry) for entry in provenance.values()}:  # and what each kind means, once
        assert out.count(sentence) == 1 and out.index(sentence) < out.index("\n== ")
    if all(entry["source"] == "synthesized" for entry in provenance.values()):
        assert "recorded" not in out.lower(), "synthesized replies are never called recorded"
        assert out.count("   source: synthesized on ") == len(SCENARIOS)
        assert out.count("costs shown with them come from the fake server's fixed price of $0.0000001 per token") == 1
        assert "so no DeepInfra model wrote them" in out


def copy_cassettes(tmp_path: Path) -> Path:
    target = tmp_path / "cassettes"
    shutil.copytree(CASSETTES, target, ignore=shutil.ignore_patterns("notebooks"))
    return target


def set_entry(directory: Path, name: str, entry: dict) -> None:
    file = directory / "provenance.json"
    data = json.loads(file.read_text())
    data[name] = entry
    file.write_text(json.dumps(data))


def test_demo_wording_follows_a_live_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from guidance_deepinfra.cli import main

    directory = copy_cassettes(tmp_path)
    live = {"source": "live", "date": "2026-12-01", "model": "org/Recorded-Model", "plugin_version": "9.9"}
    set_entry(directory, "prefill_stop", live)
    assert main(["demo", "--replay", "--cassettes", str(directory), "prefill_stop", "multi_turn"]) == 0
    out = capsys.readouterr().out
    head, scenarios = out.split("\n== prefill_stop")
    prefill, multi = scenarios.split("== multi_turn")
    assert "marked recorded live came from DeepInfra; their costs are its own usage.estimated_cost" in head
    assert "marked synthesized were scripted" in head and "fixed price" in head
    assert "source: recorded live on 2026-12-01 with org/Recorded-Model (plugin 9.9)" in prefill
    assert "synthesized" not in prefill and "fixed price" not in prefill
    assert "source: synthesized on 2026-11-25" in multi and "recorded" not in multi


def test_record_refuses_to_replace_a_synthesized_cassette_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from guidance_deepinfra.cli import main

    directory = copy_cassettes(tmp_path)
    before = (directory / "provenance.json").read_text(), (directory / "prefill_stop.yaml").read_text()
    with FakeDeepInfra() as server:
        monkeypatch.setenv("DEEPINFRA_API_KEY", "record-test-key")
        monkeypatch.setenv("DEEPINFRA_BASE_URL", server.base_url)
        assert main(["demo", "--record", "--cassettes", str(directory), "prefill_stop"]) == 2
        assert not server.requests, "refused before any request"
    assert "prefill_stop (synthesized)" in capsys.readouterr().err
    assert ((directory / "provenance.json").read_text(), (directory / "prefill_stop.yaml").read_text()) == before


def test_record_with_the_flag_writes_a_live_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loopback server stands in for DeepInfra: what is tested is what --record writes."""
    from guidance_deepinfra.cli import main

    directory = copy_cassettes(tmp_path)
    sc = SCENARIOS["prefill_stop"]
    with FakeDeepInfra() as server:
        server.push(*sc.synthetic)
        monkeypatch.setenv("DEEPINFRA_API_KEY", "record-test-key")
        monkeypatch.setenv("DEEPINFRA_BASE_URL", server.base_url)
        code = main(["demo", "--record", "--overwrite-provenance", "--cassettes", str(directory), "prefill_stop"])
        assert code == 0
        assert len(server.requests) == 1
    entry = json.loads((directory / "provenance.json").read_text())["prefill_stop"]
    assert entry == {"source": "live", "date": today(), "model": sc.model, "plugin_version": __version__}
    cassette = (directory / "prefill_stop.yaml").read_text()
    assert "127.0.0.1" not in cassette and "record-test-key" not in cassette
    capsys.readouterr()
    monkeypatch.delenv("DEEPINFRA_API_KEY")
    assert main(["demo", "--cassettes", str(directory), "prefill_stop"]) == 0
    assert f"source: recorded live on {today()} with {sc.model} (plugin {__version__})" in capsys.readouterr().out


def test_synthesize_refuses_to_replace_a_live_cassette_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from guidance_deepinfra.cli import main

    directory = copy_cassettes(tmp_path)
    set_entry(directory, "multi_turn", {"source": "live", "date": "2026-12-01", "model": "m", "plugin_version": "1"})
    assert main(["demo", "--synthesize", "--cassettes", str(directory), "multi_turn"]) == 2
    assert "multi_turn (live)" in capsys.readouterr().err
    assert main(["demo", "--synthesize", "--overwrite-provenance", "--cassettes", str(directory), "multi_turn"]) == 0
    entry = json.loads((directory / "provenance.json").read_text())["multi_turn"]
    assert entry["source"] == "synthesized" and entry["date"] == today()


def test_demo_goes_live_when_a_key_is_set(monkeypatch) -> None:
    from guidance_deepinfra.demo import choose_mode

    monkeypatch.setenv("DEEPINFRA_API_KEY", "k")
    assert choose_mode(None) == "live"
    monkeypatch.delenv("DEEPINFRA_API_KEY")
    monkeypatch.setenv("DEEPINFRA_TOKEN", "k")
    assert choose_mode(None) == "live"
    monkeypatch.delenv("DEEPINFRA_TOKEN")
    assert choose_mode(None) == "replay"
