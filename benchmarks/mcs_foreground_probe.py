"""What limits the Tai-Chi foreground: the MCS segmenter fitted *directly* to a foreground target.

A diagnostic, not a recipe: the segmenter of the `mcs_taichi` config (its background channel
against the sum of its part channels) is trained by cross-entropy on a per-pixel foreground
target of the training clips, then scored with `copart-hub eval parts`' foreground protocol on
the held-out clips 12-13. With ``--target masks`` (the MediaPipe person masks, which no
released model ever trains on) it is an upper bound of what this network learns from 12 clips;
with ``--target grabcut`` (or any unsupervised foreground method) it shows what distilling that
target gives. ``--paste P`` pastes the target's foreground onto BSDS500 crops with probability
P (copy-paste, as ``task_args.paste_backgrounds``). Prints one Markdown row per validation::

    python benchmarks/mcs_foreground_probe.py --target masks --paste 0.5 --steps 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from copart_hub.training.data import BackgroundCrops, video_foregrounds
from copart_hub.training.tasks.mcs import McsTask

from copart_hub import create_model
from copart_hub.data.videos import taichi_frames
from copart_hub.evaluation.parts import evaluate_foreground
from copart_hub.saliency import FOREGROUND_METHODS

SEGMENTER_KWARGS = {"scale_factor": 0.25, "block_expansion": 16, "max_features": 256}


def training_frames(target: str, size: int, every: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``every``-th training frame ``[N, 3, size, size]`` in [0, 1] and its foreground
    target ``[N, 1, size, size]`` in [0, 1]."""
    task = McsTask({"size": size}, seed=0)
    images, targets = [], []
    for clip, frames in zip(task.clips("train"), task.frames("train"), strict=True):
        pick = np.arange(0, len(frames), every)
        images.append(torch.from_numpy(frames[pick]).permute(0, 3, 1, 2).float() / 255)
        if target == "masks":
            fg = torch.from_numpy(clip.masks(pick)).float()[:, None]
            targets.append(F.interpolate(fg, size=(size, size), mode="area"))
        else:
            fg = video_foregrounds(frames, target)[pick]
            targets.append(torch.from_numpy(fg).float()[:, None] / 255)
    return torch.cat(images), torch.cat(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="masks", choices=("masks", *FOREGROUND_METHODS))
    parser.add_argument("--paste", type=float, default=0.0, help="copy-paste probability")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--evals", type=int, default=4, help="validations, evenly spaced")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--every", type=int, default=4, help="every n-th training frame")
    parser.add_argument("--scale-factor", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, targets = training_frames(args.target, args.size, args.every)
    backgrounds = BackgroundCrops("bsds500", args.size) if args.paste > 0 else None
    test = taichi_frames("val")
    kwargs = {**SEGMENTER_KWARGS, "scale_factor": args.scale_factor}
    size = (args.size, args.size)
    model = create_model("mcs_segmenter_k10", num_parts=10, input_size=size, **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    print(f"{len(images)} training frames, target {args.target}, paste {args.paste}")
    print("| step | held-out fg IoU | precision | recall | train s |\n|---:|---:|---:|---:|---:|")
    train_s, every_eval = 0.0, max(1, args.steps // args.evals)
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        pick = rng.integers(len(images), size=8)
        x, y = images[pick].clone(), targets[pick].clone()
        for j in range(len(x)):
            if rng.random() < 0.5:
                x[j], y[j] = x[j].flip(-1), y[j].flip(-1)
            if backgrounds is not None and rng.random() < args.paste:
                x[j] = y[j] * x[j] + (1 - y[j]) * backgrounds(rng)[0]
        log_p = model(x).log_softmax(1)
        y = F.interpolate(y, size=log_p.shape[-2:], mode="area")
        log_fg = torch.logsumexp(log_p[:, 1:], 1, keepdim=True)
        loss = -(y * log_fg + (1 - y) * log_p[:, :1]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train_s += time.perf_counter() - start
        if step % every_eval == 0 or step == args.steps:
            model.eval()
            s = evaluate_foreground(model, test)
            model.train()
            print(
                f"| {step} | {s['fg_iou']:.3f} | {s['fg_precision']:.3f} | "
                f"{s['fg_recall']:.3f} | {train_s:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
