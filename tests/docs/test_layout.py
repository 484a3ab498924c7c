"""The package's folders are its architecture: these tests hold the layout to the rules it is built on.

- every public name and public module path keeps importing;
- no import cycle between modules (imports run when a module loads: top level and class bodies, not
  function bodies nor ``if TYPE_CHECKING:`` blocks);
- rooms depend downward only: transport <- lowering <- interpreter <- enforcement <- model <- extraction,
  demo, probe <- the public entry points, with errors, bounds, profile, usage and the request cache's
  storage below everything;
- no module imports the package's public ``__init__``, so the public API is only ever a facade;
- only ``transport/`` (and the loopback fake server in ``testing/``) may reach the network.

The import graph is read from the source with ast, so a rule broken in a rarely run branch is still seen.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import guidance_deepinfra

PACKAGE = "guidance_deepinfra"
PACKAGE_DIR = Path(guidance_deepinfra.__file__).parent

#: Rank of each room (a sub-package) or top-level module: a module may import only modules of its own room or
#: of a lower rank. The package `__init__` is the top and is never imported from inside (see below).
RANKS = {
    "_version": 0,
    "_registration": 7,
    "errors": 0,
    "bounds": 0,
    "profile": 0,
    "usage": 0,
    "thinking": 0,
    "cache": 0,
    "transport": 1,
    "lowering": 2,
    "interpreter": 3,
    "enforcement": 4,
    "model": 5,
    "probabilities": 5,
    "extraction": 6,
    "probe": 6,
    "demo": 6,
    "testing": 6,
    "cli": 7,
    "notebook": 7,
    "extract_dask": 7,
}

#: Imports allowed to point up, each for a reason that belongs to what the importer is for.
ALLOWED_UPWARD = {
    # `notebook.command("extract ...")` runs a command line in the notebook's kernel, inside its cassette.
    (f"{PACKAGE}.demo.notebook", f"{PACKAGE}.cli"),
}

#: Libraries that open connections. Only the transports use them; the fake server is a loopback test aid.
NETWORK_MODULES = ("aiohttp", "httpx", "httpx2", "socket", "urllib", "http.client", "requests", "urllib3")
NETWORK_ROOMS = ("transport", "testing")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([PACKAGE, *parts])] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, *, load_time_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a module; with `load_time_only`, only those that run when it is imported."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            elif load_time_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            elif load_time_only and isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit(stmt)
            else:
                visit(child)

    visit(tree)
    return found


def _imported_names(module: str, *, load_time_only: bool) -> set[str]:
    """Absolute dotted names `module` imports: modules, or `pkg.name` for a name taken from a package."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if _is_package(module) else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_nodes(tree, load_time_only=load_time_only):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            if f"{source}.{alias.name}" in MODULES:  # ``from . import module``: the package is only passed through
                names.add(f"{source}.{alias.name}")
            else:
                names.update((source, f"{source}.{alias.name}"))
    return names


