"""Start-up: what importing the package and asking the command for help cost, side by side in one run.

Every row is a fresh interpreter (or the installed ``guidance-deepinfra`` command) started from an empty
directory, timed from start to exit; rows are interleaved round by round so the machine's noise hits them
alike, after one warm-up round (bytecode written, files in the page cache). Every child reads and writes its
bytecode under one temporary ``PYTHONPYCACHEPREFIX`` whatever ``PYTHONDONTWRITEBYTECODE`` says, so each
module is compiled once, as in an installed package, rather than on every start. A row's net time is its median
less the median of ``python -c pass``, the interpreter's own start-up; the ratio is that net time over the
net time of ``import guidance, openai``, what any guidance program on DeepInfra needs anyway. Each is given
for the wall time and for the child's own CPU time, which other jobs on a shared machine move less.

``--before REV`` adds the same rows for the package as it was at commit REV (exported with ``git archive``
and put first on ``PYTHONPATH``), measured in the same rounds. ``--bound`` (default 1.3) makes the run exit
with status 1 when ``from guidance_deepinfra import DeepInfra`` is above that ratio.

Usage: python bench/startup.py [--rounds 5] [--before REV] [--bound 1.3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from _results import markdown, table, write_results  # bench/ is on the path when run as python bench/...

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def command() -> str:
    """The installed ``guidance-deepinfra`` script beside this interpreter (as a user's shell finds it)."""
    beside = Path(PY).with_name("guidance-deepinfra")
    found = str(beside) if beside.exists() else shutil.which("guidance-deepinfra")
    if not found:
        raise SystemExit("guidance-deepinfra is not installed for this interpreter (pip install -e .)")
    return found


#: (label, argv) of each row; the package's rows are repeated for --before.
BASELINE = ("`python -c pass`", [PY, "-c", "pass"])
REFERENCE = ("`import guidance, openai`", [PY, "-c", "import guidance, openai"])


def package_rows() -> list[tuple[str, list[str]]]:
    cli = command()
    return [
        ("`import guidance_deepinfra`", [PY, "-c", "import guidance_deepinfra"]),
        ("`from guidance_deepinfra import DeepInfra`", [PY, "-c", "from guidance_deepinfra import DeepInfra"]),
        ("`guidance-deepinfra --help`", [cli, "--help"]),
        ("`guidance-deepinfra extract --help`", [cli, "extract", "--help"]),
    ]


def export(rev: str, into: Path) -> str:
    """The package's files at commit `rev`, written under `into`; returns the commit's short id."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(["git", "archive", rev, "guidance_deepinfra"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return short


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU is the child's own, which other jobs on the machine move less."""
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0, _children_cpu() - c0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=None, metavar="REV", help="also measure the package at commit REV")
    parser.add_argument("--bound", type=float, default=1.3, help="largest ratio of the DeepInfra import row")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "cwd"
        empty.mkdir()
        unset = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
        plain_env = {k: v for k, v in os.environ.items() if k not in unset}
        plain_env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        rows: list[tuple[str, str, list[str], dict[str, str]]] = [
            (BASELINE[0], "", BASELINE[1], plain_env),
            (REFERENCE[0], "", REFERENCE[1], plain_env),
        ]
        before = None
        if args.before:
            before = export(args.before, Path(tmp) / "before")
            old_env = {**plain_env, "PYTHONPATH": str(Path(tmp) / "before")}
            rows += [(label, before, argv, old_env) for label, argv in package_rows()]
        now = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        rows += [(label, now, argv, plain_env) for label, argv in package_rows()]

        for _, _, argv, env in rows:  # warm-up round, not counted
            timed(argv, env, empty)
        walls: list[list[float]] = [[] for _ in rows]
        cpus: list[list[float]] = [[] for _ in rows]
        for _ in range(args.rounds):
            for i, (_, _, argv, env) in enumerate(rows):
                one_wall, one_cpu = timed(argv, env, empty)
                walls[i].append(one_wall)
                cpus[i].append(one_cpu)
    load_end = os.getloadavg()[0]

    wall = [statistics.median(t) for t in walls]
    cpu = [statistics.median(t) for t in cpus]
    reference, reference_cpu = wall[1] - wall[0], cpu[1] - cpu[0]
    median_of: dict[tuple[str, str], float] = {}
    ratio_of: dict[tuple[str, str], float] = {}
    cpu_ratio_of: dict[tuple[str, str], float] = {}
    printed = [[BASELINE[0], "-", f"{wall[0]:.3f}", "0", "-", f"{cpu[0]:.3f}", "0", "-"]]
    for i, (label, side, _, _) in enumerate(rows[1:], start=1):
        median_of[label, side] = wall[i]
        ratio_of[label, side] = (wall[i] - wall[0]) / reference
        cpu_net = cpu[i] - cpu[0]
        cpu_ratio_of[label, side] = cpu_net / reference_cpu
        printed.append(
            [label, side or "-", f"{wall[i]:.3f}", f"{wall[i] - wall[0]:.3f}", f"{ratio_of[label, side]:.2f}"]
            + [f"{cpu[i]:.3f}", f"{cpu_net:.3f}", f"{cpu_ratio_of[label, side]:.2f}"]
        )
    columns = ["what runs", "package at", "wall s", "wall net s", "ratio", "CPU s", "CPU net s", "ratio"]
    startup = table(columns, printed)
    print(f"{args.rounds} rounds interleaved after one warm-up round; load average {load_start:.2f} -> {load_end:.2f}")
    print(markdown(startup))

    bare, model, helps = (label for label, _ in package_rows()[:3])
    figures = {
        "rounds": str(args.rounds),
        "import_ratio": f"{ratio_of[bare, now]:.2f}",
        "model_ratio": f"{ratio_of[model, now]:.2f}",
        "help_s": f"{median_of[helps, now]:.2f}",
        "reference_s": f"{reference:.2f}",
        "model_cpu_ratio": f"{cpu_ratio_of[model, now]:.2f}",
        "load_start": f"{load_start:.1f}",
        "load_end": f"{load_end:.1f}",
        "cores": str(os.cpu_count()),
    }
    if before:
        figures["before"] = before
        figures["before_model_ratio"] = f"{ratio_of[model, before]:.2f}"
        figures["before_import_ratio"] = f"{ratio_of[bare, before]:.2f}"
        figures["before_help_s"] = f"{median_of[helps, before]:.2f}"
    write_results("startup", {"startup": startup}, figures=figures)
    if ratio_of[model, now] > args.bound:
        print(f"{model} is {ratio_of[model, now]:.2f}x {REFERENCE[0]} here, above --bound {args.bound}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
