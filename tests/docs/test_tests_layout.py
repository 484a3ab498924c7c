"""The tests mirror the package's layout, so a test is found where the code it checks lives.

- every test module is in ``tests/unit/<room>/`` (a sub-package or top-level module of the package),
  ``tests/integration/`` or ``tests/docs/``; ``tests/`` itself holds only the helpers the tests share;
- test module basenames are unique: there are no ``__init__.py`` files, so pytest imports each by its basename;
- the ``slow`` marker is registered and unknown markers are refused, so a misspelt mark cannot leave a slow
  test in the fast subset the README's testing section names.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import guidance_deepinfra

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PACKAGE_DIR = Path(guidance_deepinfra.__file__).parent
KINDS = ("unit", "integration", "docs")


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)


def _rooms() -> set[str]:
    """Sub-packages of the package and its top-level modules, by name."""
    packages = {p.parent.name for p in PACKAGE_DIR.glob("*/__init__.py")}
    modules = {p.stem for p in PACKAGE_DIR.glob("*.py") if not p.stem.startswith("__")}
    return packages | modules


def test_the_tests_are_found() -> None:
    # Guards the rules below against reading nothing.
    found = {p.relative_to(TESTS).parts[0] for p in _test_modules()}
    assert set(KINDS) <= found
    assert {"transport", "interpreter", "enforcement", "model"} <= _rooms()


def test_every_test_module_is_in_unit_integration_or_docs() -> None:
    where = "tests/unit/<room>/, tests/integration/ or tests/docs/ (see ARCHITECTURE.md)"
    misplaced = []
    for path in _test_modules():
        parts = path.relative_to(TESTS).parts
        if parts[0] == "unit":
            if len(parts) != 3 or parts[1] not in _rooms():
                misplaced.append(f"{path.relative_to(ROOT)}: tests/unit/<room>/ names a room of the package")
        elif parts[0] not in KINDS or len(parts) != 2:
            misplaced.append(f"{path.relative_to(ROOT)}: move it to {where}")
    assert not misplaced, "\n".join(misplaced)


def test_test_module_names_are_unique() -> None:
    counts = Counter(p.name for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)
    assert not [name for name, n in counts.items() if n > 1]
    assert not list(TESTS.rglob("__init__.py")), "pytest imports tests by basename; __init__.py files change that"


def test_the_slow_marker_is_registered_and_markers_are_strict() -> None:
    # Read as text: tomllib is Python 3.11+ and the suite also runs on 3.10.
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pytest_config = pyproject.split("[tool.pytest.ini_options]", 1)[1].split("\n[", 1)[0]
    assert '"slow: ' in pytest_config
    assert "--strict-markers" in pytest_config
    assert 'python -m pytest -m "not slow"' in (ROOT / "README.md").read_text(encoding="utf-8")