def _package_edges(module: str, *, load_time_only: bool) -> set[str]:
    """The package's modules that importing `module` loads directly, with the sub-packages on their way.

    ``from .x import y`` loads ``x``; ``from . import x`` loads the module ``x`` if there is one, else the
    package itself. Packages passed through on the way count too, except those holding `module` (they are
    already loading when it runs; taking a name from one, as ``from . import name`` does, still counts). The
    root package is left out: every submodule import passes through it, and importing it by name is the
    separate rule tested below.
    """
    own_packages = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
    edges = set()
    for name in _imported_names(module, load_time_only=load_time_only):
        if name in MODULES:
            target = name
        elif name.rpartition(".")[0] in MODULES and name.startswith(PACKAGE + "."):
            target = name.rpartition(".")[0]
        else:
            continue
        parts = target.split(".")
        edges.update(".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) not in own_packages)
        edges.add(target)
    edges.discard(module)
    edges.discard(PACKAGE)
    return edges


def _room(module: str) -> str:
    return module.split(".")[1] if module != PACKAGE else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def _load_time_graph(skip: set[frozenset[str]] | None = None) -> dict[str, set[str]]:
    """Module -> the package's modules it loads when imported, without the import pairs in `skip`."""
    graph = {m: _package_edges(m, load_time_only=True) for m in MODULES}
    for pair in skip or ():
        a, b = sorted(pair)
        graph[a].discard(b)
        graph[b].discard(a)
    return graph


# --------------------------------------------------------------------------- public surface


@pytest.mark.parametrize("name", guidance_deepinfra.__all__)
def test_every_public_name_imports(name: str) -> None:
    module = importlib.import_module(PACKAGE)
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from {PACKAGE} import {name}", namespace)  # the form users write
    assert namespace[name] is getattr(module, name)


def test_public_functions_are_not_shadowed_by_modules() -> None:
    # `extract` and `limits` were once both a module and the function the package exports under that name.
    for name in ("extract", "limits", "json"):
        value = getattr(guidance_deepinfra, name)
        assert callable(value) and not isinstance(value, type(guidance_deepinfra)), name
        assert f"{PACKAGE}.{name}" not in MODULES, f"a module named {name} would shadow the public function"


@pytest.mark.parametrize(
    "path, names",
    [
        ("errors", ["DeepInfraError", "ConfigurationError", "OutputWriteError", "redact", "register_secret"]),
        ("profile", ["ModelProfile", "declare_profile", "PROFILES"]),
        ("testing", ["FakeDeepInfra", "Reply"]),
        ("notebook", ["connect", "command", "finish", "main", "run_notebook", "scripted_replies"]),
        ("cli", ["main"]),
        ("demo", ["SCENARIOS", "run_demo", "run_scenario"]),
        ("probe", ["ROWS", "requests_per_model"]),
        ("extract_dask", ["extract_on_dask", "extract_shard", "shard_output"]),
        ("usage", ["DeepInfraUsage", "ConstraintStats"]),
    ],
)
def test_public_module_paths_import(path: str, names: list[str]) -> None:
    module = importlib.import_module(f"{PACKAGE}.{path}")
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{PACKAGE}.{path} lacks {missing}"


def test_every_public_name_of_the_package_resolves() -> None:
    missing = [name for name in guidance_deepinfra.__all__ if not hasattr(guidance_deepinfra, name)]
    assert not missing, missing
    from guidance_deepinfra.extraction.api import estimate_extraction

    assert guidance_deepinfra.estimate_extraction is estimate_extraction


def test_guidance_models_gains_deepinfra() -> None:
    import guidance.models

    assert guidance.models.DeepInfra is guidance_deepinfra.DeepInfra  # type: ignore[attr-defined]


def test_the_interpreter_is_one_class_defined_in_source() -> None:
    from guidance_deepinfra.enforcement.grammar import GrammarMixin
    from guidance_deepinfra.enforcement.json_select import JsonSelectMixin
    from guidance_deepinfra.enforcement.tool_calls import ToolCallMixin
    from guidance_deepinfra.interpreter.base import DeepInfraBaseInterpreter, DeepInfraImageMixin
    from guidance_deepinfra.model import DeepInfraInterpreter

    # Building a model sends nothing, so no server is needed here.
    one = guidance_deepinfra.DeepInfra("m/a", api_key="sk-test-key-0000", base_url="http://127.0.0.1:9/v1")
    two = guidance_deepinfra.DeepInfra("m/b", api_key="sk-test-key-0000", base_url="http://127.0.0.1:9/v1")
    assert type(one._interpreter) is type(two._interpreter) is DeepInfraInterpreter
    assert DeepInfraInterpreter.__module__ == f"{PACKAGE}.model"
    mro = DeepInfraInterpreter.__mro__
    assert mro.index(DeepInfraImageMixin) < mro.index(JsonSelectMixin) < mro.index(GrammarMixin)
    assert mro.index(GrammarMixin) < mro.index(ToolCallMixin) < mro.index(DeepInfraBaseInterpreter)


# --------------------------------------------------------------------------- imports between modules


def test_the_import_graph_is_read() -> None:
    # The rules below are only as good as the graph: check it sees the imports it must.
    model_edges = _package_edges(f"{PACKAGE}.model", load_time_only=True)
    assert {f"{PACKAGE}.transport.client", f"{PACKAGE}.enforcement.grammar", f"{PACKAGE}.errors"} <= model_edges
    assert f"{PACKAGE}.transport" in model_edges  # the sub-package loaded on the way
    cli_lazy = _package_edges(f"{PACKAGE}.cli", load_time_only=False) - _package_edges(
        f"{PACKAGE}.cli", load_time_only=True
    )
    assert f"{PACKAGE}.demo" in cli_lazy  # imported inside main(), so not at load time
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules() -> None:
    cycles = _cycles(_load_time_graph())
    assert not cycles, f"modules importing each other at load time: {cycles}"


def test_demo_and_its_scenarios_do_not_import_each_other() -> None:
    # The scenario modules fill ScenarioSets of their own (demo/scenario.py) that demo/__init__ reads; they
    # never import the demo back. A check of the rule above on the modules it once caught.
    graph = _load_time_graph()
    for name in ("scenarios_json", "scenarios_grammar"):
        assert f"{PACKAGE}.demo.{name}" in graph[f"{PACKAGE}.demo"]
        assert f"{PACKAGE}.demo" not in graph[f"{PACKAGE}.demo.{name}"]


def test_rooms_depend_downward() -> None:
    unranked = sorted({_room(m) for m in MODULES if m != PACKAGE} - set(RANKS))
    assert not unranked, f"rooms without a rank in RANKS: {unranked}"
    upward = []
    for module in MODULES:
        if module == PACKAGE:
            continue
        room = _room(module)
        for target in _package_edges(module, load_time_only=False):  # lazy imports count: they still depend
            other = _room(target)
            if other != room and RANKS[other] > RANKS[room] and (module, target) not in ALLOWED_UPWARD:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(sorted(upward))


def _init_importers() -> list[str]:
    """Modules importing the package's `__init__` (``import guidance_deepinfra``, ``from .. import name``)."""
    public = set(guidance_deepinfra.__all__)
    offenders = set()
    for module in MODULES:
        if module == PACKAGE:
            continue
        for name in _imported_names(module, load_time_only=False):
            if name == PACKAGE or (name.startswith(PACKAGE + ".") and name[len(PACKAGE) + 1 :] in public):
                offenders.add(f"{module} imports {name}")
    return sorted(offenders)


def test_no_module_imports_the_package_init() -> None:
    assert not _init_importers()


def test_only_the_transport_reaches_the_network() -> None:
    offenders = []
    for module in MODULES:
        if _room(module) in NETWORK_ROOMS:
            continue
        for name in _imported_names(module, load_time_only=False):
            if any(name == lib or name.startswith(lib + ".") for lib in NETWORK_MODULES):
                offenders.append(f"{module} imports {name}")
            if name in ("openai", "openai.OpenAI", "openai.AsyncOpenAI") or name.startswith("openai._"):
                offenders.append(f"{module} imports the openai client {name}")
    assert not offenders, "\n".join(sorted(set(offenders)))


def test_the_network_rule_sees_the_transport() -> None:
    # Guards the rule above against reading nothing: the transports do import the libraries it forbids.
    names = _imported_names(f"{PACKAGE}.transport.aio", load_time_only=False)
    assert "aiohttp" in names
    names = _imported_names(f"{PACKAGE}.transport.client", load_time_only=False)
    assert "openai" in names and "httpx" in names
