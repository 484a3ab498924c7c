"""Extraction past one process: shards as tasks on Dask's distributed scheduler.

One process already holds DeepInfra's 200 concurrent requests per model (see the README), and that limit
is shared by every process using the key, so more processes help only when something else is the bound:
validation heavy enough to fill a core, several models (each has its own limit), or several accounts. For
those cases::

    from dask.distributed import Client
    from guidance_deepinfra.extract_dask import extract_on_dask

    client = Client("scheduler-address:8786")          # or Client(LocalCluster(...))
    summaries = extract_on_dask(client, "inputs.jsonl", "schema.json", "results/", shards=8, budget=200)

Each shard is one task that runs `run_extraction` over the inputs whose id hashes to it (the CLI's
``--shard K/N``), writing its own durable output ``results/shard-K-of-N.jsonl``, so no two tasks ever
write one file. The in-flight budget is divided among the shards (``budget // shards`` each), so all of
them together never exceed it, however many run at once. When a worker dies, Dask runs its tasks again on
another worker; a task resumes from its output file (records written stay, a torn last line is cut, the
rest is redone), so nothing is lost or written twice. The output and input paths must be readable and
writable from every worker (a shared filesystem), and the key is read by each worker from its own
``DEEPINFRA_API_KEY`` unless passed (a key passed here travels inside the task's arguments).

Needs the ``dask`` extra: ``pip install "guidance-deepinfra[dask]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .api import load_schema, run_extraction
from .inputs import read_inputs, shard_of


def shard_output(output_dir: str | Path, shard: int, shards: int) -> Path:
    """The output file of one shard."""
    return Path(output_dir) / f"shard-{shard}-of-{shards}.jsonl"


def extract_shard(
    inputs: str | Path,
    schema: Any,
    output_dir: str | Path,
    shard: int,
    shards: int,
    *,
    concurrency: int,
    **options: Any,
) -> dict[str, Any]:
    """Run one shard (the task body); returns its counts. Rerunning it resumes from its output file.

    `schema` is a JSON schema (dict) or a `load_schema` spec (``schema.json``, ``module:Class``), so that
    it travels to workers as plain data.
    """
    parsed = load_schema(schema) if isinstance(schema, str) else schema
    output = shard_output(output_dir, shard, shards)
    items = (item for item in read_inputs(inputs) if shard_of(item.id, shards) == shard)
    results = run_extraction(
        items,
        parsed,
        output=output,
        errors=output.with_name(output.stem + ".errors.jsonl"),
        concurrency=concurrency,
        collect=False,
        **options,
    )
    return {
        "shard": shard,
        "output": str(output),
        "done": results.done,
        "failed": results.failed,
        "resumed": results.resumed,
        "rate_limited": results.rate_limited,
        "estimated_cost": results.estimated_cost,
    }


def extract_on_dask(
    client: Any,
    inputs: str | Path,
    schema: Any,
    output_dir: str | Path,
    *,
    shards: int,
    budget: int = 200,
    task_retries: int = 3,
    **options: Any,
) -> list[dict[str, Any]]:
    """Run `shards` shard tasks on a ``dask.distributed.Client`` and wait for them; their counts by shard.

    `budget` is the most requests in flight over all shards (DeepInfra's per-model limit by default), split
    evenly; `task_retries` is how many more times a failed task (not a lost worker: Dask reruns those
    itself) is run. Other options go to `run_extraction` (``model``, ``base_url``, ``max_attempts``...).
    """
    if not isinstance(shards, int) or shards < 1:
        raise ConfigurationError(f"shards must be a positive integer, got {shards!r}")
    if not isinstance(budget, int) or budget < shards:
        raise ConfigurationError(f"budget must be at least one request per shard ({shards}), got {budget!r}")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    per_shard = budget // shards
    futures = [
        client.submit(
            extract_shard,
            str(inputs),
            schema,
            str(output_dir),
            shard,
            shards,
            concurrency=per_shard,
            key=f"guidance-deepinfra-extract-{shard}-of-{shards}",
            pure=False,
            retries=task_retries,
            **options,
        )
        for shard in range(shards)
    ]
    return sorted(client.gather(futures), key=lambda summary: summary["shard"])
