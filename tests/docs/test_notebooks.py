"""The example notebooks run offline in a real Jupyter kernel, replaying their cassettes.

Each notebook is executed by nbclient in a fresh kernel running this interpreter, with no key and no
network: every request must match a recorded one (method, path, JSON body), every recorded request must be
used, and the printed outputs must equal the outputs saved in the notebook, so the saved notebooks are
what the code really prints.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from guidance_deepinfra import __version__
from guidance_deepinfra.demo.provenance import today
from guidance_deepinfra.model import DEFAULT_MODEL
from guidance_deepinfra.notebook import provenance_note, run_notebook, scripted_replies
from guidance_deepinfra.testing import FakeDeepInfra
from guidance_deepinfra.testing.fake_server import COST_PER_TOKEN

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.mark.slow
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
    entry = json.loads((CASSETTES / "provenance.json").read_text())[name]
    assert entry["source"] in ("synthesized", "live")
    assert entry["model"] == DEFAULT_MODEL and entry["date"] and entry["plugin_version"]
    if entry["source"] == "synthesized":
        assert entry["replies"] == "notebooks/_replies.py" and entry["price_per_token_usd"] == COST_PER_TOKEN


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_outputs_say_where_the_replies_come_from(path: Path) -> None:
    """The first output a reader sees is the cassette's provenance, in words built from provenance.json."""
    saved = nbformat.read(path, as_version=4)
    name = connected_name(saved)
    entry = json.loads((CASSETTES / "provenance.json").read_text())[name]
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert printed(code[0]).startswith(provenance_note(name, entry) + "\n")
    everything = "".join(printed(c) for c in code) + "".join(c.source for c in saved.cells if c.cell_type != "code")
    introduction = " ".join(saved.cells[0].source.split())
    if entry["source"] == "live":
        assert f"recorded live on {entry['date']} with {entry['model']}" in introduction
    if entry["source"] == "synthesized":
        assert "That cassette is synthesized" in introduction
        assert "scripted in `notebooks/_replies.py`" in introduction and "fixed price per token" in introduction
        assert f"Cassette cassettes/notebooks/{name}.yaml: replies synthesized on {entry['date']}" in printed(code[0])
        assert "scripted in notebooks/_replies.py" in printed(code[0])
        assert "fixed price of $0.0000001 per token" in printed(code[0])
        assert "recorded" not in everything.lower(), "synthesized replies are never called recorded"
        assert "DeepInfra's own estimated cost" not in everything


def copy_project(tmp_path: Path, notebook: Path) -> Path:
    """A checkout with one notebook and its cassette, where a test may change the provenance."""
    (tmp_path / "notebooks").mkdir()
    shutil.copy(notebook, tmp_path / "notebooks")
    shutil.copy(ROOT / "notebooks" / "_replies.py", tmp_path / "notebooks")
    name = notebook.stem.partition("_")[2]
    (tmp_path / "cassettes" / "notebooks").mkdir(parents=True)
    shutil.copy(CASSETTES / f"{name}.yaml", tmp_path / "cassettes" / "notebooks")
    shutil.copy(CASSETTES / "provenance.json", tmp_path / "cassettes" / "notebooks")
    return tmp_path / "notebooks" / notebook.name


@pytest.mark.slow
def test_replay_wording_follows_a_live_provenance(tmp_path: Path) -> None:
    copied = copy_project(tmp_path, NOTEBOOKS[0])
    file = tmp_path / "cassettes" / "notebooks" / "provenance.json"
    data = json.loads(file.read_text())
    data["quickstart"] = {"source": "live", "date": "2026-12-01", "model": "org/Recorded-Model", "plugin_version": "9"}
    file.write_text(json.dumps(data))
    run = run_notebook(copied, "replay", timeout=60)
    first = printed([c for c in run.notebook.cells if c.cell_type == "code"][0])
    assert first.startswith(
        "Cassette cassettes/notebooks/quickstart.yaml: recorded live on 2026-12-01 with org/Recorded-Model "
        "(plugin 9); costs shown are DeepInfra's own usage.estimated_cost from that recording.\n"
    )
    assert "synthesized" not in first and "fixed price" not in first


@pytest.mark.slow
def test_record_mode_writes_a_live_provenance_and_refuses_to_replace_a_synthesized_one_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loopback server stands in for DeepInfra: what is tested is what record mode writes and refuses."""
    from nbclient.exceptions import CellExecutionError

    copied = copy_project(tmp_path, NOTEBOOKS[0])
    cassette = tmp_path / "cassettes" / "notebooks" / "quickstart.yaml"
    provenance = tmp_path / "cassettes" / "notebooks" / "provenance.json"
    before = cassette.read_text(), provenance.read_text()
    with FakeDeepInfra() as server:
        server.push(*scripted_replies("quickstart"))
        monkeypatch.setenv("DEEPINFRA_API_KEY", "record-test-key")
        monkeypatch.setenv("DEEPINFRA_BASE_URL", server.base_url)
        with pytest.raises(CellExecutionError, match="overwrite-provenance"):
            run_notebook(copied, "record", timeout=60)
        assert not server.requests and (cassette.read_text(), provenance.read_text()) == before

        run = run_notebook(copied, "record", timeout=60, overwrite_provenance=True, save=True)
        assert run.sessions[0]["recorded"] == len(server.requests) > 0
    entry = json.loads(provenance.read_text())["quickstart"]
    assert entry == {"source": "live", "date": today(), "model": DEFAULT_MODEL, "plugin_version": __version__}
    assert "127.0.0.1" not in cassette.read_text() and "record-test-key" not in cassette.read_text()
    note = provenance_note("quickstart", entry)
    assert note.startswith(f"Cassette cassettes/notebooks/quickstart.yaml: recorded live on {today()} with")
    saved = nbformat.read(copied, as_version=4)
    assert printed([c for c in saved.cells if c.cell_type == "code"][0]).startswith(note + "\n")
    monkeypatch.delenv("DEEPINFRA_API_KEY")
    replayed = run_notebook(copied, "replay", timeout=60)  # the saved outputs are what the new cassette replays
    for new, old in zip(replayed.notebook.cells, saved.cells, strict=True):
        if new.cell_type == "code":
            assert printed(new) == printed(old)


@pytest.mark.slow
def test_a_request_the_cassette_lacks_fails_the_notebook(tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(NOTEBOOKS[0], as_version=4)
    for cell in notebook.cells:
        cell.source = cell.source.replace("max_tokens=60", "max_tokens=61")
    changed = tmp_path / "changed.ipynb"
    nbformat.write(notebook, changed)
    with pytest.raises(CellExecutionError, match="(?i)cassette|match"):
        run_notebook(changed, "replay", timeout=60)
