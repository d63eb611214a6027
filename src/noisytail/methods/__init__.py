"""Training methods: import the modules so that they register themselves."""

from . import dividemix, erm, gdw, l2b, l2rw, moit, moit_plus, mttv, multiview, mwnet, simclr  # noqa: F401
from .base import Batch, Context, Method, TaskInfo

__all__ = ["Batch", "Context", "Method", "TaskInfo"]
