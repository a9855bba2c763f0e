"""LightningModules, one per kind of objective."""

from longmm.tasks.base import Task
from longmm.tasks.classify import Classify
from longmm.tasks.generate import GAN
from longmm.tasks.translate import Translate

__all__ = ["GAN", "Classify", "Task", "Translate"]
