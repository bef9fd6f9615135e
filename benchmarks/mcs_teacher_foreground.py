"""How good is a foreground target of MCS? IoU with the MediaPipe person masks of the training
Tai-Chi clips (every ``--every``-th frame, at the task's 128 px), per clip, of the cached
``video_foreground`` (GrabCut on boundary saliency) and of a teacher model's foreground refined
by GrabCut (``task_args.foreground_teacher``). The maps are the ones training reads (the same
``datasets`` caches), so a later run with either reuses them.

    python benchmarks/mcs_teacher_foreground.py --teacher mcs_taichi
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from copart_hub.training.data import TeacherForeground, video_foregrounds
from copart_hub.training.tasks.mcs import McsTask

from copart_hub.metrics.parts import foreground_iou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="mcs_taichi", help="part model: name or folder")
    parser.add_argument("--every", type=int, default=5, help="score every n-th frame")
    args = parser.parse_args()
    task = McsTask({}, seed=0)
    teacher = TeacherForeground(args.teacher)
    methods = {"grabcut": "grabcut", f"teacher {teacher.fingerprint}": teacher}
    start, rows = time.time(), []
    for clip, frames in zip(task.clips("train"), task.frames("train"), strict=True):
        pick = np.arange(0, len(frames), args.every)
        masks = torch.from_numpy(clip.masks(pick)).float()[:, None]
        masks = F.interpolate(masks, size=frames[0].shape[:2], mode="area")[:, 0] > 0.5
        masks = masks.numpy()
        row = []
        for method in methods.values():
            row.append(foreground_iou(video_foregrounds(frames, method)[pick] > 127, masks))
        rows.append(row)
        print(clip.name, " ".join(f"{v:.3f}" for v in row), f"{time.time() - start:.0f} s")
    print("| clip | " + " | ".join(methods) + " |\n|---|" + "---:|" * len(methods))
    for clip, row in zip(task.clips("train"), rows, strict=True):
        print(f"| {clip.name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    print("| mean | " + " | ".join(f"{v:.3f}" for v in np.mean(rows, 0)) + " |")


if __name__ == "__main__":
    main()
