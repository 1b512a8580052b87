"""Import every submodule of a package so that its registrations run.

Registries are filled by decorators at import time; auto-importing means adding an algorithm
is adding a file. Submodules must import optional heavy dependencies (diffusers, pycocotools)
lazily, inside functions, so a missing extra never breaks the import of the package.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str, package_path) -> None:
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
