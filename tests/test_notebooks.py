"""The example notebooks run offline in a real Jupyter kernel, replaying their cassettes.

Each notebook is executed by nbclient in a fresh kernel running this interpreter, with no key and no
network: every request must match a recorded one (method, path, JSON body), every recorded request must be
used, and the printed outputs must equal the outputs saved in the notebook, so the saved notebooks are
what the code really prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from guidance_deepinfra.notebook import PROVENANCE, run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CASSETTES = ROOT / "cassettes" / "notebooks"


def printed(cell: Any) -> str:
    """What a code cell showed a reader: its stdout and its result, without stderr (progress bars)."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream" and output["name"] == "stdout":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


def connected_name(notebook: Any) -> str:
    """The cassette name a notebook passes to `connect()`."""
    for cell in notebook.cells:
        if 'connect("' in cell.source:
            return cell.source.split('connect("', 1)[1].split('"', 1)[0]
    raise AssertionError("the notebook never calls connect()")


def test_every_notebook_has_its_cassette_and_no_cassette_is_orphaned() -> None:
    assert NOTEBOOKS and NOTEBOOKS[0].name == "01_quickstart.ipynb"
    names = {connected_name(nbformat.read(p, as_version=4)) for p in NOTEBOOKS}
    assert names == {p.stem.partition("_")[2] for p in NOTEBOOKS}, "connect() takes the notebook's name"
    assert names == {p.stem for p in CASSETTES.glob("*.yaml")}
    assert names == set(json.loads((CASSETTES / "provenance.json").read_text()))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_replays_offline_with_its_saved_outputs(path: Path) -> None:
    saved = nbformat.read(path, as_version=4)
    run = run_notebook(path, "replay", timeout=60)

    assert Path(run.executable).resolve() == Path(sys.executable).resolve(), "the kernel ran another Python"
    [session] = run.sessions
    assert session["name"] == connected_name(saved)
    assert session["recorded"] > 0 and session["played"] == session["recorded"], "recorded requests not replayed"

    ran = [c for c in run.notebook.cells if c.cell_type == "code"]
    assert sum(bool(printed(c).strip()) for c in ran) >= len(ran) // 2, "a notebook should show its results"
    kept = [c for c in saved.cells if c.cell_type == "code"]
    assert len(ran) == len(kept)
    for index, (new, old) in enumerate(zip(ran, kept, strict=True)):
        assert old.get("execution_count"), f"cell {index} was saved without running it"
        assert printed(new) == printed(old), f"cell {index} prints something else than the saved notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cassette_has_provenance_and_no_credentials(path: Path) -> None:
    name = connected_name(nbformat.read(path, as_version=4))
    cassette = CASSETTES / f"{name}.yaml"
    text = cassette.read_text().lower()
    assert "authorization" not in text and "bearer" not in text
    assert "127.0.0.1" not in text, "a synthesized cassette still points at the fake server"
    provenance = json.loads((CASSETTES / "provenance.json").read_text())
    assert provenance[name]["provenance"] in PROVENANCE.values()


def test_a_request_the_cassette_lacks_fails_the_notebook(tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(NOTEBOOKS[0], as_version=4)
    for cell in notebook.cells:
        cell.source = cell.source.replace("max_tokens=60", "max_tokens=61")
    changed = tmp_path / "changed.ipynb"
    nbformat.write(notebook, changed)
    with pytest.raises(CellExecutionError, match="(?i)cassette|match"):
        run_notebook(changed, "replay", timeout=60)
