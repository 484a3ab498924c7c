"""Models for the example notebooks: ``from guidance_deepinfra.notebook import connect``.

The public path of the notebook helpers, kept stable for the notebooks and for
``python -m guidance_deepinfra.notebook [--synthesize|--record|--replay]``; the code lives with the demo that
shares its cassettes and fake server, in `demo.notebook`.
"""

from __future__ import annotations

import sys

from .demo.notebook import (
    FINISH_MARKER,
    LIVE_NOTE,
    MODE_VARIABLE,
    MODES,
    OVERWRITE_VARIABLE,
    SCRIPTED_REPLIES,
    NotebookRun,
    cassette_dir,
    command,
    connect,
    current_mode,
    finish,
    main,
    notebook_paths,
    project_root,
    provenance_note,
    run_notebook,
    scripted_replies,
)

__all__ = [
    "FINISH_MARKER",
    "LIVE_NOTE",
    "MODES",
    "MODE_VARIABLE",
    "OVERWRITE_VARIABLE",
    "SCRIPTED_REPLIES",
    "NotebookRun",
    "cassette_dir",
    "command",
    "connect",
    "current_mode",
    "finish",
    "main",
    "notebook_paths",
    "project_root",
    "provenance_note",
    "run_notebook",
    "scripted_replies",
]

if __name__ == "__main__":
    sys.exit(main())
