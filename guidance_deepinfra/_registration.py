"""``guidance.models.DeepInfra``, without importing guidance into programs that never use the model.

Setting the attribute at import would import guidance (about a second) into every program that imports the
package, the command line's ``--help`` among them. Instead guidance.models is given a module ``__getattr__``
that imports the model on the first lookup of ``DeepInfra``: now if guidance.models is already loaded,
otherwise right after it loads, through a finder that wraps the import of that one module and then takes
itself off ``sys.meta_path``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

TARGET = "guidance.models"
NAME = "DeepInfra"


def register_with_guidance() -> None:
    """Make ``guidance.models.DeepInfra`` resolve to the package's model, whenever guidance.models loads."""
    module = sys.modules.get(TARGET)
    if module is not None:
        _install(module)
    elif not any(isinstance(finder, _AfterGuidanceModels) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterGuidanceModels())


def _install(module: types.ModuleType) -> None:
    namespace = vars(module)
    if NAME in namespace or getattr(namespace.get("__getattr__"), "_deepinfra", False):
        return
    previous = namespace.get("__getattr__")

    def __getattr__(name: str) -> Any:
        if name == NAME:
            from .model import DeepInfra

            setattr(module, NAME, DeepInfra)
            return DeepInfra
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    __getattr__._deepinfra = True  # type: ignore[attr-defined]
    module.__getattr__ = __getattr__  # type: ignore[method-assign]


class _AfterGuidanceModels(importlib.abc.MetaPathFinder):
    """Finds guidance.models with the finders after it and hands back a spec whose loader installs the name."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None:
            return spec
        # Once found, this finder's work is done; the import system stops at the spec returned here.
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec.loader = _ThenInstall(spec.loader)
        return spec


class _ThenInstall(importlib.abc.Loader):
    """Runs guidance.models with its own loader (put back first, so the module sees no wrapper), then installs."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        module.__loader__ = self.loader
        self.loader.exec_module(module)
        _install(module)
