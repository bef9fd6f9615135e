"""Training configuration: a YAML file plus ``key=value`` overrides from the command line."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
#: the smallest value of each integer setting (0 disables val_every / sample_every)
INT_MINIMUM = {
    "max_steps": 1,
    "batch_size": 1,
    "grad_accum": 1,
    "num_workers": 0,
    "seed": 0,
    "log_every": 1,
    "checkpoint_every": 1,
    "keep_checkpoints": 1,
    "val_every": 0,
    "sample_every": 0,
    "stop_at_step": 1,
}
_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@dataclass
class TrainConfig:
    """Settings of the shared training loop; ``task_args`` go to the method's task."""

    task: str = "ssn"
    output_dir: str = "runs/ssn"
    max_steps: int = 1000
    batch_size: int = 6  # global batch: per-process batch x processes x grad_accum
    grad_accum: int = 1
    # auto = what accelerate launch / accelerate config / ACCELERATE_MIXED_PRECISION say, else
    # bf16 on a CUDA GPU that has it, else no; an explicit no / fp16 / bf16 overrides them
    mixed_precision: str = "auto"
    cpu: bool = False  # run on the CPU even if a GPU / MPS is there (or ACCELERATE_USE_CPU=1)
    # accelerate trackers besides metrics.jsonl: auto = tensorboard when installed, else none;
    # none; or names separated by commas (tensorboard, wandb, mlflow, ...; logs in output_dir/logs)
    log_with: str = "auto"
    num_workers: int = 2
    seed: int = 0
    clip_grad_norm: float | None = None  # max gradient norm, per optimiser
    sync_batchnorm: bool = True  # convert BatchNorm to SyncBatchNorm for multi-GPU runs
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    val_every: int = 500
    sample_every: int = 500
    resume: str | None = "auto"  # auto = latest checkpoint in output_dir, or a path, or null
    # fine-tuning: weights of a released model (folder, zoo name or Hub id) to start from; the
    # same architecture is required, and the same K unless init_partial. A resumed checkpoint
    # takes precedence.
    init_from: str | None = None
    # init_from another K (or width of a head): copy every weight whose name and shape match,
    # start the others afresh (e.g. the part classifier), and print which ones those are
    init_partial: bool = False
    # wall-clock budget of this process: stop after the first step past it, then validate and
    # export as at max_steps (equal-time ablations; a later call resumes towards max_steps)
    max_minutes: float | None = None
    stop_at_step: int | None = None  # exit abruptly after this step (to test exact resume)
    # NHWC memory format for the model and the image batches: faster convolutions for some
    # models on CPU (benchmarks/README.md); weights are saved in the standard format all the same
    channels_last: bool = False
    # exponential moving average of the released model's weights (timm's ModelEmaV3); validation,
    # samples and exports use the average, which is checkpointed and resumed with the run.
    # null: the weights as trained. With the warm-up the decay is min(this, 1 - step^-2/3), for
    # runs from scratch; without it the decay is this from the second step (fine-tuning: from
    # scratch the average keeps decay^step of the random init, e.g. BatchNorm variances of 1.0
    # at 8 % after 1250 steps of 0.998, and validated all background: mcs_ablations.md)
    model_ema_decay: float | None = None
    model_ema_warmup: bool = True
    # with an average: also validate the weights as trained, logged as `val_raw` beside `val`
    # (the average alone is scored, exported and picked as best)
    model_ema_validate_raw: bool = False
    task_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the type of every field and the range of the numbers (``ValueError``)."""
        if self.mixed_precision is False:  # YAML 1.1 reads `mixed_precision: no` as false
            self.mixed_precision = "no"
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            setattr(self, f.name, _typed(f.name, getattr(self, f.name), hints[f.name]))
        for name, low in INT_MINIMUM.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        for name in ("clip_grad_norm", "max_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or null), got {value}")
        if self.model_ema_decay is not None and not 0 < self.model_ema_decay < 1:
            raise ValueError(
                f"model_ema_decay must be in (0, 1) (or null), got {self.model_ema_decay}"
            )
        if self.mixed_precision not in MIXED_PRECISION:
            choices = ", ".join(MIXED_PRECISION)
            raise ValueError(
                f"mixed_precision must be one of {choices}, got {self.mixed_precision!r}"
            )
        resolve_trackers(self.log_with)  # raises for an unknown or missing tracker
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}"
            )
        from .tasks import get_task  # raises for an unknown task, naming the known ones

        get_task(self.task)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_trackers(log_with: str) -> list[str]:
    """The accelerate trackers named by ``log_with`` (see :class:`TrainConfig`); ``ValueError``
    for a name accelerate does not know or whose package is not installed."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    installed = {str(t) for t in get_available_trackers()}
    if log_with == "auto":
        return ["tensorboard"] if "tensorboard" in installed else []
    names = [n.strip() for n in log_with.split(",") if n.strip() not in ("", "none")]
    for name in names:
        if name not in LoggerType.list():
            known = ", ".join(["auto", "none", *LoggerType.list()])
            raise ValueError(f"log_with: unknown tracker {name!r} (known: {known})")
        if name != "all" and name not in installed:
            raise ValueError(f"log_with: the {name} package is not installed")
    return names


def _typed(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (``int``, ``float | None``, ``dict``,
    ...): an integer must be an ``int`` (not ``2.5``, nor ``true``); a float may be an int."""
    optional = type(None) in typing.get_args(hint)
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    kind = typing.get_origin(kind) or kind
    if value is None and optional:
        return None
    if kind is dict:
        if isinstance(value, Mapping):
            return dict(value)
        words = "a mapping of settings"
    else:
        words = _KIND_WORDS[kind]
        if kind is bool and isinstance(value, bool):
            return value
        if kind is str and isinstance(value, str):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    raise ValueError(f"{name} must be {words}{' or null' if optional else ''}, got {value!r}")


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text) if text != "" else ""
    if isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        node = data
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[leaf] = _parse_value(value)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (optional), apply overrides, and validate the keys."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            problem = getattr(err, "problem", None) or "invalid YAML"
            raise ValueError(f"{path} is not valid YAML{line}: {problem}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a text file") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of settings")
        data = loaded
    data = apply_overrides(data, overrides or [])
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(names))})"
        )
    return TrainConfig(**data)
