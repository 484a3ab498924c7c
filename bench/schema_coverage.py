"""How many real-world JSON schemas json(schema) handles end to end, per category, on the fake server.

For each schema in the JSONSchemaBench development sample (read where it lies, never copied):

1. the node is built with ``guidance_deepinfra.json`` (and, for comparison, with guidance's own ``json()``,
   which compiles the schema with llguidance at build time);
2. a request is formed and the schema is sent unchanged, or a clear `InvalidProgramError` names what
   cannot be supported;
3. a document the schema accepts (its examples, or one generated from its keywords) comes back as the
   capture;
4. a document it rejects is never returned: scripted once before a valid one, it is retried away; scripted
   on every attempt, `ConstraintError` is raised and no capture is set.

Usage: ``python bench/schema_coverage.py [--per-category N] [--data DIR]``. Prints a table; exits 0 when no
schema failed a check.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...
from guidance import assistant, user
from guidance import json as guidance_json

import guidance_deepinfra
from guidance_deepinfra import ConstraintError, DeepInfra, InvalidProgramError, RetryPolicy, limits
from guidance_deepinfra.lowering.schema import prepare, schema_from_user
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply
from guidance_deepinfra.testing.schema_samples import invalid_document, valid_document

#: The sample lives in ``shared/`` beside the repository (never copied into it).
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "jsonschemabench-dev"

#: Outcomes, in table order. Only "failed" is a defect of the plugin; the others are accounted for.
OUTCOMES = ("handled", "handled (no invalid doc exists)", "refused with a clear error", "no sample generated", "failed")


@dataclass
class Result:
    category: str
    name: str
    guidance_builds: bool
    outcome: str
    detail: str = ""


def schema_files(directory: Path, per_category: int | None = None) -> list[Path]:
    """The schema files, optionally the first `per_category` of each category (sorted by name)."""
    by_category: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(directory.glob("*.json")):
        by_category[path.name.split("__")[0]].append(path)
    chosen: list[Path] = []
    for paths in by_category.values():
        chosen += paths[:per_category] if per_category else paths
    return chosen


def _guidance_builds(schema: Any) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            guidance_json("doc", schema=schema)
        return True
    except Exception:  # noqa: BLE001 - any build-time refusal counts
        return False


def _run(fake: FakeDeepInfra, lm: DeepInfra, node: Any, replies: list[Any]) -> DeepInfra:
    fake.requests.clear()
    fake.script.clear()
    fake.push(*[Reply.text(json.dumps(r)) for r in replies])
    with assistant():
        return lm + node


def check_schema(path: Path, fake: FakeDeepInfra, base: DeepInfra) -> Result:
    category = path.name.split("__")[0]
    raw = json.loads(path.read_text())
    builds = _guidance_builds(raw)
    result = Result(category, path.stem, builds, "failed")
    try:
        node = guidance_deepinfra.json("doc", schema=raw)
    except InvalidProgramError as exc:
        result.outcome, result.detail = "refused with a clear error", str(exc)[:120]
        return result
    prepared = prepare(schema_from_user(raw))
    valid = valid_document(prepared)
    if valid is None:
        result.outcome = "no sample generated"
        return result
    try:
        lm = _run(fake, base, node, [valid.value])
        sent = fake.requests[0]["response_format"]["json_schema"]["schema"]
        if sent != raw:
            result.detail = "the schema sent differs from the user's"
            return result
        if json.loads(lm["doc"]) != valid.value:
            result.detail = "the valid document was not the capture"
            return result
        invalid = invalid_document(prepared, valid.value)
        if invalid is None:
            result.outcome = "handled (no invalid doc exists)"
            return result
        lm = _run(fake, base, node, [invalid.value, valid.value])
        if json.loads(lm["doc"]) != valid.value or len(fake.requests) != 2:
            result.detail = "an invalid document was not retried away"
            return result
        try:
            with limits(max_attempts=2):
                lm = _run(fake, base, node, [invalid.value, invalid.value])
            result.detail = "an invalid document was returned as the capture"
            return result
        except ConstraintError:
            pass
    except Exception as exc:  # noqa: BLE001 - any other error is a failure to report
        result.detail = f"{type(exc).__name__}: {str(exc)[:120]}"
        return result
    result.outcome = "handled"
    return result


def run(directory: Path = DATA, per_category: int | None = None) -> list[Result]:
    results = []
    with FakeDeepInfra() as fake:
        base = DeepInfra(
            "bench/schemas",
            api_key="bench",
            base_url=fake.base_url,
            echo=False,
            logprobs=False,
            profiles=ProfileRegistry(),
            retry=RetryPolicy(sleep=lambda _s: None),
            max_retries=0,
        )
        with user():
            base += "Produce the document."
        for path in schema_files(directory, per_category):
            results.append(check_schema(path, fake, base))
    return results


def coverage(results: list[Result]) -> dict[str, Any]:
    """The per-category table of outcomes."""
    categories = sorted({r.category for r in results})
    header = ["category", "schemas", "guidance json() builds", *OUTCOMES]
    rows = []
    for cat in [*categories, "total"]:
        mine = [r for r in results if cat in ("total", r.category)]
        counts = Counter(r.outcome for r in mine)
        rows.append(
            [cat, str(len(mine)), str(sum(r.guidance_builds for r in mine)), *[str(counts[o]) for o in OUTCOMES]]
        )
    return table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-category", type=int, default=None, help="only the first N schemas per category")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (the JSONSchemaBench sample is not on this machine)")
        return 0
    results = run(args.data, args.per_category)
    by_category = coverage(results)
    print(markdown(by_category))
    notes = [f"- {r.name}: {r.outcome}: {r.detail}" for r in results if r.outcome != "handled" and r.detail]
    if notes:
        print("\n" + "\n".join(notes))
    write_results("schema_coverage", {"by_category": by_category}, figures={"notes": notes})
    return 1 if any(r.outcome == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
