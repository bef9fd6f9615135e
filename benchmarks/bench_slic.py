"""Speed and memory of differentiable SLIC (SSN) against skimage SLIC on one BSDS-sized image.

Run ``python benchmarks/bench_slic.py --help``; see ``benchmarks/README.md`` for the cases,
the targets and how memory is measured.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from copart_hub.ops.connectivity import enforce_connectivity
from copart_hub.ops.slic import differentiable_slic, grid_shape, position_scale, xylab_features

HEIGHT, WIDTH = 321, 481
LEARNED_DIM = 15  # SSN_deep appends 15 learned channels to the 5 XYLab ones
FWD_RATIO_TARGET = 0.5  # forward <= 0.5x skimage time
FWD_BWD_TARGET_S, FWD_BWD_TARGET_K = 0.6, 400  # forward+backward < 0.6 s at 400 superpixels
SKIMAGE = "skimage SLIC (+ connectivity)"

Case = Callable[[], object]


def load_benchmark_image() -> tuple[np.ndarray, str]:
    """A real 481x321 BSDS500 val image when available, else skimage's astronaut resized."""
    try:
        from copart_hub.data.bsds500 import bsds500_root, list_ids, load_image

        root = bsds500_root()
        for image_id in list_ids(root, "val"):
            image = load_image(root, "val", image_id)
            if image.shape[:2] == (HEIGHT, WIDTH):
                return image, f"BSDS500 val/{image_id}"
    except FileNotFoundError:
        pass
    from skimage.data import astronaut
    from skimage.transform import resize

    image = resize(astronaut(), (HEIGHT, WIDTH), anti_aliasing=True)
    return (image * 255).round().astype(np.uint8), "skimage.data.astronaut resized"


def _ours(image: np.ndarray, n: int, n_iter: int, dim: int, backward: bool, conn: bool) -> Case:
    """XYLab (+ fixed stand-in learned channels) -> differentiable SLIC -> labels or backward."""
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    h, w = image.shape[:2]
    pos = position_scale(h, w, n)
    gen = torch.Generator().manual_seed(0)
    extra = torch.rand(1, dim - 5, h, w, generator=gen)

    def features() -> torch.Tensor:
        xylab = xylab_features(rgb, pos)
        return torch.cat([xylab, extra], 1) if dim > 5 else xylab

    def forward() -> object:
        with torch.no_grad():
            assoc, _ = differentiable_slic(features(), n, n_iter)
            labels = assoc.hard_labels()
        if conn:
            return enforce_connectivity(labels[0].numpy(), assoc.num_spixels)
        return labels

    def forward_backward() -> object:
        feats = features().requires_grad_()
        assoc, _ = differentiable_slic(feats, n, n_iter)
        assoc.pool(feats).square().mean().backward()
        return feats.grad

    return forward_backward if backward else forward


def _skimage(image: np.ndarray, n: int) -> Case:
    from skimage.segmentation import slic

    return lambda: slic(image, n_segments=n, compactness=10, start_label=0)


def _optional_baselines(image: np.ndarray, n: int) -> dict[str, Case]:
    """OpenCV ximgproc SLIC and fast_slic, when they happen to be installed."""
    cases: dict[str, Case] = {}
    try:
        import cv2

        region = max(2, round((image.shape[0] * image.shape[1] / n) ** 0.5))
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)

        def opencv() -> object:
            sp = cv2.ximgproc.createSuperpixelSLIC(
                lab, algorithm=cv2.ximgproc.SLIC, region_size=region, ruler=10.0
            )
            sp.iterate(10)
            sp.enforceLabelConnectivity()
            return sp.getLabels()

        if hasattr(cv2, "ximgproc"):
            cases["opencv ximgproc SLIC"] = opencv
    except ImportError:
        pass
    try:
        from fast_slic import Slic

        contiguous = np.ascontiguousarray(image)
        cases["fast_slic"] = lambda: Slic(num_components=n, compactness=10).iterate(contiguous)
    except ImportError:
        pass
    return cases


