"""Extraction with the request cache and cost bounds: `extract(..., cache=, max_cost=)` and the command's
``--cache``, ``--dry-run`` and ``--max-cost``, on the fake server over real HTTP, requests counted there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from guidance_deepinfra import ConfigurationError, DeepInfra, RetryPolicy, extract
from guidance_deepinfra.cli import main
from guidance_deepinfra.testing import FakeDeepInfra, Reply
from guidance_deepinfra.testing.fake_server import COST_PER_TOKEN

KEY = "sk-test-extract-cost-0000"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}
#: Every answer's reported cost: 20 prompt + 10 completion tokens at the fake's price.
COST = 30 * COST_PER_TOKEN


def echo(body: dict[str, Any]) -> Reply:
    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    match = re.search(r"name=(\w+) age=(-?\d+)", text)
    assert match, text
    answer = json.dumps({"name": match.group(1), "age": int(match.group(2))})
    return Reply.text(answer, prompt_tokens=20, completion_tokens=10)


def texts(n: int) -> dict[str, str]:
    return {f"r{i}": f"name=P{i} age={i}" for i in range(n)}


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "guidance"])
def test_a_second_run_into_a_new_output_costs_nothing(tmp_path, fast) -> None:
    cache = tmp_path / "c.sqlite3"
    with FakeDeepInfra(echo) as fake:
        options = dict(model="test/model", api_key=KEY, base_url=fake.base_url, fast=fast, cache=cache)
        first = extract(texts(12), SCHEMA, output=tmp_path / "one.jsonl", concurrency=4, **options)
        assert len(fake.requests) == 12 and first.cached_calls == 0
        assert first.estimated_cost == pytest.approx(12 * COST)
        second = extract(texts(12), SCHEMA, output=tmp_path / "two.jsonl", concurrency=4, **options)
        assert len(fake.requests) == 12  # nothing sent
    assert list(second) == list(first) and second.done == 12
    assert second.cached_calls == 12 and second.estimated_cost == 0
    assert second.saved_cost == pytest.approx(12 * COST)
    records = read_output(tmp_path / "two.jsonl")
    assert {r["id"]: r["result"] for r in records} == {
        r["id"]: r["result"] for r in read_output(tmp_path / "one.jsonl")
    }
    assert all(r["estimated_cost"] == 0 for r in records)


def test_a_batch_on_one_model_object_replays_from_the_first_answer_each_time(tmp_path) -> None:
    with FakeDeepInfra(echo) as fake:
        lm = DeepInfra("test/model", api_key=KEY, base_url=fake.base_url, cache=tmp_path / "c.sqlite3", echo=False)
        inputs = ["name=A age=1", "name=A age=1", "name=B age=2"]  # a repeated input: two occurrences
        extract(inputs, SCHEMA, model=lm)
        assert len(fake.requests) == 3
        again = extract(inputs, SCHEMA, model=lm)  # the same model object, a new batch
        assert len(fake.requests) == 3 and again.cached_calls == 3


def test_a_json_retry_in_extraction_is_replayed_with_zero_requests(tmp_path) -> None:
    cache = tmp_path / "c.sqlite3"
    with FakeDeepInfra(echo) as fake:
        fake.push(Reply.text('{"name": "P0", "age": -1}'))  # off-schema: retried with feedback
        options = dict(model="test/model", api_key=KEY, base_url=fake.base_url, cache=cache)
        first = extract(texts(1), SCHEMA, **options)
        assert len(fake.requests) == 2
        second = extract(texts(1), SCHEMA, **options)
        assert len(fake.requests) == 2 and second.cached_calls == 2 and list(second) == list(first)


def test_max_cost_stops_taking_inputs_loses_nothing_and_a_rerun_resumes(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    with FakeDeepInfra(echo) as fake:
        options = dict(model="test/model", api_key=KEY, base_url=fake.base_url, output=out, concurrency=2)
        bound = 5.5 * COST
        first = extract(texts(40), SCHEMA, max_cost=bound, **options)
        sent = len(fake.requests)
        written = read_output(out)
        assert first.stopped_at_cost and 6 <= sent <= 6 + 2  # the bound passed, plus what was in flight
        assert len(written) == first.done == sent and first.estimated_cost == pytest.approx(sent * COST)
        assert first.not_started == 40 - sent
        not_started = [r for r in first if not r]
        assert len(not_started) == 40 - sent and all(f.error_type == "NotStarted" for f in not_started)
        assert [r for r in first if r] == [
            {"name": f"P{i}", "age": i} for i in range(40) if f"r{i}" in {w["id"] for w in written}
        ]
        # A rerun with the same output skips what is written and does the rest.
        second = extract(texts(40), SCHEMA, **options)
        assert not second.stopped_at_cost and second.resumed == sent and second.done == 40 - sent
        assert len(fake.requests) == 40
    ids = [r["id"] for r in read_output(out)]
    assert sorted(ids) == sorted(texts(40)) and len(ids) == len(set(ids))  # none lost, none twice


def test_max_cost_counts_only_what_is_paid(tmp_path) -> None:
    cache = tmp_path / "c.sqlite3"
    with FakeDeepInfra(echo) as fake:
        options = dict(model="test/model", api_key=KEY, base_url=fake.base_url, cache=cache)
        extract(texts(10), SCHEMA, **options)
        replayed = extract(texts(10), SCHEMA, max_cost=COST / 2, **options)  # all from the cache: free
        assert not replayed.stopped_at_cost and replayed.done == 10 and len(fake.requests) == 10
        with pytest.raises(ConfigurationError):
            extract(texts(1), SCHEMA, max_cost=-1, **options)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    lines = [json.dumps({"id": i, "text": t}) for i, t in texts(20).items()]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def command(files: Path, fake: FakeDeepInfra, *extra: str, output: str = "out.jsonl", bar: bool = False) -> list[str]:
    return [
        "extract", "--schema", str(files / "schema.json"), "--input", str(files / "in.jsonl"),
        "--output", str(files / output), "--base-url", fake.base_url, "--model", "test/model",
        *([] if bar else ["--no-progress"]), *extra,
    ]  # fmt: skip


def test_dry_run_sends_nothing_and_estimates_from_the_prompts(files, monkeypatch, capsys) -> None:
    with FakeDeepInfra(echo) as fake:
        assert main(command(files, fake, "--dry-run", "--max-tokens", "50", "--price", "0.2,0.6")) == 0  # no key
        monkeypatch.setenv("DEEPINFRA_API_KEY", KEY)
        shown = capsys.readouterr().out
        assert len(fake.requests) == 0 and fake.connections == 0  # not even a connection
        assert "20 first request(s), 0 of them answered by the request cache" in shown
        assert "at most 1,000 (max_tokens per request)" in shown and "4 characters per token" in shown
        prompt = int(re.search(r"about ([\d,]+)", shown).group(1).replace(",", ""))
        expected = (prompt * 0.2 + 1000 * 0.6) / 1e6
        assert f"at most ${expected:.4f}" in shown
        # Run for real with the cache, for a part of the inputs, then dry-run again: cached ones are free.
        assert main(command(files, fake, "--cache", str(files / "c.sqlite3"), "--max-tokens", "50")) == 0
        assert len(fake.requests) == 20
        capsys.readouterr()
        assert (
            main(
                command(
                    files,
                    fake,
                    "--dry-run",
                    "--cache",
                    str(files / "c.sqlite3"),
                    "--max-tokens",
                    "50",
                    output="new.jsonl",
                )
            )
            == 0
        )
        shown = capsys.readouterr().out
        assert "20 first request(s), 20 of them answered by the request cache" in shown and len(fake.requests) == 20
        assert main(command(files, fake, "--dry-run")) == 0  # every input is in out.jsonl already
        assert "20 already in the output (skipped): 0 first request(s)" in capsys.readouterr().out
        assert "not bounded" in (
            main(command(files, fake, "--dry-run", output="x.jsonl")) == 0 and capsys.readouterr().out
        )
    assert not (files / "new.jsonl").exists() and not (files / "x.jsonl").exists()  # a dry run writes nothing


def test_the_command_stops_at_max_cost_says_how_far_and_resumes(files, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", KEY)
    with FakeDeepInfra(echo) as fake:
        assert main(command(files, fake, "--max-cost", f"{3.5 * COST}", "--concurrency", "1")) == 1
        err = capsys.readouterr().err
        assert len(fake.requests) == 4  # one at a time: the fourth answer passed the bound
        assert "stopped at --max-cost" in err and "4 of 20 input(s) have a record, 16 not started" in err
        assert len(read_output(files / "out.jsonl")) == 4
        assert main(command(files, fake)) == 0
        assert "16 done, 0 failed, 4 skipped" in capsys.readouterr().err and len(fake.requests) == 20


def test_the_command_reads_and_fills_a_cache(files, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", KEY)
    with FakeDeepInfra(echo) as fake:
        cache = ["--cache", str(files / "c.sqlite3")]
        assert main(command(files, fake, *cache)) == 0
        assert main(command(files, fake, *cache, output="again.jsonl", bar=True)) == 0
        err = capsys.readouterr().err
        assert len(fake.requests) == 20 and "20 request(s) answered by the cache" in err
        assert "cached=20" in err and "saved=$" in err and "cost=$0.0000" in err  # the progress bar
    assert len(read_output(files / "again.jsonl")) == 20


def test_the_guidance_path_counts_cached_answers_apart(tmp_path) -> None:
    with FakeDeepInfra(echo) as fake:
        lm = DeepInfra(
            "test/model", api_key=KEY, base_url=fake.base_url, cache=tmp_path / "c.sqlite3", echo=False,
            retry=RetryPolicy(sleep=lambda s: None),
        )  # fmt: skip
        extract(texts(3), SCHEMA, model=lm, fast=False)
        assert lm.total_usage.calls == 3
        extract(texts(3), SCHEMA, model=lm.fresh(), fast=False)
        assert lm.total_usage.calls == 3 and len(fake.requests) == 3
