"""What a method provides to the shared training loop."""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from copart_hub.hub.base import CopartModel
from copart_hub.hub.registry import get_architecture, get_entry

from ..data import BackgroundCrops

OptimizerPair = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]

#: learning-rate schedules a task may offer (``task_args.lr_schedule``)
LR_SCHEDULES = ("constant", "cosine", "constant_cosine")


def lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, max_steps: int, anneal_fraction: float = 1.0
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``constant``: None (no scheduler); ``cosine``: the learning rate falls from its value to 0
    along half a cosine over ``max_steps`` steps (the trainer steps it once per step);
    ``constant_cosine``: constant, then that half cosine over the last ``anneal_fraction`` of
    the steps (a constant run and its anneal in one run)."""
    if schedule == "constant":
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_steps)
    if schedule == "constant_cosine":
        if not 0 < anneal_fraction <= 1:
            raise ValueError(f"lr_anneal_fraction must be in (0, 1], got {anneal_fraction}")
        anneal = max(1, round(anneal_fraction * max_steps))
        start = max_steps - anneal

        def factor(step: int) -> float:
            return 1.0 if step < start else (1 + math.cos(math.pi * (step - start) / anneal)) / 2

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _list(v: Any) -> bool:
    return isinstance(v, (list, tuple))


def _pair(v: Any) -> bool:
    return _list(v) and len(v) == 2 and all(map(_number, v))


#: rules of :meth:`Task.check_args`: name -> (test, what the value must be)
ARG_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive_int": (lambda v: _int(v) and v >= 1, "a positive integer"),
    "non_negative_int": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "positive": (lambda v: _number(v) and v > 0, "a positive number"),
    "non_negative": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "fraction": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "positive_ints": (
        lambda v: _list(v) and len(v) > 0 and all(_int(x) and x >= 1 for x in v),
        "a non-empty list of positive integers",
    ),
    "ints": (lambda v: _list(v) and all(map(_int, v)), "a list of integers"),
    "range": (lambda v: _pair(v) and 0 < v[0] <= v[1], "[low, high] with 0 < low <= high"),
    "fractions": (lambda v: _pair(v) and all(0 <= x < 1 for x in v), "two numbers in [0, 1)"),
    "folder": (lambda v: isinstance(v, (str, Path)) and Path(v).is_dir(), "an existing folder"),
    "file": (lambda v: isinstance(v, (str, Path)) and Path(v).is_file(), "an existing file"),
}


class Task(ABC):
    """A method's model, data, losses, validation and card facts.

    The training set must accept ``(index, epoch)`` keys (see :mod:`..sampling`) and draw its
    augmentations from :func:`..sampling.sample_rng` so that resuming is exact.
    """

    #: every argument and its default; subclasses define it
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, args: dict[str, Any], seed: int) -> None:
        """Checks what every task shares: ``model`` is a registered model name whose
        architecture takes the ``model_kwargs``, and ``data_root`` is a folder."""
        self.args = dict(args)
        self.seed = seed
        if "model" in self.args:
            name = self.args["model"]
            if not isinstance(name, str):
                raise ValueError(f"task_args.model must be a model name, got {name!r}")
            arch = get_architecture(get_entry(name).architecture)
            params = inspect.signature(arch).parameters
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                self.check_keys("model_kwargs", params)
        self.check_args("folder", "data_root")

    def check_args(self, rule: str, *keys: str) -> None:
        """Raise ``ValueError`` naming ``task_args.KEY`` unless each value passes ``rule``
        (:data:`ARG_RULES`); ``None`` passes where it is the default, absent keys are skipped."""
        test, words = ARG_RULES[rule]
        for key in keys:
            value = self.args.get(key)
            if key not in self.args or (value is None and self.defaults.get(key) is None):
                continue
            if not test(value):
                raise ValueError(f"task_args.{key} must be {words}, got {value!r}")

    def check_keys(self, key: str, allowed: Iterable[str]) -> None:
        """``task_args.KEY`` must be a mapping whose keys are all in ``allowed``."""
        value = self.args.get(key, {})
        if not isinstance(value, Mapping):
            raise ValueError(f"task_args.{key} must be a mapping, got {value!r}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            known = ", ".join(sorted(allowed))
            raise ValueError(f"task_args.{key}: unknown keys {unknown} (known: {known})")

    def check_paste_args(self) -> None:
        """``task_args.paste_prob`` is a fraction; ``paste_backgrounds`` is None, ``bsds500``
        or an existing folder."""
        self.check_args("fraction", "paste_prob")
        if self.args["paste_backgrounds"] not in (None, "bsds500"):
            self.check_args("folder", "paste_backgrounds")

    def background_crops(self) -> BackgroundCrops | None:
        """The copy-paste backgrounds of ``task_args.paste_backgrounds`` (None: no pasting)."""
        a = self.args
        if not a["paste_backgrounds"]:
            return None
        return BackgroundCrops(a["paste_backgrounds"], a["size"], a["data_root"])

    def paste_sources(self) -> list[str]:
        """Provenance sources the copy-paste backgrounds add to a model card."""
        return ["bsds500_backgrounds"] if self.args["paste_backgrounds"] == "bsds500" else []

    def check_choice(self, key: str, choices: Iterable[Any]) -> None:
        """``task_args.KEY`` must be one of ``choices``."""
        value, options = self.args.get(key), tuple(choices)
        if value not in options:
            raise ValueError(f"task_args.{key} must be one of {options}, got {value!r}")

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
