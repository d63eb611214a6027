"""Training methods: import the modules so that they register themselves."""

from . import erm  # noqa: F401
from .base import Batch, Context, Method, TaskInfo

__all__ = ["Batch", "Context", "Method", "TaskInfo"]
