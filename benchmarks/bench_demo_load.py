"""Load test of the Gradio demo: N concurrent ~25 MP requests, the server's memory and survival.

Starts the demo (``python -m copart_hub.spaces_demo.app``) in a subprocess on a free 127.0.0.1
port, writes one generated ~24.6 MP JPEG (6000x4100, smooth noise) to a temporary folder,
submits N requests at once through ``gradio_client`` (half ``/superpixels``, half ``/segment``),
samples the resident memory of the server's process tree every 0.5 s and prints a markdown
table. The server is always terminated at the end. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 6000, 4100  # 24.6 MP, under the demo's 25 MP limit
SAMPLE_S = 0.5
POLL_S = 0.2  # how often the answers are looked for
START_TIMEOUT_S = 300  # a busy 2-core machine loads torch, gradio and the zoo in about a minute
ENDPOINTS = ("/superpixels", "/segment")


def make_image(path: Path, width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> None:
    """Smooth colour noise: three octaves of random values drawn small, resized (bicubic) and
    summed (a few MB as a JPEG, like a photo of that size)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    total = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((6, 0.55), (60, 0.3), (600, 0.15)):
        small = rng.uniform(0, 255, (cells * height // width + 1, cells, 3)).astype(np.uint8)
        layer = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        total += weight * np.asarray(layer, np.float32)
    Image.fromarray(np.clip(total, 0, 255).astype(np.uint8)).save(path, quality=90)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_psutil(pid: int) -> int:
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with suppress(psutil.Error):  # it has just exited
            total += proc.memory_info().rss
    return total


def _rss_proc(pid: int) -> int:
    """The same from /proc: ``pid`` and its descendants (through each ``children`` file)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return total


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and all its descendants."""
    try:
        return _rss_psutil(pid)
    except ImportError:
        return _rss_proc(pid)


class MemorySampler(threading.Thread):
    """Samples :func:`tree_rss` every ``SAMPLE_S``; kills the server above ``limit`` bytes."""

    def __init__(self, proc: subprocess.Popen[bytes], limit: float) -> None:
        super().__init__(daemon=True)
        self.proc, self.limit = proc, limit
        self.peak = 0
        self.killed = False
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.proc.poll() is None:
            rss = tree_rss(self.proc.pid)
            self.peak = max(self.peak, rss)
            if rss > self.limit:
                self.killed = True
                self.proc.kill()
                return
            self.stop.wait(SAMPLE_S)


def wait_for_server(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if answers(url):
            return True
        time.sleep(1)
    return False


def answers(url: str) -> bool:
    """Whether the app serves its ``/config``."""
    try:
        with urllib.request.urlopen(f"{url}/config", timeout=10) as response:
            return "components" in json.load(response)
    except (OSError, ValueError):
        return False


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:120]


def fire(url: str, image: Path, args: argparse.Namespace, downloads: Path) -> dict[str, Any]:
    """Submit ``args.requests`` jobs at once; wait for them until ``args.timeout`` s in all."""
    from gradio_client import Client, handle_file
    from PIL import Image

    client = Client(url, verbose=False, download_files=str(downloads))
    upload = handle_file(str(image))
    start = time.monotonic()
    jobs = []
    for i in range(args.requests):
        endpoint = ENDPOINTS[i % 2]
        if endpoint == "/superpixels":
            job = client.submit(upload, args.superpixels, api_name=endpoint)
        else:
            job = client.submit(upload, args.model, False, False, api_name=endpoint)
        jobs.append((endpoint, job, time.monotonic()))
    deadline = start + args.timeout
    finished: dict[int, float] = {}  # job -> when its answer (or error) came
    while len(finished) < len(jobs) and time.monotonic() < deadline:
        for i, (_, job, _) in enumerate(jobs):
            if i not in finished and job.done():
                finished[i] = time.monotonic()
        time.sleep(POLL_S)
    ok, errors, seconds = Counter(), Counter(), {e: [] for e in ENDPOINTS}
    for i, (endpoint, job, submitted) in enumerate(jobs):
        if i not in finished:
            errors[f"{endpoint}: no answer within {args.timeout:.0f} s"] += 1
            job.cancel()
            continue
        try:
            result = job.result(timeout=0)
            size = Image.open(result[0]).size  # SSN or part overlay: the upload's size
            if size != (WIDTH, HEIGHT):
                raise ValueError(f"overlay is {size[0]}x{size[1]}")
            ok[endpoint] += 1
            seconds[endpoint].append(finished[i] - submitted)
        except Exception as err:  # an AppError from the page, a dropped connection, ...
            errors[f"{endpoint}: {_short(err)}"] += 1
    last = max(finished.values()) if len(finished) == len(jobs) else time.monotonic()
    wall = last - start  # from the first submission to the last answer (or the timeout)
    client.close()
    return {"ok": ok, "errors": errors, "wall": wall, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20, help="concurrent requests (default 20)")
    p.add_argument("--timeout", type=float, default=1800.0, help="for all the answers, seconds")
    p.add_argument("--model", default="scops_horses", help="part model of /segment")
    p.add_argument("--superpixels", type=int, default=300, help="count asked of /superpixels")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    p.add_argument("--limit-gb", type=float, default=12.0, help="kill the server above this RSS")
    args = p.parse_args(argv)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench_demo_load_") as tmp_name:
        tmp = Path(tmp_name)
        image = tmp / "photo.jpg"
        make_image(image)
        jpeg_mb = image.stat().st_size / 1e6
        env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio")}
        env.update(OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
        env.pop("GRADIO_SERVER_NAME", None)
        env.pop("GRADIO_SERVER_PORT", None)
        log = tmp / "server.log"
        command = [sys.executable, "-m", "copart_hub.spaces_demo.app", "--host", "127.0.0.1"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*command, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        sampler = MemorySampler(proc, args.limit_gb * 2**30)
        try:
            if not wait_for_server(url, proc, START_TIMEOUT_S):
                print(f"the demo did not start on {url}:\n{log.read_text()[-3000:]}")
                return 1
            idle = tree_rss(proc.pid)
            sampler.start()
            result = fire(url, image, args, tmp / "downloads")
            alive = proc.poll() is None and answers(url)
        finally:
            sampler.stop.set()
            stop_server(proc)
            if sampler.is_alive():
                sampler.join(timeout=5)
        server_log = log.read_text(errors="replace")

    ok, errors = result["ok"], result["errors"]
    failed = "; ".join(f"{n} x {msg}" for msg, n in errors.items()) or "0"
    if sampler.killed:
        failed += f" (server killed by the benchmark above {args.limit_gb:g} GiB)"
    mb = 2**20
    print(
        f"{args.requests} concurrent requests of one {WIDTH}x{HEIGHT} JPEG "
        f"({WIDTH * HEIGHT / 1e6:.1f} MP, {jpeg_mb:.1f} MB): half /superpixels "
        f"({args.superpixels}), half /segment ({args.model}); server OMP_NUM_THREADS={args.threads}"
    )
    print()
    print("| requests | succeeded | failed | server alive after | peak server RSS (MiB) | wall s |")
    print("|---:|---:|---|---|---:|---:|")
    print(
        f"| {args.requests} | {sum(ok.values())} | {failed} | {'yes' if alive else 'NO'} | "
        f"{sampler.peak / mb:.0f} | {result['wall']:.0f} |"
    )
    print()
    latency = ", ".join(
        f"{e}: {ok[e]} ok in {min(s):.0f} / {statistics.median(s):.0f} / {max(s):.0f} s"
        if s
        else f"{e}: {ok[e]} ok"
        for e, s in result["seconds"].items()
    )
    print(f"idle server RSS after start-up: {idle / mb:.0f} MiB")
    print(f"answers per endpoint (min / median / max from submission): {latency}")
    if not alive or errors:
        print("\nlast lines of the server log:\n" + "\n".join(server_log.splitlines()[-20:]))
    return 0 if alive and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
