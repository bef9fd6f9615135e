"""What a method provides to the shared training loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from copart_hub.hub.base import CopartModel

OptimizerPair = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]


class Task(ABC):
    """A method's model, data, losses, validation and card facts.

    The training set must accept ``(index, epoch)`` keys (see :mod:`..sampling`) and draw its
    augmentations from :func:`..sampling.sample_rng` so that resuming is exact.
    """

    def __init__(self, args: dict[str, Any], seed: int) -> None:
        self.args = dict(args)
        self.seed = seed

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The module trained by the loop: a :class:`CopartModel`, or a wrapper that also holds
        training-only parts (then override :meth:`release_model`)."""

    def release_model(self, module: nn.Module) -> CopartModel:
        """The model to validate, sample and save from the trained module."""
        return module  # type: ignore[return-value]

    @abstractmethod
    def train_dataset(self) -> Dataset: ...

    @abstractmethod
    def build_optimizers(self, model: nn.Module, max_steps: int) -> list[OptimizerPair]: ...

    @abstractmethod
    def training_step(
        self, model: nn.Module, batch: Any, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss of one (micro-)batch and scalars to log."""

    @abstractmethod
    def validate(self, model: nn.Module) -> dict[str, float]:
        """Held-out scores; the key ``score`` (higher is better) selects the best checkpoint."""

    def write_samples(self, model: nn.Module, path: Path) -> None:  # noqa: B027 - optional hook
        """Write a sample grid (PNG) showing what the model does now."""

    def card_info(self) -> dict[str, Any]:
        """Facts for the model card: name, method, data, data_licence, num_parts, ..."""
        return {}


_TASKS: dict[str, type[Task]] = {}


def register_task(name: str):
    def wrap(cls: type[Task]) -> type[Task]:
        _TASKS[name] = cls
        return cls

    return wrap


def get_task(name: str) -> type[Task]:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]
