"""Where do a motion model's swaps go wrong: its part affines, or its parts? Landing of swaps
between held-out images (the protocol of ``copart-hub eval parts``: 16 pairs, every target
landmark or keypoint carried into the source) under four motions: the model's learned part
affines, the part centres alone (identity affines: translation per part), one linear map fitted
on the part centres (as for SCOPS models, :func:`~copart_hub.part_swap.centre_alignment`), and
no motion (the crops mapped onto each other).

    python benchmarks/mcs_swap_landing_probe.py --model mcs_faces --dataset faces300w
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from copart_hub import from_pretrained
from copart_hub.data.collections import five_landmarks
from copart_hub.evaluation.parts import DATASETS, swap_pairs
from copart_hub.evaluation.swaps import transfer_error
from copart_hub.models.mcs import MCSSegmentation
from copart_hub.part_swap import PartSwapper, centre_alignment


class IdentityAffines:
    """An MCS segmenter whose part affines are replaced by the identity."""

    def __init__(self, parts) -> None:
        self.parts, self.num_parts = parts, parts.num_parts

    def segment(self, images: torch.Tensor) -> MCSSegmentation:
        seg = self.parts.segment(images)
        eye = torch.eye(2, dtype=seg.affine.dtype).expand_as(seg.affine)
        return MCSSegmentation(seg.masks, seg.shift, eye)


class ProbeSwapper(PartSwapper):
    """``motion``: ``learned``, ``centres`` (translation per part) or ``fitted`` (one linear
    map on the centres)."""

    def __init__(self, model, device, render, motion: str = "learned") -> None:
        super().__init__(model, device=device, render=render)
        self.motion = motion
        if motion != "learned":
            self.parts = IdentityAffines(self.parts)

    def _motion_source(self, seg_source, seg_target):
        if self.motion == "fitted":
            return centre_alignment(seg_source, seg_target)
        return seg_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mcs_faces", help="an MCS model: name or folder")
    parser.add_argument("--dataset", default="faces300w", choices=("faces300w", "taichi"))
    args = parser.parse_args()
    model = from_pretrained(args.model).eval()
    test = DATASETS[args.dataset]("val")
    index = swap_pairs(len(test.images))
    pairs = [(test.load_image(s), test.load_image(t)) for s, t in index]
    if test.landmarks is not None:
        points = [(test.landmarks[s], test.landmarks[t]) for s, t in index]
        eyes = five_landmarks(test.landmarks[[s for s, _ in index]])[:, :2]
        scale, unit = np.linalg.norm(eyes[:, 0] - eyes[:, 1], axis=1) / 100, "% IOD"
    else:
        points = [(test.keypoints[s], test.keypoints[t]) for s, t in index]
        scale, unit = None, "px"
    print(f"| motion | landing ({unit}) |\n|---|---:|")
    device = next(model.parameters()).device
    for motion in ("learned", "centres", "fitted"):
        swapper = ProbeSwapper(model, device, "pixels", motion)
        print(f"| {motion} | {transfer_error(model, pairs, points, scale, swapper=swapper):.1f} |")
    print(f"| no motion | {transfer_error(model, pairs, points, scale, motion=False):.1f} |")


if __name__ == "__main__":
    main()
