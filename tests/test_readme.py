"""The README's Python examples run, in order, against the fake server, so they cannot rot.

A block may be preceded by ``<!-- fake-replies: [...] -->``: the texts the fake server answers with. The
key and endpoint come from the environment, as a user's would.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from guidance_deepinfra.testing import Reply

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(?:<!-- fake-replies: (?P<replies>.*?) -->\n)?```python\n(?P<code>.*?)```", re.DOTALL)


def blocks() -> list[tuple[list[str], str]]:
    found = []
    for m in BLOCK.finditer(README.read_text()):
        replies = json.loads(m.group("replies")) if m.group("replies") else []
        found.append((replies, m.group("code")))
    return found


def test_readme_has_examples() -> None:
    assert len(blocks()) >= 3


def test_readme_examples_run(
    fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "readme-test-key")
    monkeypatch.setenv("DEEPINFRA_BASE_URL", fake.base_url)
    namespace: dict[str, object] = {}
    expected_requests = 0
    for i, (replies, code) in enumerate(blocks()):
        fake.push(*(Reply.text(text) for text in replies))
        expected_requests += len(replies)
        # Each block runs from a file of its own: guidance reads a decorated function's source.
        source = tmp_path / f"readme_example_{i}.py"
        source.write_text(code)
        exec(compile(code, str(source), "exec"), namespace)  # noqa: S102 - the README's own examples
        assert not fake.script, f"example did not use all its scripted replies:\n{code}"
    assert len(fake.requests) == expected_requests
    out = capsys.readouterr().out
    assert "Paris" in out
    assert "number='17'" in out or "number='18'" in out
