"""`guidance-deepinfra extract` on the fake server: files in and out, progress, a real SIGKILL + resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guidance_deepinfra.cli import main
from guidance_deepinfra.testing import FakeDeepInfra, Reply

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


def echo(body: dict[str, Any], delay: float = 0.0) -> Reply:
    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    match = re.search(r"name=(\w+) age=(-?\d+)", text)
    assert match, text
    return Reply.text(json.dumps({"name": match.group(1), "age": int(match.group(2))}), delay=delay)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    return tmp_path


def write_inputs(path: Path, n: int, extra: str = "") -> None:
    lines = [json.dumps({"id": f"r{i}", "text": f"name=P{i} age={i}"}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_writes_results_errors_and_a_progress_bar(files: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-cli")
    write_inputs(files / "in.jsonl", 5, extra='{"id": "neg", "text": "name=N age=-4"}\nnot json\n')
    with FakeDeepInfra(echo) as fake:
        argv = [
            "extract", "--schema", str(files / "schema.json"), "--input", str(files / "in.jsonl"),
            "--output", str(files / "out.jsonl"), "--base-url", fake.base_url, "--model", "test/model",
            "--concurrency", "3", "--max-attempts", "2",
        ]  # fmt: skip
        assert main(argv) == 1  # some inputs failed
        err = capsys.readouterr().err
        assert len(fake.requests) == 5 + 2  # five good inputs, two attempts for the off-schema answer
    results = {r["id"]: r["result"] for r in read_output(files / "out.jsonl")}
    assert results == {f"r{i}": {"name": f"P{i}", "age": i} for i in range(5)}
    errors = {r["id"]: r for r in read_output(files / "out.errors.jsonl")}
    assert errors["neg"]["error"]["type"] == "ConstraintError" and errors["neg"]["line"] == 6
    assert errors["line-7"]["error"]["type"] == "InvalidInput" and errors["line-7"]["line"] == 7
    assert "7/7" in err and "failed=2" in err and "cost=$" in err  # the tqdm bar
    assert "5 done, 2 failed, 0 skipped" in err and "out.errors.jsonl" in err


def test_cli_reads_csv_and_a_directory_of_txt(files: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-cli")
    (files / "in.csv").write_text("key,body\nk1,name=A age=1\nk2,name=B age=2\n", encoding="utf-8")
    (files / "docs").mkdir()
    (files / "docs" / "one.txt").write_text("name=C age=3", encoding="utf-8")
    with FakeDeepInfra(echo) as fake:
        common = ["--schema", str(files / "schema.json"), "--base-url", fake.base_url, "--no-progress"]
        csv_args = ["--input", str(files / "in.csv"), "--output", str(files / "csv.jsonl")]
        assert main(["extract", *common, *csv_args, "--id-field", "key", "--text-field", "body"]) == 0
        assert main(["extract", *common, "--input", str(files / "docs"), "--output", str(files / "txt.jsonl")]) == 0
        assert len(fake.requests) == 3
    assert {r["id"]: r["result"]["name"] for r in read_output(files / "csv.jsonl")} == {"k1": "A", "k2": "B"}
    assert read_output(files / "txt.jsonl")[0]["id"] == "one.txt"
    assert "it/s" not in capsys.readouterr().err  # --no-progress


def test_cli_refuses_bad_arguments_before_any_request(files: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-cli")
    write_inputs(files / "in.jsonl", 2)
    base = ["extract", "--input", str(files / "in.jsonl"), "--output", str(files / "o.jsonl")]
    assert main([*base, "--schema", "nope:Missing"]) == 2
    assert "cannot import 'nope'" in capsys.readouterr().err
    assert main([*base, "--schema", str(files / "schema.json"), "--concurrency", "500"]) == 2
    assert "between 1 and 200" in capsys.readouterr().err


QUICK_ANSWERS = 12  # answered at once; later requests are held until released
HOLD_SECONDS = 60.0  # far beyond the test's own waits: a held request is never answered in time


class HoldingResponder:
    """Answers the first QUICK_ANSWERS requests at once and holds every later one until `release()`.

    A run of more inputs than that cannot finish while requests are held, so it is surely still going when
    the test kills it, however fast or slow the machine.
    """

    def __init__(self) -> None:
        self.answered = 0
        self.held = True

    def __call__(self, body: dict[str, Any]) -> Reply:
        self.answered += 1  # the server calls its responder from its one event loop thread
        return echo(body, delay=HOLD_SECONDS if self.held and self.answered > QUICK_ANSWERS else 0.0)

    def release(self) -> None:
        self.held = False


@pytest.fixture
def holding_server() -> Iterator[tuple[FakeDeepInfra, HoldingResponder]]:
    responder = HoldingResponder()
    with FakeDeepInfra(responder) as server:
        yield server, responder


def run_cli(files: Path, base_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DEEPINFRA_API_KEY": "sk-test-kill", "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable, "-m", "guidance_deepinfra.cli", "extract", "--schema", str(files / "schema.json"),
        "--input", str(files / "in.jsonl"), "--output", str(files / "out.jsonl"), "--base-url", base_url,
        "--model", "test/model", "--concurrency", "4", "--no-progress",
    ]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_every_record_exactly_once(files: Path, holding_server) -> None:
    server, responder = holding_server
    n = 40
    write_inputs(files / "in.jsonl", n)
    out = files / "out.jsonl"
    proc = run_cli(files, server.base_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= QUICK_ANSWERS:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    kept = out.read_bytes()
    whole = kept[: kept.rfind(b"\n") + 1]
    survivors = {json.loads(line)["id"] for line in whole.splitlines()}
    assert len(survivors) == QUICK_ANSWERS  # every answered input was written; none of the held ones
    time.sleep(0.3)  # let the server take in any request the killed process had already written
    sent_before = len(server.requests)
    assert sent_before < n
    responder.release()

    resumed = run_cli(files, server.base_url)
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert f"{len(survivors)} input(s) already in" in stderr
    records = read_output(out)
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(f"r{i}" for i in range(n)) and len(ids) == n  # each exactly once
    assert all(r["result"] == {"name": f"P{r['id'][1:]}", "age": int(r["id"][1:])} for r in records)
    assert out.read_bytes().startswith(whole)  # what survived the kill was kept as it was
    assert len(server.requests) - sent_before == n - len(survivors)  # only unfinished inputs were sent


def test_shards_split_the_inputs_between_processes_without_overlap(files: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-cli")
    write_inputs(files / "in.jsonl", 30)
    with FakeDeepInfra(echo) as fake:
        for k in range(3):
            argv = [
                "extract", "--schema", str(files / "schema.json"), "--input", str(files / "in.jsonl"),
                "--output", str(files / f"out{k}.jsonl"), "--base-url", fake.base_url, "--shard", f"{k}/3",
                "--no-progress",
            ]  # fmt: skip
            assert main(argv) == 0
        assert len(fake.requests) == 30
        assert main([*argv[:-3], "--shard", "3/3"]) == 2
    shards = [{r["id"] for r in read_output(files / f"out{k}.jsonl")} for k in range(3)]
    assert all(shards) and set.union(*shards) == {f"r{i}" for i in range(30)} and sum(map(len, shards)) == 30
    assert "--shard must be K/N" in capsys.readouterr().err
