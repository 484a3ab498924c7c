"""What a program, and the command line, import before doing anything.

Each case runs in a fresh interpreter and reads its ``sys.modules`` at exit: ``guidance-deepinfra --help``
and every subcommand's ``--help`` load none of the heavy libraries, ``import guidance_deepinfra`` loads
neither them nor the extraction engine, the probe or aiohttp, and ``guidance.models.DeepInfra`` is still the
package's model whichever of guidance and the package is imported first. The time taken is measured by
``bench/startup.py``, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("guidance", "openai", "jsonschema", "llguidance", "aiohttp", "pydantic")
#: The parts a program loads only when it uses them (extract(), the probe, the Dask recipe, extraction's HTTP).
ON_USE = (
    "guidance_deepinfra.extraction.api",
    "guidance_deepinfra.extraction.engine",
    "guidance_deepinfra.probe",
    "guidance_deepinfra.extract_dask",
    "guidance_deepinfra.transport.aio",
    "dask",
    "aiohttp",
    "jsonschema",
)

#: Prints, at exit, which of the watched top-level names the process has imported.
REPORT = textwrap.dedent(
    """
    import atexit, json, sys
    WATCHED = {watched!r}
    def report():
        loaded = sorted(n for n in WATCHED if n in sys.modules)
        sys.__stdout__.write("\\nMODULES " + json.dumps(loaded) + "\\n")
    atexit.register(report)
    """
)


def loaded_by(code: str, watched: tuple[str, ...]) -> list[str]:
    """Of `watched`, the modules a fresh interpreter running `code` has imported when it exits."""
    script = REPORT.format(watched=watched) + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MODULES ")]
    assert lines, f"no report (exit {done.returncode}): {done.stderr[-2000:]}"
    return list(json.loads(lines[-1][len("MODULES ") :]))


def run_cli(argv: list[str]) -> str:
    return f"""
    import sys
    from guidance_deepinfra.cli import main
    sys.argv = ["guidance-deepinfra", *{argv!r}]
    try:
        main()
    except SystemExit as exc:
        assert exc.code == 0, exc.code
    """


HELPS = [["--help"], ["demo", "--help"], ["probe", "--help"], ["extract", "--help"], ["cache", "--help"]]
HELPS += [["cache", "info", "--help"], ["cache", "clear", "--help"]]


@pytest.mark.parametrize("argv", HELPS)
def test_help_imports_none_of_the_heavy_libraries(argv: list[str]) -> None:
    assert loaded_by(run_cli(argv), HEAVY) == []


def test_every_subcommand_is_covered_above() -> None:
    from guidance_deepinfra.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted({argv[0] for argv in HELPS[1:]})  # type: ignore[arg-type]


def test_the_watch_sees_an_import() -> None:
    # Guards the tests here against a report that is always empty: using the parts does load them.
    loaded = loaded_by("import guidance_deepinfra.model, guidance_deepinfra.probe", HEAVY + ON_USE)
    assert {"guidance", "openai", "guidance_deepinfra.probe"} <= set(loaded)


def test_the_package_import_loads_no_heavy_library_nor_an_unused_part() -> None:
    assert loaded_by("import guidance_deepinfra", HEAVY + ON_USE) == []


def test_the_model_loads_guidance_but_not_the_parts_it_does_not_use() -> None:
    loaded = loaded_by("from guidance_deepinfra import DeepInfra", HEAVY + ON_USE)
    assert {"guidance", "openai", "llguidance", "pydantic"} <= set(loaded)
    unused = set(ON_USE) - {"aiohttp"}  # openai itself imports aiohttp
    assert not unused & set(loaded), sorted(unused & set(loaded))


def test_extract_loads_the_extraction_engine_when_used() -> None:
    loaded = loaded_by("from guidance_deepinfra import extract", ON_USE)
    assert {"guidance_deepinfra.extraction.api", "guidance_deepinfra.transport.aio"} <= set(loaded)


@pytest.mark.parametrize(
    "code",
    [
        "import guidance_deepinfra, guidance\nok = guidance.models.DeepInfra is guidance_deepinfra.DeepInfra",
        "import guidance, guidance_deepinfra\nok = guidance.models.DeepInfra is guidance_deepinfra.DeepInfra",
        "import guidance_deepinfra as gd\nfrom guidance.models import DeepInfra\nok = DeepInfra is gd.DeepInfra",
        "from guidance_deepinfra import DeepInfra\nimport guidance\nok = guidance.models.DeepInfra is DeepInfra",
    ],
    ids=["package-first", "guidance-first", "from-import", "model-first"],
)
def test_guidance_models_gains_deepinfra_in_either_order(code: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nprint(ok)"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_guidance_models_keeps_failing_other_names() -> None:
    code = "import guidance_deepinfra, guidance\ntry:\n    guidance.models.Nope\n"
    code += "except AttributeError as e:\n    print(e)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert "has no attribute 'Nope'" in done.stdout, done.stderr[-2000:]
