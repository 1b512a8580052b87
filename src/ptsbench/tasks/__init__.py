"""Tasks register themselves by name (``TASKS``); every submodule is imported."""

from ..autoload import import_submodules
from ..schemas import register_group
from .base import TASKS, Task

import_submodules(__name__, __path__)
register_group("task", "name", lambda: {n: TASKS.get(n).config for n in TASKS})

__all__ = ["TASKS", "Task"]
