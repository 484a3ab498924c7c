"""Real-world schemas end to end (a sample of the JSONSchemaBench development set), and the sample builder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from guidance_deepinfra.lowering.schema import prepare
from guidance_deepinfra.testing.schema_samples import invalid_document, regex_example, valid_document

BENCH = Path(__file__).resolve().parents[3] / "bench" / "schema_coverage.py"


def _coverage_module():
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))  # for bench/_results.py, as when run as python bench/...
    spec = importlib.util.spec_from_file_location("schema_coverage", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["schema_coverage"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sample_of_real_world_schemas_is_handled_end_to_end() -> None:
    coverage = _coverage_module()
    if not coverage.DATA.is_dir():
        pytest.skip(f"{coverage.DATA} is absent: the JSONSchemaBench sample is not on this machine")
    results = coverage.run(coverage.DATA, per_category=2)
    assert len({r.category for r in results}) == 10
    failed = [f"{r.name}: {r.detail}" for r in results if r.outcome == "failed"]
    assert not failed, failed
    handled = [r for r in results if r.outcome.startswith("handled")]
    assert len(handled) >= 0.9 * len(results)


def test_coverage_report_skips_cleanly_without_the_data(tmp_path, capsys) -> None:
    coverage = _coverage_module()
    assert coverage.main(["--data", str(tmp_path / "absent")]) == 0
    assert "skipped" in capsys.readouterr().out


def test_samples_respect_the_schema() -> None:
    prepared = prepare(
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
                "n": {"type": "integer", "minimum": 5, "multipleOf": 5},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2, "uniqueItems": True},
            },
            "required": ["id", "n", "tags"],
            "$defs": {"tag": {"type": "string", "minLength": 3}},
        }
    )
    valid = valid_document(prepared)
    assert valid is not None and prepared.validator.is_valid(valid.value)
    invalid = invalid_document(prepared, valid.value)
    assert invalid is not None and not prepared.validator.is_valid(invalid.value)
    assert regex_example(r"^[^a]x+(foo|bar)\s$") == "bxfoo "
