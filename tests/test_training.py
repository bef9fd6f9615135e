"""Shared training loop: config, loss goes down on real data, exact resume, DDP equivalence."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from copart_hub.training.config import apply_overrides, load_config
from copart_hub.training.sampling import EpochSampler
from copart_hub.training.trainer import (
    EMA_FILE,
    STATE_FILE,
    Trainer,
    checkpoints,
    latest_checkpoint,
)

TINY = [
    "task=ssn",
    "task_args.patch=48",
    "task_args.n_spixels=9",
    "task_args.model_kwargs.hidden_dim=4",
    "task_args.model_kwargs.norm=none",
    "task_args.val_images=1",
    "task_args.val_counts=[16]",
    "batch_size=4",
    "num_workers=0",
    "log_every=1",
    "val_every=0",
    "sample_every=0",
    "checkpoint_every=100",
    "resume=null",
]


def test_overrides_parse_types_and_nesting():
    data = apply_overrides(
        {"task_args": {"a": 1}},
        ["max_steps=7", "task_args.b=[1, 2]", "x.y.z=0.5", "lr=3e-3", "s=abc"],
    )
    assert data == {
        "task_args": {"a": 1, "b": [1, 2]},
        "max_steps": 7,
        "x": {"y": {"z": 0.5}},
        "lr": 0.003,
        "s": "abc",
    }
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["oops"])


def test_load_config_rejects_unknown_keys_and_bad_values():
    assert load_config(None, ["max_steps=3"]).max_steps == 3
    with pytest.raises(ValueError, match="unknown config keys: nope"):
        load_config(None, ["nope=1"])
    with pytest.raises(ValueError, match=">= 1"):
        load_config(None, ["batch_size=0"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("max_steps=2.5", "max_steps must be an integer, got 2.5"),
        ("max_steps=abc", "max_steps must be an integer, got 'abc'"),
        ("seed=true", "seed must be an integer, got True"),
        ("sync_batchnorm=1", "sync_batchnorm must be true or false, got 1"),
        ("output_dir=null", "output_dir must be a string, got None"),
        ("num_workers=-1", "num_workers must be >= 0, got -1"),
        ("log_every=0", "log_every must be >= 1, got 0"),
        ("clip_grad_norm=0", "clip_grad_norm must be > 0"),
        ("max_minutes=-1", "max_minutes must be > 0"),
        ("mixed_precision=fp8", "mixed_precision must be one of auto, no, fp16, bf16"),
        ("cpu=1", "cpu must be true or false, got 1"),
        ("model_ema_decay=1", "model_ema_decay must be in (0, 1)"),
        ("log_with=nope", "log_with: unknown tracker 'nope' (known: auto, none, all,"),
        ("task=foo", "unknown task 'foo'"),
        ("task_args=[1]", "task_args must be a mapping of settings"),
    ],
)
def test_config_fields_are_typed_and_range_checked(override: str, message: str):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, [override])


def test_config_accepts_ints_for_floats_and_null_for_optional_fields():
    cfg = load_config(None, ["max_minutes=2", "clip_grad_norm=null", "stop_at_step=null"])
    assert cfg.max_minutes == 2.0 and isinstance(cfg.max_minutes, float)
    assert cfg.clip_grad_norm is None and cfg.stop_at_step is None
    assert load_config(None, ["mixed_precision=no"]).mixed_precision == "no"  # YAML: false


@pytest.mark.parametrize(
    "task, args, message",
    [
        ("ssn", {"patch": 0}, "task_args.patch must be a positive integer"),
        ("ssn", {"n_iter": 2.5}, "task_args.n_iter must be a positive integer"),
        ("ssn", {"lr": -1}, "task_args.lr must be a positive number"),
        ("ssn", {"val_counts": []}, "task_args.val_counts must be a non-empty list"),
        ("ssn", {"model": "nope"}, "unknown model 'nope'"),
        ("ssn", {"model_kwargs": {"depth": 3}}, "task_args.model_kwargs: unknown keys"),
        ("scops", {"scale_range": [1.1, 0.6]}, "task_args.scale_range must be [low, high]"),
        ("scops", {"collection": "cats"}, "task_args.collection must be one of"),
        ("scops", {"ema_decay": 2}, "task_args.ema_decay must be a number in [0, 1]"),
        ("scops", {"lr_schedule": "step"}, "task_args.lr_schedule must be one of"),
        ("mcs", {"lr_schedule": "linear"}, "task_args.lr_schedule must be one of"),
        ("mcs", {"feature_net": "resnet"}, "task_args.feature_net must be one of"),
        ("mcs", {"vgg_weights": "/no/such/file"}, "task_args.vgg_weights must be an existing"),
        ("mcs", {"weights": {"pixels": 1}}, "task_args.weights: unknown keys ['pixels']"),
    ],
)
def test_task_args_are_checked_when_the_task_is_made(task: str, args: dict, message: str):
    from copart_hub.training.tasks import get_task

    with pytest.raises(ValueError, match=re.escape(message)):
        get_task(task)(args, seed=0)


def test_latest_checkpoint_skips_partial_and_foreign_folders(tmp_path: Path):
    """A ``step_N.tmp`` holding its state file (killed before the rename) is not a checkpoint."""
    folder = tmp_path / "checkpoints"
    for name in ("step_3", "step_12", "step_20.tmp", "step_x", "step_30"):
        (folder / name).mkdir(parents=True)
        if name != "step_30":  # no state file: never completed
            (folder / name / STATE_FILE).write_text("{}")
    assert checkpoints(tmp_path) == [folder / "step_3", folder / "step_12"]
    assert latest_checkpoint(tmp_path) == folder / "step_12"
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_a_full_disk_is_recognised_without_an_errno(tmp_path: Path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError: the free space decides then."""
    from copart_hub.training import trainer

    assert trainer._disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert not trainer._disk_full(RuntimeError("file write failed"), tmp_path)
    monkeypatch.setattr(trainer.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 0))
    assert trainer._disk_full(RuntimeError("file write failed"), tmp_path)


