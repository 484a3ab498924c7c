"""Models for the example notebooks: live with a key, otherwise replaying a cassette.

A notebook calls ``lm = connect("quickstart")`` once. With ``DEEPINFRA_API_KEY`` set it gets a live
`DeepInfra`; without one it gets a model whose requests are answered from
``cassettes/notebooks/quickstart.yaml``, so the notebooks run anywhere, offline. The cassettes in the
repository are synthesized: their replies are scripted in ``notebooks/_replies.py`` and served in DeepInfra's
wire format by the loopback fake server, and their costs come from the fake server's fixed price per token.
`connect()` prints where its cassette's replies come from, read from ``cassettes/notebooks/provenance.json``
(a cassette recorded live says so, with its date and model). A notebook is not one ``with`` block, so the
cassette is opened by `connect()` and stays open for the kernel's life (or until `finish()` or the next
`connect()` of the same name).

``GUIDANCE_DEEPINFRA_NOTEBOOK_MODE`` forces a mode: ``live``, ``replay``, ``record`` (live, writing the
cassette) or ``synthesize`` (writing the cassette from the scripted replies in ``notebooks/_replies.py``
with the loopback fake server). `run_notebook()` executes a notebook in a fresh Jupyter kernel in any mode;
``python -m guidance_deepinfra.notebook --synthesize`` (or ``--record``, ``--replay``) runs them all.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import shlex
import sys
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..model import API_KEY_VARIABLES, DEFAULT_MODEL, DeepInfra
from ..profile import ProfileRegistry
from . import modes as _modes
from . import provenance as _provenance
from .modes import MODES

MODE_VARIABLE = "GUIDANCE_DEEPINFRA_NOTEBOOK_MODE"
#: Set to 1 to let ``record`` replace a synthesized cassette (or ``synthesize`` a live one).
OVERWRITE_VARIABLE = "GUIDANCE_DEEPINFRA_OVERWRITE_PROVENANCE"
FINISH_MARKER = "guidance-deepinfra-notebook-finish:"
SCRIPTED_REPLIES = "notebooks/_replies.py"
LIVE_NOTE = "Live: answers come from DeepInfra now; costs shown are DeepInfra's own usage.estimated_cost."


def project_root() -> Path:
    """The checkout holding ``cassettes/`` and ``notebooks/``: searched upwards from the working directory
    (a kernel runs in the notebook's folder), else the directory above this package (editable install)."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "cassettes").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return Path(__file__).resolve().parents[2]


def cassette_dir() -> Path:
    """Where the notebook cassettes live (``cassettes/notebooks``)."""
    return project_root() / "cassettes" / "notebooks"


def current_mode() -> str:
    """The mode forced by ``GUIDANCE_DEEPINFRA_NOTEBOOK_MODE``, else live with a key and replay without."""
    forced = os.environ.get(MODE_VARIABLE)
    if forced:
        if forced not in MODES:
            raise ConfigurationError(f"{MODE_VARIABLE}={forced!r}; expected one of {MODES}")
        return forced
    return _modes.default_mode()


@dataclass
class _Session:
    """One notebook's open cassette (and fake server while synthesizing), closed by `finish()`."""

    name: str
    mode: str
    wiring: _modes.Wiring
    stack: ExitStack = field(default_factory=ExitStack)

    def close(self) -> dict[str, Any]:
        cassette = self.wiring.cassette
        played = cassette.play_count if cassette is not None else 0
        recorded = len(cassette.data) if cassette is not None else 0
        self.stack.close()  # writes the cassette and its provenance entry when recording or synthesizing
        return {"name": self.name, "mode": self.mode, "recorded": recorded, "played": played}


_SESSIONS: dict[str, _Session] = {}


@atexit.register
def _close_at_exit() -> None:
    """Write cassettes still open when the kernel stops (a notebook recorded by hand in Jupyter)."""
    for session in _SESSIONS.values():
        session.close()
    _SESSIONS.clear()


def scripted_replies(name: str) -> Any:
    """The replies a notebook's cassette is synthesized from (``REPLIES[name]`` in ``notebooks/_replies.py``):
    a list answered in order, or a function from request body to reply for requests sent concurrently."""
    path = project_root() / "notebooks" / "_replies.py"
    spec = importlib.util.spec_from_file_location("_notebook_replies", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.REPLIES[name]


def provenance_note(name: str, entry: dict[str, Any] | None) -> str:
    """The line `connect()` prints about the cassette `name`, from its provenance entry."""
    where = f"Cassette cassettes/notebooks/{name}.yaml"
    if entry is None:
        return f"{where}: no provenance entry, so where its replies come from is unknown."
    return f"{where}: {_provenance.describe(entry)}."


def connect(name: str, model: str = DEFAULT_MODEL, **kwargs: Any) -> DeepInfra:
    """A `DeepInfra` model for the notebook `name`: live with a key, else replaying its cassette.

    Prints where the answers come from: live, or the cassette's provenance (synthesized from scripted
    replies, or recorded live on a date with a model). Recording or synthesizing prints the entry it is
    about to write, so the saved output equals what a later replay prints. Keyword arguments go to
    `DeepInfra` (``echo`` defaults to False so that saved outputs are plain text). Calling it again for the
    same name starts the cassette over, so re-running a notebook works.
    """
    kwargs.setdefault("echo", False)
    mode = current_mode()
    overwrite = os.environ.get(OVERWRITE_VARIABLE) == "1"

    def wired() -> AbstractContextManager[_modes.Wiring]:
        return _modes.wired_model(
            mode,
            model=model,
            cassette=cassette_dir() / f"{name}.yaml",
            replies=scripted_replies(name) if mode == "synthesize" else None,
            scripts=SCRIPTED_REPLIES,
            missing_hint="set DEEPINFRA_API_KEY to run live",
            overwrite_provenance=overwrite,
            **kwargs,
        )

    if mode == "live":
        print(LIVE_NOTE)
        with wired() as live:  # nothing is held open live
            return live.model
    if name in _SESSIONS:
        _SESSIONS.pop(name).close()
    if mode in ("record", "synthesize"):
        _modes.check_provenance(mode, cassette_dir(), [name], overwrite=overwrite)
        print(provenance_note(name, _modes.new_provenance(mode, model, SCRIPTED_REPLIES)))
    else:
        print(provenance_note(name, _provenance.read(cassette_dir()).get(name)))
    kwargs.setdefault("profiles", ProfileRegistry())  # capabilities learned in one notebook stay in it
    stack = ExitStack()
    opened = stack.enter_context(wired())
    _SESSIONS[name] = _Session(name, mode, opened, stack)
    return opened.model


def command(line: str) -> int:
    """Run a ``guidance-deepinfra`` command in this kernel, inside the cassette of the notebook's `connect()`.

    ``command("extract --schema s.json --input in.jsonl --output out.jsonl")`` does what that command does in
    a terminal; running it in-process lets the offline modes replay (or synthesize) its requests too. The
    command's own model reads its key and endpoint from the environment, so offline they are set for the
    duration of the call. Returns the command's exit code.
    """
    from ..cli import main as cli_main

    if len(_SESSIONS) != 1 and current_mode() != "live":
        raise RuntimeError("call connect(name) once before command(), so its requests go to that cassette")
    overrides: dict[str, str] = {}
    for session in _SESSIONS.values():
        if session.mode != "live":
            overrides = {"DEEPINFRA_BASE_URL": session.wiring.base_url}
            if session.wiring.offline_key is not None:
                overrides["DEEPINFRA_API_KEY"] = session.wiring.offline_key
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        return cli_main(shlex.split(line))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def finish() -> list[dict[str, Any]]:
    """Close every open cassette (writing it when recording) and print what each one served.

    `run_notebook()` runs this after the last cell; its printed line tells the runner which Python ran
    the kernel and whether every recorded request was replayed.
    """
    report = [session.close() for session in _SESSIONS.values()]
    _SESSIONS.clear()
    print(FINISH_MARKER + json.dumps({"executable": sys.executable, "sessions": report}))
    return report


# --------------------------------------------------------------------------- running notebooks in a kernel


@dataclass
class NotebookRun:
    """An executed notebook (outputs included) and what its kernel reported at the end."""

    notebook: Any
    executable: str
    sessions: list[dict[str, Any]]


def _this_python_kernel_manager_class() -> type:
    """A kernel manager whose ``python3`` kernel always runs this interpreter, whatever kernel specs are
    installed (a user-level ``python3`` spec could otherwise point at another Python). nbclient creates it,
    so nbclient also shuts the kernel down."""
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisPythonSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(resource_dir="", **get_kernel_dict())

    class ThisPythonKernel(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _this_python_specs(self) -> KernelSpecManager:
            return ThisPythonSpecs()

    return ThisPythonKernel


def run_notebook(
    path: Path,
    mode: str = "replay",
    *,
    save: bool = False,
    timeout: int = 120,
    overwrite_provenance: bool = False,
) -> NotebookRun:
    """Execute the notebook at `path` in a fresh kernel with ``GUIDANCE_DEEPINFRA_NOTEBOOK_MODE=mode``.

    Raises ``nbclient.exceptions.CellExecutionError`` if a cell fails (a refused overwrite of a cassette of
    the other kind included, unless `overwrite_provenance`). With `save`, the notebook is written back with
    its new outputs.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import guidance_deepinfra.notebook as _nb\n_nb.finish();"))
    env = {k: v for k, v in os.environ.items() if mode in ("live", "record") or k not in API_KEY_VARIABLES}
    env[MODE_VARIABLE] = mode
    env[OVERWRITE_VARIABLE] = "1" if overwrite_provenance else "0"
    client = NotebookClient(
        nb,
        kernel_manager_class=_this_python_kernel_manager_class(),
        timeout=timeout,
        record_timing=False,  # timestamps would change the saved notebooks on every run
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=env)
    closing = nb.cells.pop()
    line = next(o["text"] for o in closing.outputs if o.get("name") == "stdout" and FINISH_MARKER in o["text"])
    report = json.loads(line.split(FINISH_MARKER, 1)[1])
    if save:
        nbformat.write(nb, path)
    return NotebookRun(nb, report["executable"], report["sessions"])


def notebook_paths() -> list[Path]:
    """The example notebooks, in reading order."""
    return sorted((project_root() / "notebooks").glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    """``python -m guidance_deepinfra.notebook [--synthesize|--record|--replay] [--overwrite-provenance] [names]``."""
    parser = argparse.ArgumentParser(description="Run the example notebooks and save their outputs.")
    group = parser.add_mutually_exclusive_group()
    for mode in ("synthesize", "record", "replay", "live"):
        group.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    parser.add_argument(
        "--overwrite-provenance",
        action="store_true",
        help="allow --record to replace synthesized cassettes (or --synthesize to replace live ones)",
    )
    parser.add_argument("names", nargs="*", help="notebooks, e.g. 01_quickstart or quickstart (default: all)")
    args = parser.parse_args(argv)
    mode = args.mode or "replay"
    for path in notebook_paths():
        if args.names and not {path.stem, path.stem.partition("_")[2]} & set(args.names):
            continue
        run = run_notebook(path, mode, save=mode != "replay", overwrite_provenance=args.overwrite_provenance)
        print(f"{path.name}: {mode}, {run.sessions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
