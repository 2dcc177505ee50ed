# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Public names of a package imported from its submodules on first use (PEP 562): `hf-ddpm --help` imports the
package, and the names pull in torch and diffusers."""

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module `__getattr__` and `__dir__` of `package`, whose `exports` map public names to submodules."""

    def __getattr__(name: str) -> object:
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *exports])

    return __getattr__, __dir__
