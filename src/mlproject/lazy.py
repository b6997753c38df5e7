"""Public names of a package imported from their modules on first use (PEP 562), so that importing
the package (or a light module of it, such as `mlproject.config` for `--help`) does not wait for
torch, scikit-learn or MLflow (seconds each).

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"config": ("TrainConfig",), ...})
"""
from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]):
    """(__getattr__, __dir__, __all__) for `package`: each name in `modules[m]` is `package.m`'s."""
    origin = {name: module for module, names in modules.items() for name in names}
    namespace = vars(sys.modules[package])  # the package's own globals (it is being imported)

    def __getattr__(name: str):
        if name not in origin:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{origin[name]}"), name)
        namespace[name] = value  # once: later lookups find it without calling __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(origin))

    return __getattr__, __dir__, sorted(origin)
