"""The README's Python examples run, in order, against the fake server, so they cannot rot.

A block may be preceded by ``<!-- fake-replies: [...] -->``: the texts the fake server answers with (or
``{"text": ..., "tokens": [[token, logprob, {alternative: logprob}], ...]}`` for a reply with scripted token
logprobs). A block whose requests run concurrently is preceded by ``<!-- fake-replies-by-prompt: {...} -->``
instead: each request is answered with the reply whose key appears in its user message, whatever the order
the requests arrive in. The key and endpoint come from the environment, as a user's would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guidance_deepinfra.testing import Reply

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(
    r"(?:<!-- fake-replies(?P<by_prompt>-by-prompt)?: (?P<replies>.*?) -->\n)?```python\n(?P<code>.*?)```", re.DOTALL
)
Replies = list[str | dict] | dict[str, str | dict]


def scripted(reply: str | dict) -> Reply:
    if isinstance(reply, str):
        return Reply.text(reply)
    return Reply.text(reply["text"], token_logprobs=[tuple(token) for token in reply["tokens"]])


def blocks() -> list[tuple[Replies, str]]:
    found: list[tuple[Replies, str]] = []
    for m in BLOCK.finditer(README.read_text()):
        replies = json.loads(m.group("replies")) if m.group("replies") else []
        assert isinstance(replies, dict) == bool(m.group("by_prompt")), m.group(0)[:80]
        found.append((replies, m.group("code")))
    return found


def answer_by_prompt(replies: dict[str, str | dict], used: list[str]) -> Callable[[dict[str, Any]], Reply]:
    """A responder giving each request the reply whose key is in its user message; no match is an error."""

    def respond(body: dict[str, Any]) -> Reply:
        prompt = "\n".join(str(m.get("content")) for m in body["messages"] if m["role"] == "user")
        keys = [key for key in replies if key in prompt]
        if len(keys) != 1:
            return Reply.error(400, {"error": {"message": f"no single README reply for {prompt!r}"}})
        used.append(keys[0])
        return scripted(replies[keys[0]])

    return respond


def test_readme_has_examples() -> None:
    assert len(blocks()) >= 3


def test_readme_examples_run(
    fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "readme-test-key")
    monkeypatch.setenv("DEEPINFRA_BASE_URL", fake.base_url)
    namespace: dict[str, object] = {}
    expected_requests = 0
    default_responder = fake.responder
    for i, (replies, code) in enumerate(blocks()):
        used: list[str] = []
        if isinstance(replies, dict):
            fake.responder = answer_by_prompt(replies, used)
        else:
            fake.push(*(scripted(reply) for reply in replies))
        expected_requests += len(replies)
        # Each block runs from a file of its own: guidance reads a decorated function's source.
        source = tmp_path / f"readme_example_{i}.py"
        source.write_text(code)
        exec(compile(code, str(source), "exec"), namespace)  # noqa: S102 - the README's own examples
        assert not fake.script, f"example did not use all its scripted replies:\n{code}"
        if isinstance(replies, dict):
            assert sorted(used) == sorted(replies), f"example did not use each reply once:\n{code}"
            fake.responder = default_responder
    assert len(fake.requests) == expected_requests
    out = capsys.readouterr().out
    assert "Paris" in out
    # The quickstart's last_requests: the prefilled turn as sent, and the answer as it came (stop applied).
    assert "\n{'role': 'assistant', 'content': 'The capital of France is '}\nParis\n" in out
    # The offline block: its own fake server answered the three requests, the broken json() answer refused.
    assert "Paris {\"age\": 36}\n3 {'role': 'assistant', 'content': 'The capital of France is '}\n" in out
    assert "number='17' total=12.5\nnumber='18' total=3.0\n" in out  # each invoice's own answer, in input order
    assert "technical 0.73" in out and "billing       0.202" in out
    # The request cache's example: the second run's answers came from the file, in the same order.
    assert "[('Amber.', 1, 0), ('Teal.', 1, 0)]\n[('Amber.', 0, 1), ('Teal.', 0, 1)]\n" in out


# --------------------------------------------------------------------------- what users are told about offline material

ROOT = README.parent
PROVENANCE_FILES = [ROOT / "cassettes" / "provenance.json", ROOT / "cassettes" / "notebooks" / "provenance.json"]


def section(title_start: str) -> str:
    text = README.read_text()
    start = text.index("\n## " + title_start)
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def sources() -> set[str]:
    return {entry["source"] for file in PROVENANCE_FILES for entry in json.loads(file.read_text()).values()}


def test_offline_wording_follows_the_provenance_files() -> None:
    """README, cassettes/README.md and pyproject say what the provenance files say, and no more."""
    two_commands = " ".join(section("Two commands").split())
    testing = " ".join(section("Testing and cassettes").split())
    cassettes_readme = " ".join((ROOT / "cassettes" / "README.md").read_text().split())
    pyproject = (ROOT / "pyproject.toml").read_text()
    if sources() == {"synthesized"}:
        assert "whose replies are synthesized" in two_commands
        assert "fake server's fixed price per token" in two_commands
        assert "recorded" not in two_commands.lower()
        assert "Every cassette in the repository is synthesized" in testing
        assert "Every cassette here is currently **synthesized**" in cassettes_readme
        assert "synthesized replies in DeepInfra's wire" in pyproject and "recorded" not in pyproject
    else:  # a live recording was added: no sentence may still claim everything is synthesized
        assert "Every cassette in the repository is synthesized" not in testing
        assert "Every cassette here is currently **synthesized**" not in cassettes_readme
        assert "recorded live" in two_commands


def wire_fact_rows() -> list[list[str]]:
    rows = []
    for line in section("DeepInfra wire facts").splitlines():
        if line.startswith("| ") and not line.startswith("| fact |"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_wire_facts_each_have_a_status_and_the_probe_covers_the_unverified() -> None:
    from guidance_deepinfra.probe import ROWS
    from guidance_deepinfra.profile import load_profiles

    rows = wire_fact_rows()
    assert len(rows) >= 15
    probe_column = " ".join(row[3] for row in rows)
    labels = [label for _, label in ROWS]
    for fact, status, said, probe_row in rows:
        assert said, f"{fact}: say what the sources say"
        kind, _, cited = status.partition(" ")
        assert kind in ("documented", "unverified", "measured"), status
        if kind == "measured":  # a measured fact names a contributed probe file that exists and loads
            path = ROOT / cited.strip("()")
            assert cited.startswith("(probes/") and path.exists(), status
            assert load_profiles(path)
        if kind == "unverified" and probe_row != "-":
            for named in re.findall(r"`([^`]+)`", probe_row):
                assert named in labels or named == "json_schema keyword ...", named
    for label in labels:  # every row of the probe's table settles a fact listed here
        if label.startswith("json_schema keyword "):
            keyword_row = next(row[3] for row in rows if "json_schema keyword ..." in row[3])
            assert label.removeprefix("json_schema keyword ") in keyword_row, label
        else:
            assert f"`{label}`" in probe_column, label


def test_contributed_probe_files_load() -> None:
    from guidance_deepinfra.profile import load_profiles

    for path in sorted((ROOT / "probes").glob("*.json")):
        assert load_profiles(path), path
