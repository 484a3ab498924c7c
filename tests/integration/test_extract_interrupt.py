"""Ctrl-C during `guidance-deepinfra extract` (now an asyncio batch): exit 130, records kept, a rerun resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from guidance_deepinfra.testing import FakeDeepInfra, Reply

pytestmark = pytest.mark.slow  # a command line process interrupted with SIGINT and rerun

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def echo(body: dict[str, Any]) -> Reply:
    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    match = re.search(r"n=(\d+)", text)
    assert match, text
    return Reply.text(json.dumps({"n": int(match.group(1))}), delay=0.05)


def test_ctrl_c_keeps_every_finished_record_and_the_rerun_does_the_rest(tmp_path: Path) -> None:
    n = 300
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": f"n={i}"}) + "\n" for i in range(n)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "DEEPINFRA_API_KEY": "sk-test-interrupt"}
    with FakeDeepInfra(echo) as fake:
        argv = [
            sys.executable, "-m", "guidance_deepinfra.cli", "extract", "--schema", str(tmp_path / "schema.json"),
            "--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--base-url", fake.base_url,
            "--model", "test/model", "--concurrency", "8", "--no-progress",
        ]  # fmt: skip
        first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 30):
            time.sleep(0.01)
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=30)
        assert first.returncode == 130, stderr
        assert "interrupted" in stderr and "rerun to resume" in stderr
        kept = [json.loads(line) for line in out.read_text().splitlines()]  # whole lines only: nothing torn
        assert 30 <= len(kept) < n
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(int(r["id"][1:]) for r in records) == list(range(n))  # every input once
    assert all(r["result"] == {"n": int(r["id"][1:])} for r in records)