def _trainer(out: Path, *extra: str) -> Trainer:
    return Trainer(load_config(None, [*TINY, f"output_dir={out}", *extra]))


@pytest.mark.usefixtures("bsds_root")
def test_resume_skips_a_stale_tmp_checkpoint_and_drops_rerun_metrics(tmp_path: Path):
    out, folder = tmp_path / "run", tmp_path / "run" / "checkpoints"
    _trainer(out, "max_steps=2", "checkpoint_every=1").train()
    # killed after step 3 wrote its state, before the rename, and mid-way through a log row
    shutil.copytree(folder / "step_2", folder / "step_3.tmp")
    state = json.loads((folder / "step_3.tmp" / STATE_FILE).read_text())
    (folder / "step_3.tmp" / STATE_FILE).write_text(json.dumps({**state, "step": 3}))
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 3, "loss": 123.0}) + '\n{"step": 4, "lo')
    trainer = _trainer(out, "max_steps=3", "checkpoint_every=1", "resume=auto")
    assert trainer.resume_from == folder / "step_2"
    trainer.train()
    assert sorted(p.name for p in folder.iterdir()) == ["step_2", "step_3"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert 123.0 not in [r.get("loss") for r in rows]
    assert json.loads((folder / "step_3" / STATE_FILE).read_text())["step"] == 3


def _exported(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "final" / "model.safetensors")


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


@pytest.mark.usefixtures("bsds_root")
def test_model_ema_is_what_is_exported_and_is_resumed_exactly(tmp_path: Path):
    ema = ["model_ema_decay=0.5", "checkpoint_every=2"]
    full = _trainer(tmp_path / "full", "max_steps=4", *ema)
    full.train()
    trained = {k: v.detach().clone() for k, v in full._trained().state_dict().items()}
    averaged = _exported(tmp_path / "full")
    assert not _same_weights(averaged, trained)  # the export is the average, not the last step
    assert _same_weights(averaged, full.ema.module.state_dict())

    _trainer(tmp_path / "split", "max_steps=2", *ema).train()
    assert (tmp_path / "split" / "checkpoints" / "step_2" / EMA_FILE).is_file()
    _trainer(tmp_path / "split", "max_steps=4", *ema, "resume=auto").train()
    assert _same_weights(_exported(tmp_path / "split"), averaged)


@pytest.mark.parametrize("warmup, decay", [("true", 1 - 2 ** (-2 / 3)), ("false", 0.5)])
@pytest.mark.usefixtures("bsds_root")
def test_model_ema_averages_the_steps_with_the_decay_asked_for(tmp_path: Path, warmup, decay):
    """Two steps: the average is w2 + decay * (w1 - w2), the warm-up lowering decay 0.5."""
    trainer = _trainer(tmp_path, "max_steps=2", "model_ema_decay=0.5", f"model_ema_warmup={warmup}")
    seen, update = [], trainer.ema.update

    def recording(model, step):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        update(model, step=step)

    trainer.ema.update = recording
    trainer.train()
    (w1, w2), average = seen, trainer.ema.module.state_dict()
    for k, v in w1.items():
        if v.is_floating_point():
            assert torch.allclose(average[k], w2[k] + decay * (v - w2[k]), atol=1e-6), k


@pytest.mark.usefixtures("bsds_root")
def test_model_ema_starts_from_the_weights_of_a_checkpoint_without_one(tmp_path: Path, capsys):
    out = tmp_path / "run"
    _trainer(out, "max_steps=2", "checkpoint_every=2").train()
    trainer = _trainer(out, "max_steps=2", "model_ema_decay=0.9", "resume=auto")
    trainer.train()
    assert "the weight average starts here" in capsys.readouterr().out
    assert _same_weights(_exported(out), trainer._trained().state_dict())


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.usefixtures("bsds_root")
def test_model_ema_validate_raw_scores_the_trained_weights_beside_the_average(
    tmp_path: Path, raw: bool
):
    out = tmp_path / "run"
    args = ["max_steps=2", "val_every=1", "model_ema_decay=0.5", f"model_ema_validate_raw={raw}"]
    trainer = _trainer(out, *args)
    seen = []

    def validate(model):
        seen.append(model)
        return {"score": 1.0 if model is trainer.ema.module else 0.0}

    trainer.task.validate = validate
    trainer.train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "val" in r]
    assert [r["step"] for r in rows] == [1, 2, 2]  # every step, and the final validation
    assert all(r["val"] == {"score": 1.0} for r in rows)  # the average is what `val` scores
    if raw:
        assert all(r["val_raw"] == {"score": 0.0} for r in rows)
        assert seen.count(trainer._trained()) == len(rows)
    else:
        assert not any("val_raw" in r for r in rows) and len(seen) == len(rows)


