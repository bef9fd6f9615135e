"""One-shot release training on a lent GPU, within a few minutes of device time.

``python -m copart_hub.training.gpu_burst --out $OUT`` trains the release recipes side by side
on one GPU (bf16, large batches, data workers from the machine's cores) for ``--minutes`` of
wall time (default 8), then releases each run into ``$OUT/zoo/<name>`` (float16 weights,
card, samples, validation curve, ``metrics.jsonl``): every file at most ``--max-file-mib``
(16; larger ones are cut into parts, rebuilt here with ``--join FOLDER``), so that the
device tool brings them back. Copy a folder into the repository's ``zoo/``
once its held-out scores and contact sheet beat the current release. On a CPU it runs the
same (slowly): ``--minutes 1 --jobs scops_faces300w`` checks the path end to end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .release import release

#: job -> (bundled config, overrides): the recipes of the CPU releases at GPU batch sizes
JOBS: dict[str, tuple[str, list[str]]] = {
    "scops_faces300w": (
        "scops_faces300w",
        [
            "task_args.model=scops_fpn_regnetx_002",
            "task_args.loss_size=64",
            "task_args.reference=histogram+position",
            # from scratch: the official weights make parts, the config's raised ones (for
            # annealing a release) do not (scops_ablations.md, "Faces: K from scratch")
            "task_args.weights.concentration=10",
            "task_args.weights.equivariance=1000",
            "task_args.weights.landmark_equivariance=100",
            "batch_size=32",
        ],
    ),
    "scops_horses": ("scops_horses", ["batch_size=32"]),  # the config holds the recipe
    "mcs_taichi": ("mcs_taichi", ["batch_size=32"]),  # the config holds the recipe
    "mcs_faces": ("mcs_faces", ["batch_size=32"]),
}
SCORE_KEYS = {
    "scops_faces300w": "landmark_error_iod_pct",
    "mcs_taichi": "fg_iou",
    "mcs_faces": "landmark_error_iod_pct",
}


def command(job: str, run_dir: Path, minutes: float, workers: int, extra: list[str]) -> list[str]:
    """The ``copart-hub train`` command line of ``job``."""
    config, overrides = JOBS[job]
    return [
        sys.executable,
        "-m",
        "copart_hub.training.launch",
        "--config",
        config,
        *overrides,
        f"max_minutes={minutes}",
        "max_steps=1000000",
        "mixed_precision=bf16",
        f"num_workers={workers}",
        "val_every=500",
        "sample_every=500",
        "checkpoint_every=1000000",
        f"output_dir={run_dir}",
        *extra,
    ]


PART = ".part"


def split_large_files(folder: Path, max_bytes: int) -> list[Path]:
    """Cut every file of ``folder`` over ``max_bytes`` into ``<name>.part000, .part001, ...``
    of at most ``max_bytes`` each (the original is removed); returns the files cut."""
    cut = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.stat().st_size <= max_bytes:
            continue
        with open(path, "rb") as f:
            for i, chunk in enumerate(iter(lambda: f.read(max_bytes), b"")):
                (folder / f"{path.name}{PART}{i:03d}").write_bytes(chunk)
        path.unlink()
        cut.append(path)
    return cut


def join_parts(folder: Path) -> list[Path]:
    """Undo :func:`split_large_files` in ``folder``; returns the files rebuilt."""
    names = sorted({p.name.rsplit(PART, 1)[0] for p in folder.glob(f"*{PART}[0-9][0-9][0-9]")})
    for name in names:
        parts = sorted(folder.glob(f"{name}{PART}[0-9][0-9][0-9]"))
        with open(folder / name, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        for part in parts:
            part.unlink()
    return [folder / n for n in names]


def collect(job: str, run_dir: Path, zoo: Path, max_bytes: int) -> Path:
    """Release the run's ``best/`` (else ``final/``) into ``zoo/job``; files over
    ``max_bytes`` are cut into parts (``--join`` rebuilds them)."""
    folder = run_dir / "best" if (run_dir / "best").is_dir() else run_dir / "final"
    target = release(
        folder,
        job,
        zoo,
        metrics=run_dir / "metrics.jsonl",
        key=SCORE_KEYS.get(job, "score"),
        overwrite=True,
    )
    shutil.copy2(run_dir / "metrics.jsonl", target / "metrics.jsonl")
    for path in split_large_files(target, max_bytes):
        print(f"{path} cut into parts of {max_bytes} bytes: rebuild with --join {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m copart_hub.training.gpu_burst", description=__doc__)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "outputs/gpu_burst")))
    p.add_argument("--minutes", type=float, default=8.0, help="training wall time of each job")
    p.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {', '.join(JOBS)}")
    p.add_argument(
        "--runs",
        type=Path,
        default=Path("/tmp/copart_gpu_burst"),
        help="run folders (checkpoints stay here, not in --out)",
    )
    p.add_argument("--max-file-mib", type=float, default=16.0)
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides for every job (e.g. batch_size=64)",
    )
    p.add_argument("--join", type=Path, metavar="FOLDER", help="only rebuild cut files, then exit")
    args = p.parse_args(argv)
    if args.join is not None:
        print("rebuilt: " + ", ".join(map(str, join_parts(args.join))) or "nothing")
        return 0
    jobs = [j for j in args.jobs.split(",") if j]
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown or not jobs:
        print(
            f"gpu_burst: error: unknown jobs {unknown}; known: {', '.join(JOBS)}", file=sys.stderr
        )
        return 2
    workers = max(1, (os.cpu_count() or 2) // len(jobs) - 1)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    procs = {}
    for job in jobs:
        run_dir = args.runs / job
        shutil.rmtree(run_dir, ignore_errors=True)
        log = open(args.out / f"{job}.log", "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        cmd = command(job, run_dir, args.minutes, workers, args.set)
        procs[job] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, run_dir)
    failed = []
    for job, (proc, log, run_dir) in procs.items():
        code = proc.wait()
        log.close()
        if code != 0:
            failed.append(f"{job} (exit {code}, see {args.out / (job + '.log')})")
            continue
        try:
            print(
                f"{job}: {collect(job, run_dir, args.out / 'zoo', int(args.max_file_mib * 2**20))}"
            )
        except (OSError, ValueError) as err:
            failed.append(f"{job} ({err})")
    print(
        f"gpu_burst: {time.perf_counter() - started:.0f} s; failed: {', '.join(failed) or 'none'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
