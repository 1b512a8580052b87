"""Tasks (model, data -> metrics); each module of this package registers one in ``TASKS`` (imported on
first lookup)."""

from .base import TASKS, EvalConfig, Task, TaskConfig

__all__ = ["TASKS", "EvalConfig", "Task", "TaskConfig"]