@pytest.mark.usefixtures("bsds_root")
def test_an_export_mid_training_leaves_the_model_in_training_mode(tmp_path: Path):
    """Task code may put the model in eval mode (a PartSegmenter does): a ``best/`` export
    during training must not leave it there, or training goes on with frozen BatchNorm."""
    trainer = _trainer(tmp_path / "run", "max_steps=1")
    trainer.task.write_samples = lambda model, path: model.eval()
    trainer._trained().train()
    trainer._export(tmp_path / "run" / "best", {"score": 1.0})
    assert trainer._trained().training


@pytest.mark.usefixtures("bsds_root")
def test_an_export_stopped_midway_leaves_the_previous_export_whole(tmp_path: Path):
    """A run killed while it exports ``best/`` (samples written, weights not yet) must not
    leave new samples beside old weights: the folder keeps the previous export intact."""
    out = tmp_path / "run"
    trainer = _trainer(out, "max_steps=1")
    trainer.train()
    final = out / "final"
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    assert "model.safetensors" in before

    def killed(model, path: Path) -> None:
        Path(path).write_bytes(b"")  # half-written samples, then the process dies
        raise KeyboardInterrupt

    trainer.task.write_samples = killed
    with pytest.raises(KeyboardInterrupt):
        trainer._export(final, {"score": 1.0})
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    del trainer.task.write_samples  # the task's own again: a later export replaces it whole
    trainer._export(final, {"score": 1.0})
    assert (final / "model.safetensors").is_file() and (final / "README.md").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


