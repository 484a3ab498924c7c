"""Extraction on a Dask LocalCluster: a leased budget filled by the shards that run, each input line read by
one task, a killed worker resumed, bad inputs refused before any request."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install 'guidance-deepinfra[dask]')"
)
import dask  # noqa: E402

from guidance_deepinfra.errors import ConfigurationError  # noqa: E402
from guidance_deepinfra.extract_dask import extract_on_dask  # noqa: E402
from guidance_deepinfra.testing import FakeDeepInfra, Reply  # noqa: E402

pytestmark = pytest.mark.slow  # a Dask cluster's worker processes

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
#: A dead worker's leases come back after this (the scheduler runs in the test's process).
LEASES = {
    "distributed.scheduler.locks.lease-timeout": "2s",
    "distributed.scheduler.locks.lease-validation-interval": "0.5s",
}


def answering(delay: float) -> Any:
    def person(body: dict[str, Any]) -> Reply:
        text = next(m["content"] for m in body["messages"] if m["role"] == "user")
        match = re.search(r"name=(\w+) age=(\d+)", text)
        assert match, text
        return Reply.text(json.dumps({"name": match.group(1), "age": int(match.group(2))}), delay=delay)

    return person


def write_inputs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": f"name=P{i} age={i}"}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def cluster() -> Iterator[Any]:
    with dask.config.set(LEASES):
        local = distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None, silence_logs=50
        )
        client = distributed.Client(local)
        try:
            yield client
        finally:
            client.close()
            local.close()


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-dask-test")  # read by each worker, not sent with the tasks


def test_the_running_shards_fill_the_budget_and_each_line_is_read_by_one_task(tmp_path: Path, cluster: Any) -> None:
    n, shards, budget = 1200, 8, 24  # 8 shards on 4 worker threads: half of them wait while the others run
    inputs = write_inputs(tmp_path / "in.jsonl", n)
    out = tmp_path / "out"
    with FakeDeepInfra(answering(0.1)) as fake:
        summary = extract_on_dask(
            cluster, inputs, SCHEMA, out, shards=shards, budget=budget, merge=True,
            model="test/model", base_url=fake.base_url, logprobs=False,
        )  # fmt: skip
    # A static split (budget // shards each) would reach 4 * 3 = 12; the leases follow the running shards.
    assert 0.9 * budget <= fake.max_active <= budget
    assert summary["done"] == n and summary["failed"] == 0
    assert len(fake.requests) == n
    merged = [json.loads(line) for line in Path(summary["merged"]).read_text().splitlines()]
    assert [r["id"] for r in merged] == [f"r{i}" for i in range(n)]  # one file, in input order
    assert all(r["result"] == {"name": f"P{r['id'][1:]}", "age": int(r["id"][1:])} for r in merged)
    # Each line was parsed by one task; bytes beyond the shard's own lines are at most one line each.
    assert summary["lines_read"] == n
    size = inputs.stat().st_size
    assert size <= summary["bytes_read"] <= size + shards * 40
    assert all(s["partition"] == "bytes" for s in summary["shards"])


def test_bad_inputs_are_refused_before_any_request(tmp_path: Path, cluster: Any) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 10)
    with FakeDeepInfra(answering(0.0)) as fake:
        common = dict(model="test/model", base_url=fake.base_url, logprobs=False)
        with pytest.raises(ConfigurationError, match=r"budget must be at least one request per shard .*\(4: 8 shards"):
            extract_on_dask(cluster, inputs, SCHEMA, tmp_path / "out", shards=8, budget=3, **common)
        with pytest.raises(ConfigurationError, match=r"not every worker can read .*missing.jsonl"):
            extract_on_dask(cluster, tmp_path / "missing.jsonl", SCHEMA, tmp_path / "out", shards=2, **common)
        assert fake.requests == []


def test_a_worker_killed_mid_run_loses_nothing_and_doubles_nothing(tmp_path: Path, cluster: Any) -> None:
    n, shards, budget = 600, 4, 12
    inputs = write_inputs(tmp_path / "in.jsonl", n)
    out = tmp_path / "out"
    with FakeDeepInfra(answering(0.05)) as fake:
        outcome: dict[str, Any] = {}

        def drive() -> None:
            try:
                outcome["summary"] = extract_on_dask(
                    cluster, inputs, SCHEMA, out, shards=shards, budget=budget, merge=True,
                    model="test/model", base_url=fake.base_url, logprobs=False,
                )  # fmt: skip
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        runner = threading.Thread(target=drive)
        runner.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every shard runs (4 task threads) and has written records
            files = [out / f"shard-{k}-of-{shards}.jsonl" for k in range(shards)]
            if all(p.exists() and p.read_bytes().count(b"\n") >= 5 for p in files):
                break
            time.sleep(0.02)
        victim = sorted(cluster.run(os.getpid).values())[0]
        os.kill(victim, signal.SIGKILL)
        runner.join(90)
        assert not runner.is_alive()
        assert "error" not in outcome, outcome.get("error")
    assert fake.max_active <= budget  # the dead worker's leases stay held until they time out
    records = []
    for shard in range(shards):
        path = out / f"shard-{shard}-of-{shards}.jsonl"
        records += [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert sorted(ids, key=lambda i: int(i[1:])) == [f"r{i}" for i in range(n)]  # every input once, none twice
    summary = outcome["summary"]
    merged = [json.loads(line)["id"] for line in Path(summary["merged"]).read_text().splitlines()]
    assert merged == [f"r{i}" for i in range(n)]
    assert summary["failed"] == 0
    assert summary["resumed"] > 0  # the killed worker's shards were run again and resumed from their files
    assert len(fake.requests) < n + budget * 2  # only unfinished inputs were redone
