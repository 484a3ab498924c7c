"""Every benchmark table and quoted figure in README.md and docs/*.md is the one its results file holds.

The regions are written by ``bench/render_readme.py`` from ``bench/results/<name>.json``; a figure edited by
hand, or a benchmark rerun without rendering, fails here.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _module(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # as when run as python bench/...: bench/ is not a package
    return importlib.import_module(name)


render_readme = _module("render_readme")
results = _module("_results")


@pytest.mark.parametrize("path", render_readme.documents(ROOT), ids=lambda p: p.name)
def test_marked_regions_match_their_results_files(path: Path) -> None:
    found = list(render_readme.mismatches(path))
    assert not found, "\n\n".join(map(str, found)) + "\n\nrun: python bench/render_readme.py"


def test_the_readme_marks_its_benchmark_tables() -> None:
    marked = render_readme.markers(ROOT / "README.md")
    for name in ("overhead", "select_json", "schema_coverage", "grammar", "stops", "extract", "startup"):
        assert any(m.startswith(f"{name}/") for m in marked), f"no README table from bench/results/{name}.json"


def test_every_results_file_records_its_run() -> None:
    for path in sorted((BENCH / "results").glob("*.json")):
        record = json.loads(path.read_text())
        for key in ("command", "date", "commit", "python", "versions", "tables", "figures"):
            assert key in record, f"{path.name} has no {key!r}"
        assert record["benchmark"] == path.stem


def _results_dir(tmp_path: Path) -> Path:
    rows = [["raw openai SDK", "6.55", "1.00"], ["DeepInfra", "7.58", "1.16"]]
    results.write_results(
        "demo",
        {"calls": results.table(["backend", "ms", "ratio"], rows)},
        figures={"ratio": "1.16"},
        argv=["bench/demo.py"],
        directory=tmp_path,
    )
    return tmp_path


def test_a_table_edited_by_hand_is_found_and_rendered_back(tmp_path: Path) -> None:
    directory = _results_dir(tmp_path)
    good = render_readme.render("x\n<!-- bench:demo/calls -->\nstale\n<!-- /bench -->\ny\n", directory)
    assert "| DeepInfra | 7.58 | 1.16 |\n<!-- /bench -->\ny\n" in good and "stale" not in good
    doc = tmp_path / "doc.md"
    doc.write_text(good)
    assert list(render_readme.mismatches(doc, directory)) == []
    doc.write_text(good.replace("7.58", "7.50"))
    (found,) = render_readme.mismatches(doc, directory)
    assert found.marker == "bench:demo/calls" and found.line == 2 and "7.50" in found.found


def test_a_quoted_figure_that_differs_is_found(tmp_path: Path) -> None:
    directory = _results_dir(tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text("DeepInfra at <!-- figure:demo/ratio -->1.61<!-- /figure -->x the SDK.\n")
    (found,) = render_readme.mismatches(doc, directory)
    assert found.marker == "figure:demo/ratio" and found.expected == "1.16"
    rendered = render_readme.render(doc.read_text(), directory)
    assert rendered == "DeepInfra at <!-- figure:demo/ratio -->1.16<!-- /figure -->x the SDK.\n"


def test_a_marker_without_its_results_is_an_error(tmp_path: Path) -> None:
    directory = _results_dir(tmp_path)
    with pytest.raises(render_readme.ResultsError, match="no results file"):
        render_readme.render("<!-- bench:missing/calls -->\n<!-- /bench -->", directory)
    with pytest.raises(render_readme.ResultsError, match="no table 'other'"):
        render_readme.render("<!-- bench:demo/other -->\n<!-- /bench -->", directory)
    with pytest.raises(render_readme.ResultsError, match="no figure 'other'"):
        render_readme.render("<!-- figure:demo/other --><!-- /figure -->", directory)
