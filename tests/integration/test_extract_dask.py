"""The multi-process recipe on a Dask LocalCluster: shards as tasks, one budget, a killed worker resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install 'guidance-deepinfra[dask]')"
)

from guidance_deepinfra.extract_dask import extract_on_dask  # noqa: E402
from guidance_deepinfra.testing import FakeDeepInfra, Reply  # noqa: E402

pytestmark = pytest.mark.slow  # a Dask cluster's worker processes, one killed mid-run

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def person(body: dict[str, Any]) -> Reply:
    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    match = re.search(r"name=(\w+) age=(\d+)", text)
    assert match, text
    return Reply.text(json.dumps({"name": match.group(1), "age": int(match.group(2))}), delay=0.05)


def test_shards_run_as_tasks_within_one_budget_and_a_killed_worker_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, shards, budget = 600, 4, 12
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": f"r{i}", "text": f"name=P{i} age={i}"}) + "\n" for i in range(n)))
    out = tmp_path / "out"
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-dask-test")  # read by each worker, not sent with the tasks
    with FakeDeepInfra(person) as fake:
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None, silence_logs=50
        )
        client = distributed.Client(cluster)
        try:
            outcome: dict[str, Any] = {}

            def drive() -> None:
                try:
                    outcome["summaries"] = extract_on_dask(
                        client, inputs, SCHEMA, out, shards=shards, budget=budget,
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
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            runner.join(60)
            assert not runner.is_alive()
        finally:
            client.close()
            cluster.close()
        assert "error" not in outcome, outcome.get("error")
    assert fake.max_active <= budget  # one global budget, divided among the shards
    records = []
    for shard in range(shards):
        path = out / f"shard-{shard}-of-{shards}.jsonl"
        records += [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert sorted(ids, key=lambda i: int(i[1:])) == [f"r{i}" for i in range(n)]  # every input once, none twice
    assert all(r["result"] == {"name": f"P{r['id'][1:]}", "age": int(r["id"][1:])} for r in records)
    summaries = outcome["summaries"]
    assert [s["shard"] for s in summaries] == list(range(shards))
    assert sum(s["failed"] for s in summaries) == 0
    # The shards of the killed worker were run again and resumed from their files.
    assert sum(s["resumed"] for s in summaries) > 0
    assert len(fake.requests) < n + budget * 2  # only unfinished inputs were redone
