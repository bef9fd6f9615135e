"""Training configuration: a YAML file plus ``key=value`` overrides from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    """Settings of the shared training loop; ``task_args`` go to the method's task."""

    task: str = "ssn"
    output_dir: str = "runs/ssn"
    max_steps: int = 1000
    batch_size: int = 6  # global batch: per-process batch x processes x grad_accum
    grad_accum: int = 1
    mixed_precision: str = "auto"  # auto = bf16 on GPU, no on CPU; or no / fp16 / bf16
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
    # same architecture and K are required. A resumed checkpoint takes precedence.
    init_from: str | None = None
    stop_at_step: int | None = None  # exit abruptly after this step (to test exact resume)
    task_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
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
    cfg = TrainConfig(**data)
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.max_steps < 1:
        raise ValueError("batch_size, grad_accum and max_steps must be >= 1")
    return cfg
