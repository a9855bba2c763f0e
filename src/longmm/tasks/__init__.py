"""LightningModules, one per kind of objective."""

from longmm.tasks.base import Task
from longmm.tasks.classify import Classify

__all__ = ["Classify", "Task"]
