"""The one live / replay / record / synthesize switch (`_modes.wired_model`) behind the demo and the notebooks.

Requests go through the real openai SDK to the loopback fake server (synthesize, record) or to vcrpy's
replay of the cassette written that way; nothing is mocked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from guidance import assistant, gen, user

from guidance_deepinfra import ConfigurationError, notebook
from guidance_deepinfra.demo import run_scenario
from guidance_deepinfra.demo.modes import REPLAY_KEY, wired_model
from guidance_deepinfra.demo.scenario import Scenario
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

MODEL = "test/modes-model"
REPLIES = [Reply.text("Paris.", prompt_tokens=31, completion_tokens=2)]


def ask(lm: Any, question: str = "What is the capital of France?") -> dict[str, Any]:
    with user():
        lm += question
    with assistant():
        lm += "The capital is " + gen("city", stop=".", max_tokens=10, temperature=0)
    return {"city": lm["city"]}


def run(mode: str, cassette: Path, question: str = "What is the capital of France?", **options: Any) -> Any:
    with wired_model(
        mode,
        model=MODEL,
        cassette=cassette,
        replies=options.pop("replies", REPLIES),
        scripts="tests/test_demo_modes.py",
        missing_hint="synthesize it first",
        echo=False,
        profiles=ProfileRegistry(),
        **options,
    ) as wiring:
        return ask(wiring.model, question), wiring


def without_dates(text: str) -> str:
    return re.sub(r"(?m)^\s*- \w{3}, \d\d \w{3} \d{4} [\d:]+ GMT\n", "", text)


def test_synthesize_writes_a_cassette_that_replay_serves_matching_on_the_json_body(tmp_path: Path) -> None:
    cassette = tmp_path / "capital.yaml"
    result, wiring = run("synthesize", cassette)
    assert result == {"city": "Paris"} and wiring.offline_key == REPLAY_KEY
    text = cassette.read_text()
    assert "127.0.0.1" not in text and "api.deepinfra.com" in text and "authorization" not in text.lower()
    entry = json.loads((tmp_path / "provenance.json").read_text())["capital"]
    assert entry["source"] == "synthesized" and entry["replies"] == "tests/test_demo_modes.py"
    assert entry["model"] == MODEL

    replayed, wiring = run("replay", cassette)
    assert replayed == result and wiring.cassette.play_count == 1 and wiring.fake is None
    with pytest.raises(Exception, match="(?i)cassette|match"):
        run("replay", cassette, question="What is the capital of Spain?")  # another body: no recorded answer
    with pytest.raises(FileNotFoundError, match="synthesize it first"):
        run("replay", tmp_path / "missing.yaml")


def test_an_unknown_mode_is_a_configuration_error_for_both_front_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="unknown mode 'offline'"):
        run("offline", tmp_path / "capital.yaml")
    monkeypatch.setenv(notebook.MODE_VARIABLE, "offline")
    with pytest.raises(ConfigurationError, match="expected one of"):
        notebook.connect("capital", MODEL)
    assert list(tmp_path.iterdir()) == []


def test_every_scripted_reply_must_be_used_by_the_demo_too(tmp_path: Path) -> None:
    extra = [*REPLIES, Reply.text("unused")]
    with pytest.raises(RuntimeError, match="2 replies scripted but 1 requests sent"):
        run("synthesize", tmp_path / "capital.yaml", replies=extra)
    assert not (tmp_path / "provenance.json").exists(), "no provenance for a cassette that does not fit its script"
    scenario = Scenario("capital", "one question", ask, lambda result: None, extra, MODEL)
    with pytest.raises(RuntimeError, match="2 replies scripted"):
        run_scenario(scenario, "synthesize", tmp_path)


def test_record_refuses_to_replace_a_synthesized_cassette_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cassette = tmp_path / "capital.yaml"
    run("synthesize", cassette)
    with FakeDeepInfra() as server:
        server.push(*REPLIES)
        monkeypatch.setenv("DEEPINFRA_API_KEY", "record-key-for-modes")
        monkeypatch.setenv("DEEPINFRA_BASE_URL", server.base_url)
        with pytest.raises(ConfigurationError, match=r"capital \(synthesized\)"):
            run("record", cassette)
        assert server.requests == []
        result, wiring = run("record", cassette, overwrite_provenance=True)
        assert result == {"city": "Paris"} and wiring.base_url == server.base_url and len(server.requests) == 1
    assert json.loads((tmp_path / "provenance.json").read_text())["capital"]["source"] == "live"
    assert "record-key-for-modes" not in cassette.read_text() and "127.0.0.1" not in cassette.read_text()


def test_the_demo_and_a_notebook_write_the_same_cassette_for_the_same_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both front ends go through the one switch: same requests, same cassette, same provenance checks."""
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "cassettes" / "notebooks").mkdir(parents=True)
    (project / "notebooks" / "_replies.py").write_text(
        "from guidance_deepinfra.testing import Reply\n"
        "REPLIES = {'capital': [Reply.text('Paris.', prompt_tokens=31, completion_tokens=2)]}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(project)
    monkeypatch.setenv(notebook.MODE_VARIABLE, "synthesize")
    lm = notebook.connect("capital", MODEL)
    assert ask(lm) == {"city": "Paris"}
    assert notebook.finish()[0]["recorded"] == 1
    from_notebook = project / "cassettes" / "notebooks" / "capital.yaml"

    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    scenario = Scenario("capital", "one question", ask, lambda result: None, list(REPLIES), MODEL)
    assert run_scenario(scenario, "synthesize", demo_dir) == {"city": "Paris"}
    assert without_dates(from_notebook.read_text()) == without_dates((demo_dir / "capital.yaml").read_text())

    monkeypatch.setenv(notebook.MODE_VARIABLE, "replay")
    replayed = notebook.connect("capital", MODEL)
    assert ask(replayed) == {"city": "Paris"}
    assert notebook.finish()[0]["played"] == 1
