"""Training throughput of one optimiser step per config: seconds per step, samples/s, peak RSS.

Each case runs in its own subprocess (so peak memory is that case's alone) on synthetic batches
of the config's shapes (compute does not depend on pixel values), with the config's task,
model, losses, gradient clipping and optimisers: exactly what ``copart-hub train`` runs per step,
minus data loading.

    python benchmarks/bench_train_step.py                           # every SCOPS/MCS config
    python benchmarks/bench_train_step.py --cases scops_horses \
        "scops_horses task_args.model=scops_fpn_resnet18 task_args.loss_size=128"
    python benchmarks/bench_train_step.py --threads 2 --batch 8 --repeats 5
    python benchmarks/bench_train_step.py --cases mcs_taichi --compile segmenter.predictor generator
    python benchmarks/bench_train_step.py --cases mcs_taichi "mcs_taichi channels_last=true"

A case is a config name followed by optional ``key=value`` overrides, as for ``copart-hub train``.
``--inference MODEL...`` instead times the forward pass of built or released models (a zoo
name, a folder, or ``create:<registered name>:<size>``): images/s at batch 8 at their input size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_CASES = ["scops_faces300w", "scops_horses", "mcs_taichi"]


def _synthetic_batch(task, cfg, batch: int):
    import torch

    size = int(task.args["size"])
    g = torch.Generator().manual_seed(0)
    if cfg.task == "scops":
        fg = torch.zeros(batch, 1, size, size)
        fg[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
        return {"image": torch.rand(batch, 3, size, size, generator=g), "foreground": fg}
    if cfg.task == "mcs":
        return {
            "source": torch.rand(batch, 3, size, size, generator=g),
            "target": torch.rand(batch, 3, size, size, generator=g),
        }
    raise ValueError(f"no synthetic batch for task {cfg.task!r}")


def compile_submodules(model, names: list[str]) -> None:
    """Replace each named submodule of ``model`` (dotted, e.g. ``generator``) by its
    ``torch.compile`` (inductor) version, in place."""
    import torch

    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, torch.compile(model.get_submodule(name)))


def run_case(
    case: str, batch: int, repeats: int, threads: int, compiled: list[str] | None = None
) -> dict:
    """One case in this process: median step time after one warm-up step (two with
    ``compiled`` submodules: compilation happens in the first), and peak RSS."""
    import torch
    from copart_hub.training.config import load_config
    from copart_hub.training.launch import resolve_config
    from copart_hub.training.tasks import get_task

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    name, *overrides = case.split()
    cfg = load_config(resolve_config(name), [*overrides, f"batch_size={batch}"])

    task = get_task(cfg.task)(cfg.task_args, cfg.seed)
    module = task.build_model()
    module.train()
    if compiled:
        compile_submodules(task.release_model(module), compiled)
    warmup = 2 if compiled else 1
    optimizers = [opt for opt, _ in task.build_optimizers(module, cfg.max_steps)]
    data = _synthetic_batch(task, cfg, batch)
    if cfg.channels_last:  # as the trainer does: NHWC weights and image batches
        from copart_hub.training.trainer import channels_last_batch

        module.to(memory_format=torch.channels_last)
        data = channels_last_batch(data)
    times = []
    for step in range(repeats + warmup):
        t0 = time.perf_counter()
        loss, _ = task.training_step(module, data, step)
        loss.backward()
        for opt in optimizers:
            if cfg.clip_grad_norm:
                params = [p for g in opt.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if step >= warmup:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    with open("/proc/self/status") as f:
        hwm = next((int(line.split()[1]) for line in f if line.startswith("VmHWM")), 0)
    model = task.release_model(module)
    return {
        "case": case,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "s_per_step": statistics.median(times),
        "samples_per_s": batch / statistics.median(times),
        "peak_rss_mib": hwm / 1024,
    }


def run_inference(spec: str, batch: int, repeats: int, threads: int) -> dict:
    """Forward passes of one model (no autograd) at its input size: median images/s."""
    import torch

    import copart_hub

    torch.set_num_threads(threads)
    if spec.startswith("create:"):
        _, name, size = spec.split(":")
        model = copart_hub.create_model(name, input_size=(int(size), int(size)))
    else:
        model = copart_hub.from_pretrained(spec)
    model.eval()
    x = torch.randn(batch, 3, *model.input_size)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            model(x)
            if i:
                times.append(time.perf_counter() - t0)
    return {"case": spec, "images_per_s": batch / statistics.median(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--inference", nargs="+", metavar="MODEL")
    p.add_argument(
        "--compile",
        nargs="+",
        metavar="SUBMODULE",
        help="torch.compile these submodules of the model, e.g. segmenter.predictor generator",
    )
    p.add_argument("--_one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._one:
        r = run_case(args._one, args.batch, args.repeats, args.threads, args.compile)
        print(json.dumps(r))
        return
    if args.inference:
        print(f"inference, batch {args.batch}, {args.threads} threads\n")
        print("| model | images / s |\n|---|---:|")
        for spec in args.inference:
            r = run_inference(spec, args.batch, args.repeats, args.threads)
            print(f"| `{spec}` | {r['images_per_s']:.1f} |", flush=True)
        return
    compiled = f", compiled: {' '.join(args.compile)}" if args.compile else ""
    print(f"batch {args.batch}, {args.threads} threads, median of {args.repeats} steps{compiled}\n")
    print("| case | params (M) | s / step | samples / s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for case in args.cases:
        cmd = [sys.executable, __file__, "--_one", case, "--batch", str(args.batch)]
        cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
        cmd += ["--compile", *args.compile] if args.compile else []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            print(f"| `{case}` | failed: {done.stderr.strip().splitlines()[-1]} | | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"| `{case}` | {r['params_m']:.1f} | {r['s_per_step']:.2f} | "
            f"{r['samples_per_s']:.1f} | {r['peak_rss_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