def make_cases(image: np.ndarray, n: int, n_iter: int) -> dict[str, Case]:
    """Every benchmark case at ``n`` requested superpixels, keyed by its display name."""
    return {
        SKIMAGE: _skimage(image, n),
        **_optional_baselines(image, n),
        "ours fwd 5ch": _ours(image, n, n_iter, 5, backward=False, conn=False),
        "ours fwd 5ch + connectivity": _ours(image, n, n_iter, 5, backward=False, conn=True),
        "ours fwd+bwd 5ch": _ours(image, n, n_iter, 5, backward=True, conn=False),
        "ours fwd 20ch": _ours(image, n, n_iter, 5 + LEARNED_DIM, backward=False, conn=False),
        "ours fwd+bwd 20ch": _ours(image, n, n_iter, 5 + LEARNED_DIM, backward=True, conn=False),
    }


def median_seconds(case: Case, repeats: int) -> float:
    """Median wall time over ``repeats`` runs after one untimed warm-up run."""
    case()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        case()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _proc_status_mb(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {field}")


def _measure_peak(name: str, n: int, n_iter: int, image: np.ndarray) -> float:
    """Peak resident-memory growth (MiB) during one run of a case; run it in a fresh process.

    Linux only: freed heap memory is returned to the OS (``malloc_trim``) and the high-water
    mark ``VmHWM`` is reset (``/proc/self/clear_refs``) just before the run.
    """
    small = image[: HEIGHT // 4, : WIDTH // 4]
    make_cases(small, min(n, small.shape[0] * small.shape[1] // 4), n_iter)[name]()  # load code
    case = make_cases(image, n, n_iter)[name]
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _proc_status_mb("VmRSS")
    case()
    return _proc_status_mb("VmHWM") - before


def peak_memory_mb(name: str, n: int, n_iter: int, threads: int | None) -> float:
    """Run :func:`_measure_peak` in a subprocess so earlier cases cannot hide its peak."""
    cmd = [sys.executable, __file__, "--measure", name, str(n), "--iters", str(n_iter)]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return float("nan")  # not Linux, or /proc not writable
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[100, 400, 1000], metavar="K")
    p.add_argument("--iters", type=int, default=10, help="SLIC iterations (official test: 10)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--measure", nargs=2, metavar=("CASE", "K"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image, source = load_benchmark_image()
    if args.measure:
        name, n = args.measure[0], int(args.measure[1])
        print(json.dumps({"peak_mb": _measure_peak(name, n, args.iters, image)}))
        return 0

    threads = torch.get_num_threads()
    print(
        f"image: {source} ({image.shape[1]}x{image.shape[0]}); {args.iters} iterations; "
        f"torch {torch.__version__}, {threads} thread(s); median of {args.repeats} runs after "
        "1 warm-up; peak = resident-memory growth of one run in a fresh subprocess"
    )
    print()
    print("| case | K | superpixels | median ms | x skimage | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    results: dict[tuple[str, int], float] = {}
    for n in args.counts:
        rows, cols = grid_shape(image.shape[0], image.shape[1], n)
        for name, case in make_cases(image, n, args.iters).items():
            seconds = results[(name, n)] = median_seconds(case, args.repeats)
            baseline = results[(SKIMAGE, n)]  # the first case
            count = "-"
            if name == SKIMAGE:
                count = str(len(np.unique(case())))
            elif name.startswith("ours"):
                count = str(rows * cols)
            memory = "-"
            if not args.no_memory:
                memory = f"{peak_memory_mb(name, n, args.iters, args.threads):.1f}"
            print(
                f"| {name} | {n} | {count} | {seconds * 1e3:.1f} | {seconds / baseline:.2f} "
                f"| {memory} |",
                flush=True,
            )

    print()
    for n in args.counts:
        ratio = results[("ours fwd 5ch", n)] / results[(SKIMAGE, n)]
        ok = "met" if ratio <= FWD_RATIO_TARGET else "NOT met"
        print(f"target fwd 5ch <= {FWD_RATIO_TARGET}x skimage at K={n}: {ratio:.2f}x, {ok}")
    if FWD_BWD_TARGET_K in args.counts:
        for name in ("ours fwd+bwd 5ch", "ours fwd+bwd 20ch"):
            seconds = results[(name, FWD_BWD_TARGET_K)]
            ok = "met" if seconds < FWD_BWD_TARGET_S else "NOT met"
            print(
                f"target {name.removeprefix('ours ')} < {FWD_BWD_TARGET_S} s at "
                f"K={FWD_BWD_TARGET_K}: {seconds:.3f} s, {ok}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
