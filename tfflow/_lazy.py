"""Attributes a package loads on first use (PEP 562), so that importing it stays cheap.

`tfflow`, `tfflow.data` and `tfflow.training` import TensorFlow only when a
name that needs it is first used: the command-line apps parse their flags (and
answer `--help`) before that.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: Mapping[str, str], submodules: Iterable[str]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's `__getattr__` and `__dir__` that load its names on first use.

    Args:
      package: The package's `__name__`.
      names: {attribute: the submodule (relative name) that defines it}.
      submodules: Submodules that load when first asked for as attributes.

    Returns:
      `(__getattr__, __dir__)`, to assign in the package's `__init__`.
    """
    submodules = tuple(submodules)

    def lazy_getattr(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def lazy_dir() -> list[str]:
        module = sys.modules[package]
        return sorted(set(vars(module)) | set(getattr(module, "__all__", ())) | set(submodules))

    return lazy_getattr, lazy_dir
