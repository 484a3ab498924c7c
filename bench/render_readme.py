"""Write the README's (and docs/*.md's) benchmark tables and quoted figures from ``bench/results/*.json``.

A table sits between ``<!-- bench:NAME/TABLE -->`` and ``<!-- /bench -->`` and holds exactly
``markdown(table)`` of table TABLE in ``bench/results/NAME.json``. A single figure quoted in prose sits between
``<!-- figure:NAME/KEY -->`` and ``<!-- /figure -->`` and holds that file's ``figures[KEY]`` as a string.
So a figure in the documentation is the one its benchmark last wrote, and ``tests/docs/test_bench_results.py``
fails when one is edited by hand or a benchmark is rerun without rendering.

Usage: ``python bench/render_readme.py`` rewrites the files; ``--check`` only lists what differs (exit 1).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import RESULTS, markdown  # noqa: E402 - bench/ is not a package

ROOT = Path(__file__).resolve().parents[1]
TABLE = re.compile(
    r"(?P<open><!-- bench:(?P<name>[\w.-]+)/(?P<key>[\w.-]+) -->\n)(?P<inside>.*?)(?P<close><!-- /bench -->)", re.S
)
FIGURE = re.compile(
    r"(?P<open><!-- figure:(?P<name>[\w.-]+)/(?P<key>[\w.-]+) -->)(?P<inside>.*?)(?P<close><!-- /figure -->)", re.S
)


class ResultsError(LookupError):
    """A marker names a results file, table or figure that does not exist."""


@dataclass(frozen=True)
class Mismatch:
    """One marked region whose text is not what its results file says."""

    path: Path
    line: int
    marker: str
    found: str
    expected: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: {self.marker} differs from its results file"
        return f"{where}\n--- found\n{self.found}\n--- expected\n{self.expected}"


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose marked regions are rendered: README.md and docs/*.md."""
    found = [root / "README.md"] if (root / "README.md").exists() else []
    return found + sorted((root / "docs").glob("*.md"))


def _load(name: str, results: Path, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if name not in cache:
        path = results / f"{name}.json"
        if not path.exists():
            raise ResultsError(f"no results file {path} (run bench/{name}.py)")
        cache[name] = json.loads(path.read_text())
    return cache[name]


def table_text(name: str, key: str, results: Path = RESULTS, cache: dict[str, dict[str, Any]] | None = None) -> str:
    """What belongs between ``<!-- bench:NAME/KEY -->`` and ``<!-- /bench -->`` (the newline before the close)."""
    record = _load(name, results, {} if cache is None else cache)
    tables = record.get("tables", {})
    if key not in tables:
        raise ResultsError(f"{name}.json has no table {key!r} (it has {sorted(tables)})")
    return markdown(tables[key]) + "\n"


def figure_text(name: str, key: str, results: Path = RESULTS, cache: dict[str, dict[str, Any]] | None = None) -> str:
    """What belongs between ``<!-- figure:NAME/KEY -->`` and ``<!-- /figure -->``."""
    record = _load(name, results, {} if cache is None else cache)
    figures = record.get("figures", {})
    if key not in figures:
        raise ResultsError(f"{name}.json has no figure {key!r} (it has {sorted(figures)})")
    return str(figures[key])


def render(text: str, results: Path = RESULTS) -> str:
    """`text` with every marked table and figure rewritten from the results files."""
    cache: dict[str, dict[str, Any]] = {}

    def table(m: re.Match[str]) -> str:
        return m["open"] + table_text(m["name"], m["key"], results, cache) + m["close"]

    def figure(m: re.Match[str]) -> str:
        return m["open"] + figure_text(m["name"], m["key"], results, cache) + m["close"]

    return FIGURE.sub(figure, TABLE.sub(table, text))


def mismatches(path: Path, results: Path = RESULTS) -> Iterable[Mismatch]:
    """Every marked region of the file at `path` that differs from its results file."""
    text = path.read_text()
    cache: dict[str, dict[str, Any]] = {}
    for pattern, expected_for, kind in ((TABLE, table_text, "bench"), (FIGURE, figure_text, "figure")):
        for m in pattern.finditer(text):
            expected = expected_for(m["name"], m["key"], results, cache)
            if m["inside"] != expected:
                line = text.count("\n", 0, m.start()) + 1
                yield Mismatch(path, line, f"{kind}:{m['name']}/{m['key']}", m["inside"], expected)


def markers(path: Path) -> list[str]:
    """The ``NAME/KEY`` of every table and figure marked in the file."""
    text = path.read_text()
    return [f"{m['name']}/{m['key']}" for pattern in (TABLE, FIGURE) for m in pattern.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list the regions that differ, change nothing")
    args = parser.parse_args(argv)
    if args.check:
        found = [m for path in documents() for m in mismatches(path)]
        for mismatch in found:
            print(mismatch, end="\n\n")
        return 1 if found else 0
    for path in documents():
        text = path.read_text()
        rendered = render(text)
        if rendered != text:
            path.write_text(rendered)
            print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
