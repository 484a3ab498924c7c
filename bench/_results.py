"""Every benchmark writes what it measured to ``bench/results/<name>.json``, so a README figure can be traced to
the run that produced it.

A results file holds the command, the date, the commit (and whether the tree had uncommitted changes), the
Python and library versions, the machine's core count and load average, and the tables the run printed, cell
by cell as printed. The README's tables are written from these files (``bench/render_readme.py``), between
``<!-- bench:NAME/TABLE -->`` and ``<!-- /bench -->``; a test fails when one no longer matches its file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
LIBRARIES = ("guidance-deepinfra", "guidance", "llguidance", "openai", "aiohttp", "jsonschema", "pydantic", "dask")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A printed table: its header and its rows, each cell as the string that was printed."""
    width = len(columns)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"a row has {len(row)} cells, the header {width}: {row!r}")
    return {"columns": [str(c) for c in columns], "rows": [[str(c) for c in row] for row in rows]}


def markdown(t: dict[str, Any]) -> str:
    """The table as the README shows it."""
    lines = ["| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(row) + " |" for row in t["rows"]]
    return "\n".join(lines)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=RESULTS.parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_results(
    name: str,
    tables: dict[str, dict[str, Any]],
    *,
    figures: dict[str, Any] | None = None,
    argv: Sequence[str] | None = None,
    directory: Path | None = None,
) -> Path:
    """Write ``<directory>/<name>.json`` (``bench/results/`` by default) and return its path.

    ``tables`` maps a table's id to ``table(columns, rows)``; ``figures`` holds single numbers the README's prose
    quotes (a ratio, a peak), by name.
    """
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).name if argv else name
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    record = {
        "benchmark": name,
        "command": " ".join(["python", f"bench/{script}", *argv[1:]]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "versions": _versions(),
        "tables": tables,
        "figures": figures or {},
    }
    target = (directory or RESULTS) / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return target
