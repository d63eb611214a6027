"""Training methods: importing the package imports every module of it that registers a method
(a line starting with ``@METHODS.register(``), so a new built-in method is one new file."""

from ..registry import import_modules_declaring
from .base import Batch, Context, Method, TaskInfo

import_modules_declaring(__name__, "@METHODS.register(")

__all__ = ["Batch", "Context", "Method", "TaskInfo"]
