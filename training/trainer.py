"""The training loop shared by every method (``accelerate``: CPU, one GPU, DDP on many)."""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import (
    ProjectConfiguration,
    get_int_from_env,
    parse_flag_from_env,
    recursively_apply,
    set_seed,
)
from safetensors.torch import load_model, save_model
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from copart_hub.cli import check_writable
from copart_hub.data.provenance import licence_text
from copart_hub.hub.card import write_model_card
from copart_hub.hub.registry import get_architecture, get_entry
from copart_hub.hub.resolve import resolve_checkpoint

from .config import TrainConfig, resolve_trackers
from .sampling import EpochSampler
from .tasks import get_task

STATE_FILE = "trainer_state.json"
EMA_FILE = "model_ema.safetensors"  # the weight average (model_ema_decay) in a checkpoint
#: free space (bytes) below which a failed write is blamed on a full disk (torch.save gives
#: no errno)
LOW_DISK_BYTES = 16 * 2**20


class TrainingError(RuntimeError):
    """A failure during training that the user can fix (e.g. a full disk): one line, exit 2."""


def hardware_summary(accelerator: Accelerator) -> str:
    n, device = accelerator.num_processes, accelerator.device
    if device.type == "cuda":
        return f"{n} x {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return f"{n} x {device.type}"
    cpu = platform.processor() or platform.machine()
    return f"{n} process(es) on CPU ({os.cpu_count()} cores, {cpu})"


def _ddp_device_available() -> bool:
    """Whether there is a device that accelerate runs DDP on (CUDA, XPU, NPU, ...; not MPS)."""
    accel = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accel is None:
        return torch.cuda.is_available()
    device = accel.current_accelerator() if accel.is_available() else None
    return device is not None and device.type != "mps"


def needs_cpu_flag(cpu: bool) -> bool:
    """Whether to pass ``cpu=True`` to :class:`Accelerator`: when asked (``cpu``), and for one
    of several processes (torchrun, mpirun) without a DDP device: accelerate starts its gloo /
    MPI process group only with ``cpu=True`` (``PartialState._prepare_backend``); otherwise
    every process would train alone."""
    world = get_int_from_env(
        ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1
    )
    launched = get_int_from_env(["LOCAL_RANK"], -1) != -1 or world > 1
    return cpu or (launched and not _ddp_device_available())


