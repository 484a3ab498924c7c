"""A JSONL file cut into shards' byte ranges gives back every record of a whole read, once, with its id."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from guidance_deepinfra.extraction.inputs import read_inputs
from guidance_deepinfra.extraction.partition import partition


def random_jsonl(rng: random.Random) -> str:
    lines = []
    for i in range(rng.randint(0, 30)):
        kind = rng.random()
        if kind < 0.1:
            lines.append("")
        elif kind < 0.2:
            lines.append("{malformed")
        elif kind < 0.3:
            lines.append(json.dumps("bare " + "x" * rng.randint(0, 50)))
        elif kind < 0.4:
            lines.append(json.dumps({"text": "no id"}))
        else:
            lines.append(json.dumps({"id": f"r{i}", "text": "t" * rng.randint(1, 80)}))
    return "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")


@pytest.mark.parametrize("shards", [1, 2, 3, 8, 40])
def test_byte_ranges_give_every_record_once_with_the_ids_of_a_whole_read(tmp_path: Path, shards: int) -> None:
    rng = random.Random(shards)
    path = tmp_path / "in.jsonl"
    for _ in range(60):
        text = random_jsonl(rng)
        path.write_text(text)
        whole = list(read_inputs(path))
        parts = [partition(path, k, shards) for k in range(shards)]
        got = [item for part in parts for item in part.items]
        assert [(i.id, i.problem) for i in got] == [(i.id, i.problem) for i in whole]
        for mine, theirs in zip(got, whole, strict=True):  # a line number, where given, is the file's
            assert mine.line is None or (mine.line, mine.source) == (theirs.line, theirs.source)
        # Each line was read by one shard; beyond it, a shard reads at most the end of the line before it.
        assert sum(p.span.lines_read for p in parts if p.span) == len(text.splitlines())
        assert len(text.encode()) <= sum(p.span.bytes_read for p in parts if p.span) <= len(text.encode()) + 90 * shards


def test_a_directory_is_cut_into_runs_of_files(tmp_path: Path) -> None:
    for i in range(7):
        (tmp_path / f"doc{i}.txt").write_text(f"text {i}")
    parts = [partition(tmp_path, k, 3) for k in range(3)]
    assert [[i.id for i in p.items] for p in parts] == [
        ["doc0.txt", "doc1.txt"],
        ["doc2.txt", "doc3.txt"],
        ["doc4.txt", "doc5.txt", "doc6.txt"],
    ]