@pytest.mark.usefixtures("bsds_root")
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch, capsys):
    from accelerate import Accelerator
    from copart_hub.training import launch

    save_state = Accelerator.save_state

    def fill_the_disk(self, output_dir: str, **kwargs):
        if Path(output_dir).name != "step_2.tmp":
            return save_state(self, output_dir, **kwargs)
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Accelerator, "save_state", fill_the_disk)
    out = tmp_path / "run"
    assert launch.main([*TINY, f"output_dir={out}", "max_steps=3", "checkpoint_every=1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("copart-hub train: error: could not save checkpoint"), err
    assert "the disk is full" in line and "step_1" in line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1"]
    assert not (out / "final").exists()


def test_epoch_sampler_is_deterministic_per_epoch():
    s = EpochSampler(10, seed=3)
    first = list(s)
    assert sorted(i for i, _ in first) == list(range(10)) and {e for _, e in first} == {0}
    assert list(s) == first
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in first]


def _run(
    args: list[str], nproc: int = 1, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", **(env or {})}
    if nproc == 1:
        cmd = [sys.executable, "-m", "copart_hub.training.launch", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_port=29561",
            "-m",
            "copart_hub.training.launch",
            *args,
        ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _first_traceback(r: subprocess.CompletedProcess) -> str:
    """The failing rank's traceback, which torchrun's summary pushes out of the stderr tail."""
    start = r.stderr.find("Traceback")
    return r.stderr[start:][:4000] if start >= 0 else r.stderr[-4000:]


@pytest.mark.parametrize("task", ["scops", "mcs"])
def test_cosine_schedule_takes_the_networks_lr_to_zero_over_max_steps(task: str):
    """The scheduler the trainer steps once a step: lr(t) = lr0 (1 + cos(pi t / T)) / 2."""
    import math

    from copart_hub.training.tasks import get_task

    made = get_task(task)({"lr": 1e-3, "lr_schedule": "cosine"}, seed=0)
    module = made.build_model()
    (opt, sched), *rest = made.build_optimizers(module, max_steps=10)
    assert all(s is None for _, s in rest)  # the SCOPS part basis keeps its own SGD rate
    seen = []
    for _ in range(10):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    expected = [1e-3 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(1, 11)]
    assert seen == pytest.approx(expected, abs=1e-12)
    constant = get_task(task)({"lr": 1e-3}, seed=0)
    assert all(s is None for _, s in constant.build_optimizers(module, max_steps=10))


@pytest.mark.parametrize("task", ["scops", "mcs"])
def test_constant_cosine_schedule_anneals_only_the_last_fraction(task: str):
    """``constant_cosine``: lr0 for the first 60 % of 10 steps, then the cosine of ``cosine``
    squeezed into the last 4 steps, down to 0."""
    import math

    from copart_hub.training.tasks import get_task

    args = {"lr": 1e-3, "lr_schedule": "constant_cosine", "lr_anneal_fraction": 0.4}
    made = get_task(task)(args, seed=0)
    (opt, sched), *_ = made.build_optimizers(made.build_model(), max_steps=10)
    seen = []
    for _ in range(10):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    expected = [1e-3] * 5 + [1e-3 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)]
    assert seen == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="lr_anneal_fraction must be in"):
        get_task(task)({**args, "lr_anneal_fraction": 0}, seed=0).build_optimizers(
            made.build_model(), max_steps=10
        )


def test_channels_last_batch_converts_every_image_tensor_and_nothing_else():
    from copart_hub.training.trainer import channels_last_batch

    image, vector = torch.rand(2, 3, 5, 7), torch.rand(2, 3)
    out = channels_last_batch({"a": image, "b": [image, vector], "c": (vector, 1), "d": "x"})
    nhwc = torch.channels_last
    assert not image.is_contiguous(memory_format=nhwc)
    assert out["a"].is_contiguous(memory_format=nhwc)
    assert out["b"][0].is_contiguous(memory_format=nhwc) and out["b"][1] is vector
    assert isinstance(out["c"], tuple) and out["c"] == (vector, 1) and out["d"] == "x"
    assert torch.equal(out["a"], image)  # the same values, only the memory layout differs


def _losses(out_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
@pytest.mark.usefixtures("bsds_root")
def test_exact_resume_after_kill(tmp_path: Path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    base = [*TINY, "max_steps=6", "checkpoint_every=3"]
    r = _run([*base, f"output_dir={full}"])
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run([*base, f"output_dir={killed}", "stop_at_step=5"])  # dies after step 5, ckpt at 3
    assert r.returncode == 3, r.stderr[-2000:]
    assert not (killed / "final").exists()
    r = _run([*base, f"output_dir={killed}", "resume=auto"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout + r.stderr
    a, b = _losses(full), _losses(killed)  # the resume dropped the rows of steps 4-5 run twice
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "loss" in x] == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7)
    for name in ("model.safetensors", "config.json", "README.md", "samples.png"):
        assert (killed / "final" / name).is_file()


def _same_step_losses(tmp_path: Path, extra: list[str], nproc: int = 1, rel: float = 1e-5) -> None:
    """Three steps with ``extra`` settings log the same losses as the plain run."""
    args = [*TINY, "max_steps=3"]
    r1 = _run([*args, f"output_dir={tmp_path / 'plain'}"])
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = _run([*args, *extra, f"output_dir={tmp_path / 'other'}"], nproc=nproc)
    assert r2.returncode == 0, _first_traceback(r2)
    a, b = _losses(tmp_path / "plain"), _losses(tmp_path / "other")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=rel)


@pytest.mark.slow
@pytest.mark.usefixtures("bsds_root")
def test_two_process_gloo_matches_single_process(tmp_path: Path):
    _same_step_losses(tmp_path, [], nproc=2)


@pytest.mark.slow
@pytest.mark.usefixtures("bsds_root")
def test_checkpoint_waits_for_a_slow_rank_before_the_rename(tmp_path: Path):
    """Rank 1 writes its RNG state after rank 0 is done; the ``.tmp`` folder must not be renamed
    under it (a race seen in CI: "Parent directory .../step_3.tmp does not exist")."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, time\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import accelerate.accelerator as a\n"
        "    save = a.save_accelerator_state\n"
        "    a.save_accelerator_state = lambda *x, **k: (time.sleep(2), save(*x, **k))[1]\n"
        "    print('rank 1 slowed', file=__import__('sys').stderr)\n"
    )
    out = tmp_path / "run"
    r = _run([*TINY, "max_steps=2", f"output_dir={out}"], nproc=2, env={"PYTHONPATH": str(hook)})
    assert r.returncode == 0, _first_traceback(r)
    assert "rank 1 slowed" in r.stderr  # the hook took effect
    (step,) = checkpoints(out)
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {f.name for f in step.iterdir()}


@pytest.mark.slow
@pytest.mark.usefixtures("bsds_root")
def test_a_checkpoint_that_fails_on_one_rank_stops_every_rank_cleanly(tmp_path: Path):
    """Rank 1's disk fills at the second checkpoint: both ranks stop with one line each (rank 0
    is not left waiting for rank 1), the partial folder goes and the first checkpoint stays."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import accelerate.accelerator as a\n"
        "    save, calls = a.save_accelerator_state, []\n"
        "    def failing(*x, **k):\n"
        "        calls.append(1)\n"
        "        if len(calls) == 2:\n"
        "            raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "        return save(*x, **k)\n"
        "    a.save_accelerator_state = failing\n"
    )
    out = tmp_path / "run"
    args = [*TINY, "max_steps=4", "checkpoint_every=1", f"output_dir={out}"]
    r = _run(args, nproc=2, timeout=300, env={"PYTHONPATH": str(hook)})
    assert r.returncode != 0
    errors = [x for x in r.stderr.splitlines() if "copart-hub train: error:" in x]
    assert any("step_2: the disk is full" in x for x in errors), r.stderr[-3000:]
    assert any("step_2: another process could not write its part" in x for x in errors), errors
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_1"]