def resolve_mixed_precision(setting: str, cpu: bool) -> str | None:
    """The ``mixed_precision`` given to :class:`Accelerator`: an explicit setting as it is;
    for ``auto``, ``None`` when ``ACCELERATE_MIXED_PRECISION`` is set (by ``accelerate launch``
    from its flag or ``accelerate config``; accelerate reads it), else ``bf16`` on a CUDA GPU
    that has it, else ``no`` (CPU, MPS, or ``cpu``)."""
    if setting != "auto":
        return setting
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    cpu = cpu or parse_flag_from_env("ACCELERATE_USE_CPU")
    cuda = not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "bf16" if cuda else "no"


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``values`` for trackers: nested mappings as ``a/b`` keys, values other than numbers,
    strings and booleans (lists, ``None``) as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def _nhwc(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def channels_last_batch(batch: Any) -> Any:
    """``batch`` with every 4-D tensor (in a dict, list or tuple, nested) in NHWC memory format;
    anything else unchanged."""
    return recursively_apply(_nhwc, batch)


def _step_of(path: Path) -> int | None:
    """N of a ``step_N`` folder; ``None`` for anything else (e.g. a partial ``step_N.tmp``)."""
    match = re.fullmatch(r"step_(\d+)", path.name)
    return int(match[1]) if match else None


def checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints of a run (``step_N`` with a state file), oldest first."""
    found = [
        p
        for p in (output_dir / "checkpoints").glob("step_*")
        if _step_of(p) is not None and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: _step_of(p) or 0)


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def _disk_full(err: BaseException, folder: Path) -> bool:
    """Whether a failed write ``err`` in ``folder`` came from a full disk or quota."""
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:
        return False


def _logged_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` row; a damaged row (a kill mid-write) counts as never
    logged."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


class Trainer:
    """Runs a :class:`~.tasks.base.Task` under ``accelerate`` with exact, resumable state.

    One step is one optimiser update over ``batch_size`` samples (all processes and
    accumulation micro-batches together). Checkpoints hold model, optimisers, schedulers,
    RNG states and the step; the data position follows from the step because the data order
    depends only on (seed, epoch).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        # what a user can get wrong is checked before any model or data is built
        check_writable(self.out)
        self.resume_from = self._resume_path()
        self.task = get_task(cfg.task)(cfg.task_args, cfg.seed)
        if cfg.init_from:
            self._check_init_from(cfg.init_from)
        cpu = needs_cpu_flag(cfg.cpu)
        self.acc = Accelerator(
            mixed_precision=resolve_mixed_precision(cfg.mixed_precision, cpu),
            gradient_accumulation_steps=cfg.grad_accum,
            cpu=cpu,  # False (accelerate's default) unless asked or needed for gloo
            log_with=resolve_trackers(cfg.log_with) or None,
            # checkpoints are not named or rotated by accelerate: see save_checkpoint
            project_config=ProjectConfiguration(
                project_dir=str(self.out), logging_dir=str(self.out / "logs")
            ),
        )
        per_process, rest = divmod(cfg.batch_size, self.acc.num_processes * cfg.grad_accum)
        if rest or per_process < 1:
            raise ValueError(
                f"batch_size={cfg.batch_size} is not divisible by processes "
                f"({self.acc.num_processes}) x grad_accum ({cfg.grad_accum})"
            )
        set_seed(cfg.seed)
        model = self.task.build_model()
        if cfg.init_from:
            self._initialise_from(model, cfg.init_from)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_batchnorm and self.acc.num_processes > 1 and self.acc.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.train_set = self.task.train_dataset()
        self.sampler = EpochSampler(len(self.train_set), cfg.seed)
        loader = DataLoader(
            self.train_set,
            batch_size=per_process,
            sampler=self.sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,  # workers keep their caches (MCS flow)
        )
        pairs = self.task.build_optimizers(model, cfg.max_steps)
        self.schedulers = [s for _, s in pairs if s is not None]
        prepared = self.acc.prepare(model, *[o for o, _ in pairs], loader)
        self.model, *self.optimizers, self.loader = prepared
        for s in self.schedulers:
            self.acc.register_for_checkpointing(s)
        if len(self.loader) < cfg.grad_accum:
            raise ValueError("the training set is smaller than one global batch")
        self.ema: ModelEmaV3 | None = None
        if cfg.model_ema_decay is not None:
            self.ema = ModelEmaV3(
                self._trained(), decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup
            )
            self.ema.module.to(memory_format=torch.contiguous_format).requires_grad_(False)
        self.step = 0
        self.best_score = float("-inf")
        self.history: list[dict[str, Any]] = []

    def _check_init_from(self, source: str) -> None:
        """Refuse a checkpoint of another architecture than the task's ``model`` up front."""
        name = self.task.args.get("model")
        if not isinstance(name, str):
            return  # a task without a model name: _initialise_from checks the built model
        config_file, _ = resolve_checkpoint(source)
        saved = json.loads(Path(config_file).read_text(encoding="utf-8")).get("architecture")
        wanted = get_architecture(get_entry(name).architecture)
        held = get_architecture(saved) if isinstance(saved, str) else None
        if held is not wanted:
            raise ValueError(
                f"init_from {source!r} holds a {getattr(held, '__name__', saved)}; this task "
                f"trains a {wanted.__name__}"
            )

    def _initialise_from(self, module: torch.nn.Module, source: str) -> None:
        """Copy the weights of the released model ``source`` into the part of ``module`` that
        the task releases (e.g. the segmenter, not the SCOPS part basis)."""
        from copart_hub import from_pretrained

        target = self.task.release_model(module)
        loaded = from_pretrained(source)
        if type(loaded) is not type(target):
            raise ValueError(
                f"init_from {source!r} holds a {type(loaded).__name__}; this task trains a "
                f"{type(target).__name__}"
            )
        state = loaded.state_dict()
        if self.cfg.init_partial:
            own = target.state_dict()
            state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            fresh = sorted(set(own) - set(state))
            if not state:
                raise ValueError(f"init_from {source!r} shares no weight with this model")
            target.load_state_dict(state, strict=False)
            fresh_names = ", ".join(fresh) or "none"
            self.acc.print(f"initialised from {source}; started afresh: {fresh_names}")
            return
        try:
            target.load_state_dict(state)
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            raise ValueError(
                f"init_from {source!r} does not fit this model: {detail} (init_partial=true copies "
                "the weights that fit and starts the others afresh)"
            ) from None
        self.acc.print(f"initialised from {source}")

    # ----------------------------------------------------------------- checkpoints
    @contextmanager
    def _standard_layout(self) -> Iterator[None]:
        """Weights in the standard (NCHW-contiguous) layout while inside: safetensors saves
        only contiguous tensors. The parameters stay the same objects (the optimisers keep
        them); with ``channels_last`` they return to NHWC on exit."""
        if not self.cfg.channels_last:
            yield
            return
        self.model.to(memory_format=torch.contiguous_format)
        try:
            yield
        finally:
            self.model.to(memory_format=torch.channels_last)

    def save_checkpoint(self) -> Path:
        """Write ``step_N`` into ``step_N.tmp`` and rename it once complete, then keep the last
        ``keep_checkpoints``. A failed write on any process (e.g. a full disk) removes the partial
        folder, keeps the earlier checkpoints and raises :class:`TrainingError` on every process.

        Rotation is ours, not ``ProjectConfiguration(total_limit=...)``: accelerate applies that
        limit only with ``automatic_checkpoint_naming``, which writes straight into
        ``checkpoints/checkpoint_<save count>`` (no ``.tmp`` + rename: a kill mid-save leaves a
        partial newest folder; names that are not steps) and deletes the oldest folders, of
        any name, before the new save has succeeded."""
        final = self.out / "checkpoints" / f"step_{self.step}"
        tmp = final.with_name(final.name + ".tmp")
        self.acc.wait_for_everyone()
        try:
            with self._standard_layout():
                self.acc.save_state(str(tmp))
            if self.acc.is_main_process:
                state = {
                    "step": self.step,
                    "best_score": self.best_score,
                    "config": self.cfg.to_dict(),
                }
                (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
                if self.ema is not None:
                    save_model(self.ema.module, str(tmp / EMA_FILE))
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
            failure = err
        else:
            failure = None
        # every rank's files are in ``tmp`` (accelerate's save_state has no barrier of its own)
        # and every rank learns whether one of them failed: none is left waiting for the others
        flag = torch.tensor(float(failure is not None), device=self.acc.device)
        if self.acc.reduce(flag, "max").item():
            if self.acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            self.acc.wait_for_everyone()
            full = failure is not None and _disk_full(failure, final.parent)
            if failure is not None and not (full or isinstance(failure, OSError)):
                raise failure
            if failure is None:
                reason = "another process could not write its part"
            else:
                reason = "the disk is full" if full else " ".join(str(failure).split())
            kept = latest_checkpoint(self.out)
            raise TrainingError(
                f"could not save checkpoint {final}: {reason}; the last good checkpoint is "
                f"kept ({kept or 'none yet'})"
            ) from failure
        if self.acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for old in checkpoints(self.out)[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def _discard_stale_state(self) -> None:
        """On the main process: remove partial ``step_N.tmp`` checkpoints of an interrupted run
        and, after a resume, the ``metrics.jsonl`` rows of the steps that will run again
        (rewritten atomically)."""
        if self.acc.is_main_process:
            for stale in (self.out / "checkpoints").glob("step_*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            metrics = self.out / "metrics.jsonl"
            if self.resume_from is not None and metrics.is_file():
                rows = metrics.read_text(encoding="utf-8").splitlines(keepends=True)
                kept = [row for row in rows if _logged_step(row) <= self.step]
                if len(kept) != len(rows):
                    partial = metrics.with_name(metrics.name + ".tmp")
                    partial.write_text("".join(kept), encoding="utf-8")
                    os.replace(partial, metrics)
        self.acc.wait_for_everyone()

    def load_checkpoint(self, path: Path) -> None:
        self.acc.load_state(str(path))
        state = json.loads((path / STATE_FILE).read_text())
        self.step = int(state["step"])
        self.best_score = float(state["best_score"])
        self.acc.print(f"resumed from {path} at step {self.step}")
        if self.ema is not None:
            if (path / EMA_FILE).is_file():
                load_model(self.ema.module, str(path / EMA_FILE))
            else:  # a run that had no average until now
                self.ema.set(self._trained())
                self.acc.print(f"{path} holds no {EMA_FILE}: the weight average starts here")

    def _resume_path(self) -> Path | None:
        if self.cfg.resume in (None, "", "none"):
            return None
        if self.cfg.resume == "auto":
            return latest_checkpoint(self.out)
        path = Path(self.cfg.resume)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a training checkpoint (no {STATE_FILE})")
        return path

    # ----------------------------------------------------------------- loop
    def _log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (with its ``step``) to ``metrics.jsonl`` and send it to the
        trackers (``log_with``)."""
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            values = _flat({k: v for k, v in record.items() if k != "step"})
            if values:
                self.acc.log(values, step=int(record["step"]))

    def _trained(self) -> torch.nn.Module:
        """The part of the model that is released, with the weights as trained."""
        return self.task.release_model(self.acc.unwrap_model(self.model))

    def _released(self) -> torch.nn.Module:
        """What validation, samples and exports see: the weight average if there is one."""
        return self.ema.module if self.ema is not None else self._trained()

    @staticmethod
    @contextmanager
    def _inference(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``model`` in eval mode while inside, back in its own mode after, whatever the task
        code did to it (a :class:`~copart_hub.pipelines.PartSegmenter` sets eval mode)."""
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)

    def _evaluate(self) -> dict[str, float]:
        """Validate on the main process (the average, and the raw weights beside it with
        ``model_ema_validate_raw``); export ``best/`` when the average's score improves."""
        scores: dict[str, float] = {}
        if self.acc.is_main_process:
            with self._inference(self._released()) as model:
                scores = self.task.validate(model)
            record = {"step": self.step, "val": scores}
            if self.ema is not None and self.cfg.model_ema_validate_raw:
                with self._inference(self._trained()) as model:
                    record["val_raw"] = self.task.validate(model)
            self._log(record)
            self.acc.print(f"step {self.step} validation: {scores}")
            if scores.get("score", float("-inf")) > self.best_score:
                self.best_score = scores["score"]
                self._export(self.out / "best", scores)
        self.acc.wait_for_everyone()
        return scores

    def _samples(self) -> None:
        if self.acc.is_main_process:
            (self.out / "samples").mkdir(parents=True, exist_ok=True)
            with self._inference(self._released()) as model:
                self.task.write_samples(model, self.out / "samples" / f"step_{self.step:07d}.png")
        self.acc.wait_for_everyone()

    def _export(self, folder: Path, scores: dict[str, float]) -> None:
        """Write the released model, card, licence and samples into ``folder``, atomically: into
        a hidden sibling first, swapped in whole, so a run stopped mid-export leaves the
        previous export intact rather than new samples beside old weights."""
        model = self._released()
        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        samples = partial / "samples.png"
        with self._inference(model):
            self.task.write_samples(model, samples)
        info = {
            **self.task.card_info(),
            "steps": self.step,
            "batch_size": self.cfg.batch_size,
            "hardware": hardware_summary(self.acc),
            "validation": scores,
            "train_config": self.cfg.to_dict(),
            "sample_image": samples.name if samples.exists() else None,
        }
        write_model_card(model, partial / "README.md", info)
        if info.get("data_source"):  # the weights carry their training data's terms
            name = info.get("name", folder.name)
            text = licence_text(name, info["data_source"])
            (partial / "LICENSE.md").write_text(text, encoding="utf-8")
        with self._standard_layout():
            model.save_pretrained(partial)
        stale = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(stale, ignore_errors=True)
        if folder.exists():
            folder.rename(stale)
        partial.rename(folder)
        shutil.rmtree(stale, ignore_errors=True)

    def train(self) -> dict[str, Any]:
        """Resume if asked, train to ``max_steps`` (or ``max_minutes``), validate and export
        ``final/``; returns the step, the loss history and the final scores."""
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
        self._discard_stale_state()
        self.acc.init_trackers(self.cfg.task, config=_flat(self.cfg.to_dict()))
        try:
            return self._run()
        finally:
            self.acc.end_training()  # closes the trackers and the process group

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.model.train()
        micro = self.step * cfg.grad_accum  # micro-batches consumed by each process
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not self.acc.is_main_process,
            desc=f"train {cfg.task}",
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        step_losses: list[torch.Tensor] = []  # micro-batch losses of the current step
        out_of_time = False
        try:  # closed on errors too, so that an error message starts a line
            while self.step < cfg.max_steps:
                epoch, offset = divmod(micro, len(self.loader))
                self.sampler.set_epoch(epoch)
                skip = self.acc.skip_first_batches
                batches = skip(self.loader, offset) if offset else self.loader
                for batch in batches:
                    if cfg.channels_last:
                        batch = channels_last_batch(batch)
                    with self.acc.accumulate(self.model):
                        loss, logs = self.task.training_step(self.model, batch, self.step)
                        step_losses.append(loss.detach().float())
                        self.acc.backward(loss)
                        if self.acc.sync_gradients and cfg.clip_grad_norm:
                            for opt in self.optimizers:  # each optimiser's parameters separately
                                params = [p for g in opt.param_groups for p in g["params"]]
                                self.acc.clip_grad_norm_(params, cfg.clip_grad_norm)
                        for opt in self.optimizers:
                            opt.step()
                            opt.zero_grad(set_to_none=True)
                    micro += 1
                    if not self.acc.sync_gradients:
                        continue
                    for sched in self.schedulers:
                        sched.step()
                    self.step += 1
                    if self.ema is not None:
                        self.ema.update(self._trained(), step=self.step)
                    # mean over the step's micro-batches and processes: the loss of the global batch
                    step_loss = torch.stack(step_losses).mean()
                    step_losses.clear()
                    mean_loss = self.acc.reduce(step_loss, reduction="mean").item()
                    self.history.append({"step": self.step, "loss": mean_loss})
                    bar.update(1)
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        logs = {  # every process's batch counts, as for the loss
                            k: self.acc.reduce(
                                torch.tensor(float(v), device=self.acc.device), "mean"
                            ).item()
                            for k, v in logs.items()
                        }
                        lr = self.optimizers[0].param_groups[0]["lr"]
                        self._log(
                            {
                                "step": self.step,
                                **logs,
                                "loss": mean_loss,
                                "lr": lr,
                                "elapsed_s": round(time.perf_counter() - t0, 2),
                            }
                        )
                    if cfg.sample_every and self.step % cfg.sample_every == 0:
                        self._samples()
                    if cfg.val_every and self.step % cfg.val_every == 0:
                        self._evaluate()
                    if cfg.max_minutes is not None:  # all processes stop at the same step
                        late = time.perf_counter() - t0 >= 60 * cfg.max_minutes
                        flag = torch.tensor(float(late), device=self.acc.device)
                        out_of_time = bool(self.acc.reduce(flag, "max").item())
                    if (
                        self.step % cfg.checkpoint_every == 0
                        or self.step == cfg.max_steps
                        or out_of_time
                    ):
                        self.save_checkpoint()
                    if cfg.stop_at_step is not None and self.step == cfg.stop_at_step:
                        os._exit(3)  # simulate a kill: no cleanup, no final save
                    if self.step >= cfg.max_steps or out_of_time:
                        break
                if out_of_time:
                    self.acc.print(f"stopped at step {self.step}: max_minutes={cfg.max_minutes}")
                    break
        finally:
            bar.close()
        final_scores = self._evaluate()
        if self.acc.is_main_process:
            self._export(self.out / "final", final_scores)
        self.acc.wait_for_everyone()
        return {"step": self.step, "history": self.history, "final": final_scores}
