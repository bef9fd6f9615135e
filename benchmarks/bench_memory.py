"""Peak resident memory of the ``copart-hub`` image commands against the image size.

Each (command, megapixels) case runs ``copart_hub.cli.main`` in a fresh subprocess on a
generated JPEG and reports the process's peak resident set (``VmHWM`` of /proc/self/status,
Linux only). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout, suppress
from pathlib import Path

COMMANDS = ("segment", "superpixels", "saliency", "swap")
PART_MODEL, SWAP_MODEL = "scops_horses", "mcs_taichi"
POLL_S = 0.1


def _status_mb(field: str, pid: int | str = "self") -> float:
    """A ``kB`` field of ``/proc/PID/status``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"/proc/{pid}/status has no {field}")


def make_image(path: Path, megapixels: float) -> tuple[int, int]:
    """A 4:3 synthetic photo (sky gradient, ground, a textured ellipse) of about ``megapixels``
    MP, drawn at 400x300 and resized (bicubic) so that generating it stays cheap."""
    import numpy as np
    from PIL import Image

    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    height = round(width * 3 / 4)
    ys, xs = np.mgrid[0:300, 0:400] / np.array([300.0, 400.0])[:, None, None]
    rgb = np.stack([90 + 80 * ys, 140 + 60 * ys, 230 - 40 * ys], -1)
    rgb[ys > 0.7] = (90, 150, 70)
    inside = ((xs - 0.5) / 0.22) ** 2 + ((ys - 0.55) / 0.25) ** 2 < 1
    stripes = 40 * np.sin(60 * xs + 20 * ys)[..., None]
    rgb = np.where(inside[..., None], np.array([150.0, 80, 40]) + stripes, rgb)
    small = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    small.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)
    return width, height


def command_line(command: str, image: Path, out: Path) -> list[str]:
    """The ``copart-hub`` arguments of one case."""
    if command == "segment":
        return ["segment", str(image), "--model", PART_MODEL, "--out", str(out)]
    if command == "swap":
        return [
            "swap",
            "--source",
            str(image),
            "--target",
            str(image),
            "--parts",
            "1,3",
            "--model",
            SWAP_MODEL,
            "--out",
            str(out / "swap.png"),
        ]
    return [command, str(image), "--out", str(out)]


def child(command: str, image: Path, out: Path, threads: int) -> None:
    """Run one case in this (fresh) process and print its peak memory as JSON."""
    import torch

    from copart_hub.cli import main

    torch.set_num_threads(threads)
    start_mb = _status_mb("VmRSS")
    start = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        code = main(command_line(command, image, out))
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {"rc": code, "peak_mb": _status_mb("VmHWM"), "start_mb": start_mb, "seconds": seconds}
        )
    )


def run_case(
    command: str, image: Path, out: Path, threads: int, limit_mb: float, timeout_s: float
) -> dict[str, object]:
    """:func:`child` in a subprocess; killed (and reported so) past ``limit_mb`` or the timeout."""
    cmd = [sys.executable, __file__, "--child", command, str(image), str(out)]
    proc = subprocess.Popen(
        [*cmd, "--threads", str(threads)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    start, seen_mb = time.monotonic(), 0.0
    while proc.poll() is None:
        with suppress(OSError):  # the process has just exited
            seen_mb = max(seen_mb, _status_mb("VmRSS", proc.pid))
        if seen_mb > limit_mb or time.monotonic() - start > timeout_s:
            proc.kill()
            proc.wait()
            why = f"> {limit_mb:.0f} MiB" if seen_mb > limit_mb else f"> {timeout_s:.0f} s"
            return {"error": f"killed ({why})"}
        time.sleep(POLL_S)
    stdout, stderr = proc.communicate()
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"crashed: {' '.join(stderr.strip().splitlines()[-1:])[:80]}"}
    result = json.loads(lines[-1])
    if result["rc"] != 0:
        return {"error": f"exit {result['rc']}: {' '.join(stderr.split())[:80]}"}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mp", type=float, nargs="+", default=[1, 4, 12, 25], help="megapixels")
    p.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    p.add_argument("--threads", type=int, default=1, help="torch threads per case (default 1)")
    p.add_argument("--limit-gb", type=float, default=12.0, help="kill a case above this RSS")
    p.add_argument("--timeout", type=float, default=1800.0, help="kill a case after SECONDS")
    p.add_argument("--target-gb", type=float, default=1.5, help="peak-RSS target up to 25 MP")
    p.add_argument("--child", nargs=3, metavar=("COMMAND", "IMAGE", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.threads)
        return 0

    print(
        f"peak RSS (VmHWM, MiB) of one `copart-hub COMMAND` run per fresh process; "
        f"{args.threads} torch thread(s); models {PART_MODEL}, {SWAP_MODEL}"
    )
    print()
    print("| command | MP | size | peak MiB | start MiB | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    misses = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        for mp in args.mp:
            image = Path(tmp) / f"photo_{mp:g}mp.jpg"
            width, height = make_image(image, mp)
            for command in args.commands:
                out = Path(tmp) / f"out_{command}_{mp:g}"
                res = run_case(
                    command, image, out, args.threads, args.limit_gb * 1024, args.timeout
                )
                if "error" in res:
                    print(f"| {command} | {mp:g} | {width}x{height} | {res['error']} | | |")
                    misses.append(f"{command} at {mp:g} MP: {res['error']}")
                    continue
                print(
                    f"| {command} | {mp:g} | {width}x{height} | {res['peak_mb']:.0f} | "
                    f"{res['start_mb']:.0f} | {res['seconds']:.1f} |",
                    flush=True,
                )
                if mp <= 25 and res["peak_mb"] > args.target_gb * 1024:
                    misses.append(f"{command} at {mp:g} MP: {res['peak_mb']:.0f} MiB")
    print()
    target = f"target: peak < {args.target_gb:g} GB up to 25 MP"
    print(f"{target}: " + ("met" if not misses else "NOT met (" + "; ".join(misses) + ")"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