@pytest.mark.slow
@pytest.mark.usefixtures("bsds_root")
def test_channels_last_training_matches_and_saves_standard_weights(tmp_path: Path):
    """NHWC training takes the same steps; its checkpoints and export are ordinary safetensors
    (which refuse non-contiguous tensors) and the checkpoint resumes."""
    from safetensors.torch import load_file

    _same_step_losses(tmp_path, ["channels_last=true", "checkpoint_every=2"], rel=1e-4)
    out = tmp_path / "other"
    weights = load_file(str(out / "final" / "model.safetensors"))
    assert any(w.dim() == 4 for w in weights.values())
    assert (out / "checkpoints" / "step_2").is_dir()
    args = [*TINY, "max_steps=4", "channels_last=true", f"output_dir={out}", "resume=auto"]
    r = _run(args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("bsds_root")
def test_gradient_accumulation_matches_the_full_batch(tmp_path: Path):
    """batch 4 as 2 micro-batches of 2 takes the same steps as 1 batch of 4."""
    _same_step_losses(tmp_path, ["grad_accum=2"])


@pytest.mark.slow
@pytest.mark.usefixtures("bsds_root")
def test_short_real_training_lowers_the_loss():
    """30 Adam steps of the SSN task on real BSDS patches lower its label loss on them."""
    from copart_hub.training.tasks.ssn import SSNTask

    torch.manual_seed(0)
    task = SSNTask(
        {"patch": 64, "n_spixels": 16, "lr": 3e-3, "model_kwargs": {"hidden_dim": 16}}, seed=0
    )
    model = task.build_model().train()
    data = task.train_dataset()
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(6)])
    ((opt, _),) = task.build_optimizers(model, 30)
    recon = []
    for step in range(30):
        loss, logs = task.training_step(model, batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        recon.append(logs["recon"])
    assert sum(recon[-5:]) / 5 < 0.9 * sum(recon[:5]) / 5, recon


def _save_constant_ssn(folder: Path, **kwargs: int) -> None:
    """Save an ``ssn_deep`` (no norm) with every parameter 0.25, as a released model."""
    import copart_hub

    source = copart_hub.create_model("ssn_deep", norm="none", **kwargs)
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(0.25)
    source.save_pretrained(folder)


@pytest.mark.usefixtures("bsds_root")
def test_init_from_a_released_model_and_mismatches(tmp_path: Path):
    """``init_from`` starts the released part of the model from a checkpoint; another
    architecture or width is refused with a clear error."""
    from copart_hub.training.trainer import Trainer

    import copart_hub

    _save_constant_ssn(tmp_path / "source", hidden_dim=4)
    cfg = load_config(None, [*TINY, f"output_dir={tmp_path / 'run'}", "max_steps=1"])
    cfg.init_from = str(tmp_path / "source")
    trainer = Trainer(cfg)
    released = trainer.task.release_model(trainer.acc.unwrap_model(trainer.model))
    assert all(torch.all(p == 0.25) for p in released.parameters())
    copart_hub.create_model("ssn_deep", hidden_dim=8, norm="none").save_pretrained(tmp_path / "w")
    copart_hub.create_model("scops_resnet18", num_parts=2).save_pretrained(tmp_path / "scops")
    for other, message in (("w", "does not fit this model"), ("scops", "holds a SCOPS")):
        cfg.init_from = str(tmp_path / other)
        with pytest.raises(ValueError, match=message):
            Trainer(cfg)


@pytest.mark.usefixtures("bsds_root")
def test_init_partial_copies_what_fits_and_starts_the_rest_afresh(tmp_path: Path, capsys):
    """``init_partial=true`` takes a checkpoint with another head (as a part classifier of
    another K): the weights that fit are copied, the others keep their fresh initialisation
    and are named; a checkpoint that shares nothing is refused."""
    from copart_hub.training.trainer import Trainer

    import copart_hub

    _save_constant_ssn(tmp_path / "source", hidden_dim=4, feature_dim=6)
    cfg = load_config(None, [*TINY, f"output_dir={tmp_path / 'run'}", "max_steps=1"])
    cfg.init_from = str(tmp_path / "source")
    with pytest.raises(ValueError, match="init_partial=true"):
        Trainer(cfg)
    cfg.init_partial = True
    trainer = Trainer(cfg)
    released = trainer.task.release_model(trainer.acc.unwrap_model(trainer.model))
    copied = {k: bool(torch.all(v == 0.25)) for k, v in released.state_dict().items()}
    assert copied.pop("feature_net.head.weight") is False
    assert copied.pop("feature_net.head.bias") is False
    assert all(copied.values())
    printed = capsys.readouterr().out
    assert "started afresh: feature_net.head.bias, feature_net.head.weight" in printed
    other = copart_hub.create_model("ssn_deep", hidden_dim=8, feature_dim=6, norm="none")
    other.save_pretrained(tmp_path / "other")
    cfg.init_from = str(tmp_path / "other")
    with pytest.raises(ValueError, match="shares no weight"):
        Trainer(cfg)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: reset it around a test that changes it."""
    from accelerate.state import AcceleratorState, GradientState

    def reset() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    reset()
    yield
    reset()


def test_mixed_precision_auto_follows_accelerate_and_an_explicit_value_wins(monkeypatch):
    from copart_hub.training import trainer

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # accelerate launch / config
    assert trainer.resolve_mixed_precision("auto", cpu=False) is None  # accelerate reads it
    assert trainer.resolve_mixed_precision("bf16", cpu=False) == "bf16"
    assert trainer.resolve_mixed_precision("no", cpu=False) == "no"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer.resolve_mixed_precision("auto", cpu=False) == "no"  # CPU (or MPS)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert trainer.resolve_mixed_precision("auto", cpu=False) == "bf16"
    assert trainer.resolve_mixed_precision("auto", cpu=True) == "no"
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert trainer.resolve_mixed_precision("auto", cpu=False) == "no"


def test_cpu_is_passed_only_when_asked_or_needed_for_gloo(monkeypatch):
    from copart_hub.training import trainer

    for name in ("LOCAL_RANK", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not trainer.needs_cpu_flag(False)  # accelerate picks CUDA / MPS / CPU itself
    assert trainer.needs_cpu_flag(True)
    monkeypatch.setenv("LOCAL_RANK", "0")  # torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(trainer, "_ddp_device_available", lambda: False)
    assert trainer.needs_cpu_flag(False)  # gloo, not every process alone
    monkeypatch.setattr(trainer, "_ddp_device_available", lambda: True)
    assert not trainer.needs_cpu_flag(False)  # nccl & co.


@pytest.mark.usefixtures("bsds_root", "fresh_accelerate_state")
def test_trainer_leaves_device_and_precision_to_accelerate(tmp_path: Path, monkeypatch):
    """No ``cpu=`` forced; ``auto`` takes ``ACCELERATE_MIXED_PRECISION``, a value overrides it."""
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from copart_hub.training import trainer

    calls: list[dict] = []

    class Recording(trainer.Accelerator):
        def __init__(self, **kwargs):
            calls.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(trainer, "Accelerator", Recording)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    for name in ("ACCELERATE_USE_CPU", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    run = _trainer(tmp_path / "auto", "max_steps=1")
    assert calls[-1]["cpu"] is False and run.acc.mixed_precision == "bf16"
    assert run.acc.device == PartialState().default_device  # CUDA, MPS or CPU as available
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    run = _trainer(tmp_path / "explicit", "max_steps=1", "mixed_precision=no")
    assert run.acc.mixed_precision == "no"


@pytest.mark.usefixtures("bsds_root")
def test_old_checkpoints_are_rotated(tmp_path: Path):
    out = tmp_path / "run"
    _trainer(out, "max_steps=4", "checkpoint_every=1", "keep_checkpoints=3").train()
    assert [p.name for p in checkpoints(out)] == ["step_2", "step_3", "step_4"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_3", "step_4"]


@pytest.mark.usefixtures("bsds_root")
def test_trackers_get_the_metrics_and_metrics_jsonl_keeps_its_rows(tmp_path: Path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (log_with=auto: none)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    _trainer(out, "max_steps=2", "val_every=2", "log_with=tensorboard").train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert {"loss", "lr", "elapsed_s", "recon"} <= set(rows[0])
    (events,) = (out / "logs" / "ssn").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload()
    assert [e.step for e in scalars.Scalars("loss")] == [1, 2]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert [e.value for e in scalars.Scalars("loss")] == pytest.approx(losses, rel=1e-6)
    val = next(r["val"] for r in rows if "val" in r)
    assert scalars.Scalars("val/score")[0].value == pytest.approx(val["score"], rel=1e-6)


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (Path(__file__).parents[1] / "training/configs").glob("*.yaml"))
)
def test_every_bundled_config_is_accepted_by_its_task(name: str, tmp_path: Path):
    """Each bundled config's ``task_args`` pass its task's checks (an unknown key or a bad value
    would stop ``copart-hub train --config NAME`` only after the data is loaded); a data folder
    that a preparation step writes is replaced by an empty one."""
    from copart_hub.training.launch import resolve_config
    from copart_hub.training.tasks.base import get_task

    cfg = load_config(resolve_config(name), [])
    args = dict(cfg.task_args)
    if args.get("data_dir") and not Path(args["data_dir"]).is_dir():
        args["data_dir"] = str(tmp_path)
    get_task(cfg.task)(args, seed=0)
