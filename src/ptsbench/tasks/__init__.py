"""Tasks register themselves by name (``TASKS``); every submodule is imported."""
from ..autoload import import_submodules
from .base import TASKS, Task

import_submodules(__name__, __path__)

__all__ = ["TASKS", "Task"]
