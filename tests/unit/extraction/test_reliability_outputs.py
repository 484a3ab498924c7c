"""Outputs of a batch extraction survive a full disk, and a broken schema module stops the run cleanly.

A write that fails or stops short is rolled back to the last complete record, the run stops with its own exit
code and says that the records written are kept and a rerun resumes; the rerun then completes every input
exactly once. Two kinds of real failed writes are used, never a mock: a small tmpfs that fills up (ENOSPC, in
a private mount namespace; skipped where mounting is not allowed) and a file-size limit set with
``setrlimit`` on the CLI's process (EFBIG after a short write), which needs no mount.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guidance_deepinfra.cli import main
from guidance_deepinfra.testing import FakeDeepInfra, Reply

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "pad": {"type": "string"}}, "required": ["n"]}
INPUTS = 300
EXIT_WRITE_FAILED = 3


def _answer(body: dict[str, Any]) -> Reply:
    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return Reply.text(json.dumps({"n": int(text.split()[-1]), "pad": "x" * 100}))


def _write_job(tmp_path: Path, n: int = INPUTS) -> tuple[Path, Path]:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": f"r{i}", "text": f"number {i}"}) + "\n" for i in range(n)))
    return tmp_path / "schema.json", inputs


def _cli(schema: Path, inputs: Path, output: Path, base_url: str) -> list[str]:
    return [
        sys.executable, "-m", "guidance_deepinfra.cli", "extract", "--schema", str(schema), "--input", str(inputs),
        "--output", str(output), "--base-url", base_url, "--model", "test/model", "--concurrency", "8",
        "--no-progress",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "DEEPINFRA_API_KEY": "sk-test-disk", "PYTHONDONTWRITEBYTECODE": "1"}


def _check_complete(data: bytes, n: int) -> None:
    """Every input exactly once, each line a whole record with the right result."""
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == n and set(ids) == {f"r{i}" for i in range(n)}
    assert all(r["result"]["n"] == int(r["id"][1:]) for r in records)


def _check_stopped_cleanly(returncode: int, stderr: str, kept: bytes) -> None:
    assert returncode == EXIT_WRITE_FAILED, stderr
    assert "Traceback" not in stderr
    assert "could not write a record" in stderr and "partial record was removed" in stderr
    assert "kept" in stderr and "rerun" in stderr and "resume" in stderr
    assert kept == b"" or kept.endswith(b"\n"), "a torn record was left at the end of the output"
    for line in kept.splitlines():
        json.loads(line)  # no record glued onto a torn piece


def _limit_file_size(limit: int) -> Any:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_short_failed_write_is_rolled_back_and_a_rerun_completes(tmp_path: Path) -> None:
    schema, inputs = _write_job(tmp_path)
    output = tmp_path / "out.jsonl"
    with FakeDeepInfra(_answer) as fake:
        argv = _cli(schema, inputs, output, fake.base_url)
        limit = 9000  # about 60 records: the record that crosses it is written in part, then EFBIG
        first = subprocess.run(
            argv, env=_env(), capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size(limit)
        )
        kept = output.read_bytes()
        _check_stopped_cleanly(first.returncode, first.stderr, kept)
        assert "File too large" in first.stderr
        assert 0 < kept.count(b"\n") < INPUTS and len(kept) <= limit
        sent = len(fake.requests)

        second = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        survivors = kept.count(b"\n")
        assert f"{survivors} input(s) already in" in second.stderr
        assert output.read_bytes().startswith(kept)
        _check_complete(output.read_bytes(), INPUTS)
        assert len(fake.requests) - sent <= INPUTS - survivors + 8  # only unfinished inputs (+ in flight)


def _mount_namespace_prefix() -> list[str] | None:
    """A command prefix giving a private mount namespace where tmpfs can be mounted, or None."""
    if shutil.which("unshare") is None:
        return None
    probe = 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d" && rmdir "$d"'
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        try:
            done = subprocess.run([*prefix, "sh", "-c", probe], capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return None


@pytest.mark.slow
def test_disk_full_on_a_small_tmpfs_stops_cleanly_and_a_rerun_completes(tmp_path: Path) -> None:
    prefix = _mount_namespace_prefix()
    if prefix is None:
        pytest.skip("mounting a tmpfs is not allowed here (no unshare, or no mount permission in a namespace)")
    schema, inputs = _write_job(tmp_path)
    disk = tmp_path / "disk"
    disk.mkdir()
    output = disk / "out.jsonl"
    with FakeDeepInfra(_answer) as fake:
        argv = " ".join(f"'{a}'" for a in _cli(schema, inputs, output, fake.base_url))
        # One private namespace: mount a 16 KiB tmpfs, run until the disk is full, show what was kept, give the
        # tmpfs room, rerun, show the result. The mount disappears with the namespace.
        script = f"""
            mount -t tmpfs -o size=16k tmpfs '{disk}' || exit 99
            {argv} 2>'{tmp_path}/first.err'; echo "first=$?" >'{tmp_path}/codes'
            cp '{output}' '{tmp_path}/kept.jsonl'
            mount -o remount,size=1m '{disk}'
            {argv} 2>'{tmp_path}/second.err'; echo "second=$?" >>'{tmp_path}/codes'
            cp '{output}' '{tmp_path}/final.jsonl'
        """
        done = subprocess.run([*prefix, "sh", "-c", script], env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    codes = dict(line.split("=") for line in (tmp_path / "codes").read_text().split())
    first_err = (tmp_path / "first.err").read_text()
    kept = (tmp_path / "kept.jsonl").read_bytes()
    _check_stopped_cleanly(int(codes["first"]), first_err, kept)
    assert "No space left on device" in first_err
    assert 0 < kept.count(b"\n") < INPUTS
    assert codes["second"] == "0", (tmp_path / "second.err").read_text()
    final = (tmp_path / "final.jsonl").read_bytes()
    assert final.startswith(kept)
    _check_complete(final, INPUTS)


# --------------------------------------------------------------------------- paths refused up front


def test_a_directory_as_output_and_the_input_as_output_are_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-paths")
    schema, inputs = _write_job(tmp_path, 3)
    before = inputs.read_bytes()
    with FakeDeepInfra(_answer) as fake:
        common = ["extract", "--schema", str(schema), "--base-url", fake.base_url, "--no-progress"]
        assert main([*common, "--input", str(inputs), "--output", str(tmp_path)]) == 2
        assert "is a directory" in capsys.readouterr().err
        assert main([*common, "--input", str(inputs), "--output", str(inputs)]) == 2
        assert "is the input file" in capsys.readouterr().err
        alias = tmp_path / "sub" / ".." / "in.jsonl"
        (tmp_path / "sub").mkdir()
        assert (
            main([*common, "--input", str(inputs), "--output", str(tmp_path / "o.jsonl"), "--errors", str(alias)]) == 2
        )
        assert "is the input file" in capsys.readouterr().err
        assert fake.requests == []
    assert inputs.read_bytes() == before


# --------------------------------------------------------------------------- schema modules that fail


SCHEMA_MODULES = {
    "syntax_error": ("class Person(\n", "SyntaxError"),
    "name_error": ("from pydantic import BaseModel\nclass Person(BaseModel):\n    name: Strr\n", "NameError"),
    "runtime_error": ("raise RuntimeError('no settings file')\n", "RuntimeError: no settings file"),
    "exits": ("import sys\nsys.exit(3)\n", "SystemExit"),
    "no_json_schema": (
        "from typing import Callable\nfrom pydantic import BaseModel\n"
        "class Person(BaseModel):\n    callback: Callable[[int], int]\n",
        "has no usable JSON schema",
    ),
}


@pytest.mark.parametrize("style", ["module", "file"])
@pytest.mark.parametrize("name", sorted(SCHEMA_MODULES))
def test_a_schema_module_that_fails_is_a_clear_error(
    tmp_path: Path, monkeypatch, capsys, name: str, style: str
) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-schema")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    source, cause = SCHEMA_MODULES[name]
    module = f"schema_{name}_{style}"
    (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
    _, inputs = _write_job(tmp_path, 2)
    spec = f"{module}:Person" if style == "module" else f"{tmp_path / module}.py:Person"
    with FakeDeepInfra(_answer) as fake:
        argv = [
            "extract",
            "--schema",
            spec,
            "--input",
            str(inputs),
            "--output",
            "out.jsonl",
            "--base-url",
            fake.base_url,
        ]
        assert main(argv) == 2
        assert fake.requests == []
    err = capsys.readouterr().err
    assert "Traceback" not in err and cause in err
    assert module in err  # names the module (or the class inside it)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("depth", [400, 5000])
def test_a_deeply_nested_schema_file_is_a_clear_error(tmp_path: Path, monkeypatch, capsys, depth: int) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-schema")
    schema: dict[str, Any] = {"type": "object"}
    text = json.dumps(schema)
    for _ in range(depth):
        text = '{"type": "object", "properties": {"a": ' + text + "}}"
    (tmp_path / "deep.json").write_text(text, encoding="utf-8")
    _, inputs = _write_job(tmp_path, 2)
    with FakeDeepInfra(_answer) as fake:
        argv = ["extract", "--schema", str(tmp_path / "deep.json"), "--input", str(inputs)]
        assert main([*argv, "--output", str(tmp_path / "o.jsonl"), "--base-url", fake.base_url]) == 2
        assert fake.requests == []
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nested too deeply" in err
