"""Inputs of a batch extraction are read strictly: no row vanishes in silence, every error names its line.

A CSV quote left open, a byte that is not UTF-8, a repeated header column, a malformed JSONL line whose
fallback id clashes with a real one, a shard spec that would silently turn sharding off: each is either a
clear refusal before any request or an error record for exactly the row at fault, with every other row read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guidance_deepinfra.cli import main
from guidance_deepinfra.errors import ConfigurationError
from guidance_deepinfra.extraction.api import read_inputs
from guidance_deepinfra.testing import FakeDeepInfra, Reply

ROWS = 2000


def _csv_lines(rows: int = ROWS) -> list[bytes]:
    return [b"id,text"] + [f"r{i},name=P{i} age={i}".encode() for i in range(rows)]


def _problems(path: Path) -> list[tuple[int | None, str]]:
    return [(item.line, item.problem) for item in read_inputs(path) if item.problem is not None]


def test_an_unclosed_quote_on_row_one_costs_that_row_only(tmp_path: Path) -> None:
    lines = _csv_lines()
    lines[1] = b'r0,"name=P0 age=0'  # the quote never closes: the parser would read to the end of the file
    path = tmp_path / "in.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = list(read_inputs(path))
    good = [item.id for item in items if item.problem is None]
    assert good == [f"r{i}" for i in range(1, ROWS)]
    assert _problems(path) == [(2, "malformed CSV: a quoted field opened on this line is never closed")]


def test_rows_after_a_stray_quote_are_read_again(tmp_path: Path) -> None:
    lines = _csv_lines(6)
    lines[2] = b'r1,"open'  # swallows the next line until the stray quote in it
    lines[4] = b'r3,"quoted"tail'  # text after a closing quote: refused when read strictly
    path = tmp_path / "in.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = list(read_inputs(path))
    assert [item.id for item in items if item.problem is None] == ["r0", "r2", "r4", "r5"]
    assert [(line, problem.split(":")[0]) for line, problem in _problems(path)] == [
        (3, "malformed CSV"),
        (5, "malformed CSV"),
    ]


def test_multi_line_quoted_fields_still_work(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b'id,text\na,"one\ntwo"\nb,"x ""quoted"" y"\n')
    assert [(i.id, i.text, i.line) for i in read_inputs(path)] == [("a", "one\ntwo", 2), ("b", 'x "quoted" y', 4)]


@pytest.mark.parametrize("bad_row", [0, 1000, ROWS - 1])
def test_a_byte_that_is_not_utf8_costs_its_row_only_and_names_its_line(tmp_path: Path, bad_row: int) -> None:
    lines = _csv_lines()
    lines[bad_row + 1] += b"\xff"
    path = tmp_path / "in.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = list(read_inputs(path))
    assert [item.id for item in items if item.problem is None] == [f"r{i}" for i in range(ROWS) if i != bad_row]
    ((line, problem),) = _problems(path)
    assert line == bad_row + 2 and problem.startswith("not UTF-8") and f"line {bad_row + 2}" in problem


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text\r\nk,hello\r\n")
    assert [(i.id, i.text) for i in read_inputs(path)] == [("k", "hello")]


@pytest.mark.parametrize("header", [b"id,text,id", b"id,text,text", b"text,x,x"])
def test_a_repeated_header_column_is_refused(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(header + b"\n1,2,3\n")
    with pytest.raises(ConfigurationError, match="the header repeats the column"):
        list(read_inputs(path))


def test_a_header_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,t\xffext\n1,2\n")
    with pytest.raises(ConfigurationError, match="unreadable header: not UTF-8"):
        list(read_inputs(path))


def test_a_malformed_jsonl_line_is_reported_as_malformed_even_when_its_fallback_id_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "line-2", "text": "a real id that looks like a fallback"}\n'
        "{broken\n"
        '{"id": "line-4", "text": "a real id equal to the fallback id of the next line"}\n'
        "also broken\n",
        encoding="utf-8",
    )
    problems = {item.line: item.problem for item in read_inputs(path) if item.problem is not None}
    assert set(problems) == {2, 4}
    assert all(problem is not None and problem.startswith("malformed JSON") for problem in problems.values())
    assert [i.id for i in read_inputs(path) if i.problem is None] == ["line-2", "line-4"]


def test_a_real_repeated_id_is_still_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    problems = [(item.line, item.problem) for item in read_inputs(path) if item.problem is not None]
    assert problems == [(2, "no 'text' field"), (3, "duplicate id (first seen at in.jsonl:1)")]


# --------------------------------------------------------------------------- --shard


@pytest.mark.parametrize(
    "spec",
    ["", " 1/2", "1/2 ", "+1/2", "1/+2", "-0/2", "\uff11/\uff12", "1/\u0662", "1/2/3", "1", "/2", "2/2", "0/0", "a/b"],
)
def test_shard_specs_other_than_ascii_k_slash_n_are_refused(tmp_path: Path, capsys, monkeypatch, spec: str) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-shard")
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    (tmp_path / "schema.json").write_text('{"type": "object"}', encoding="utf-8")
    with FakeDeepInfra(lambda body: Reply.text("{}")) as fake:
        argv = [
            "extract", "--schema", str(tmp_path / "schema.json"), "--input", str(tmp_path / "in.jsonl"),
            "--output", str(tmp_path / "out.jsonl"), "--base-url", fake.base_url, f"--shard={spec}", "--no-progress",
        ]  # fmt: skip
        assert main(argv) == 2
        assert fake.requests == []
    err = capsys.readouterr().err
    assert "--shard must be K/N" in err and "ASCII digits" in err and repr(spec) in err
    assert not (tmp_path / "out.jsonl").exists()


def test_a_valid_shard_spec_is_read(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-test-shard")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": "x"}) + "\n" for i in range(20)))
    (tmp_path / "schema.json").write_text('{"type": "object"}', encoding="utf-8")
    with FakeDeepInfra(lambda body: Reply.text("{}")) as fake:
        argv = [
            "extract", "--schema", str(tmp_path / "schema.json"), "--input", str(tmp_path / "in.jsonl"),
            "--output", str(tmp_path / "out.jsonl"), "--base-url", fake.base_url, "--shard", "01/2", "--no-progress",
        ]  # fmt: skip
        assert main(argv) == 0
        assert 0 < len(fake.requests) < 20
    assert "shard 1/2" in capsys.readouterr().err
