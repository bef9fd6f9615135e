"""Where do a motion model's swaps go wrong: its part affines, or its parts? Landing of swaps
between held-out images (the protocol of ``copart-hub eval parts``: 16 pairs, every target
landmark or keypoint carried into the source) under four motions: the model's learned part
affines, the part centres alone (identity affines: translation per part), one linear map fitted
on the part centres (as for SCOPS models, :func:`~copart_hub.part_swap.centre_alignment`), and
no motion (the crops mapped onto each other). On faces also by landmark group (iBUG 68: jaw,
brows, nose, eyes, mouth), and the bar a motion could reach: one similarity fitted on the
ground-truth landmarks of each pair (least squares, target onto source). A second table
separates motion from correspondence: each source against a copy of itself moved by a known
similarity (the still-pair setting the model trains on), where no part has to match another
image's. A third aligns the full images by the model's foreground mask (one shift by its mass
centres, one similarity from its second moments) against one shift by the true points'
centroids: what a silhouette can align. With ``--descriptors`` (a dense descriptor model,
``copart-hub train --config dve_faces300w``), two more rows: the part affines fitted on its
matches, and its matches alone; and the sharpness of the swaps with either motion.

    python benchmarks/mcs_swap_landing_probe.py --model mcs_faces --dataset faces300w
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image
from skimage.transform import SimilarityTransform

from copart_hub import from_pretrained
from copart_hub.correspondence import DescriptorMatcher
from copart_hub.data.collections import five_landmarks
from copart_hub.evaluation.parts import DATASETS, swap_pairs
from copart_hub.evaluation.swaps import landing_distances, swap_scores
from copart_hub.models.mcs import MCSSegmentation
from copart_hub.part_swap import RENDERS, PartSwapper, centre_alignment
from copart_hub.pipelines import PartSegmenter


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

    def _motion_source(self, seg_source, seg_target, source, target):
        if self.motion == "fitted":
            return centre_alignment(seg_source, seg_target)
        return super()._motion_source(seg_source, seg_target, source, target)


#: iBUG 68 landmark groups
FACE_GROUPS = {
    "jaw": slice(0, 17),
    "brows": slice(17, 27),
    "nose": slice(27, 36),
    "eyes": slice(36, 48),
    "mouth": slice(48, 68),
}


def similarity_bar(points, scale) -> np.ndarray:
    """``[pairs, N]`` landing of each target point mapped onto the source by the least-squares
    similarity between the pair's true points (scikit-image >= 0.26, as constraints.txt): the
    bar of a swap's landing."""
    rows = []
    for (p_source, p_target), s in zip(points, scale, strict=True):
        seen = ~(np.isnan(p_source).any(1) | np.isnan(p_target).any(1))
        fit = SimilarityTransform.from_estimate(p_target[seen], p_source[seen])
        row = np.full(len(p_source), np.nan)
        row[seen] = np.linalg.norm(fit(p_target[seen]) - p_source[seen], axis=1) / s
        rows.append(row)
    return np.stack(rows)


def moved_copy(
    image: Image.Image, points: np.ndarray, shift: float = 15.0, angle: float = 10.0
) -> tuple[Image.Image, np.ndarray]:
    """``image`` turned by ``angle`` degrees (anticlockwise on screen) about its centre, then
    moved ``shift`` pixels right, and its ``points`` ``[N, 2]`` (x, y) moved alike."""
    centre = np.array([image.width, image.height]) / 2
    moved = image.rotate(
        angle, Image.Resampling.BILINEAR, translate=(shift, 0), center=tuple(centre)
    )
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    turn = np.array([[c, s], [-s, c]])  # y points down
    return moved, (points - centre) @ turn.T + centre + np.array([shift, 0.0])


def landing_table(rows: list[tuple[str, np.ndarray]], groups, unit: str) -> None:
    """Print each row's mean landing (``[pairs, N]`` distances: the mean over pairs of each
    pair's mean, as :func:`~copart_hub.evaluation.swaps.transfer_error`), overall and per
    landmark group."""
    print(f"| motion | landing ({unit}) |" + "".join(f" {g} |" for g in groups))
    print("|---|---:|" + "---:|" * len(groups))
    for name, distances in rows:
        cells = [np.nanmean(np.nanmean(distances, 1))]
        cells += [np.nanmean(np.nanmean(distances[:, g], 1)) for g in groups.values()]
        print(f"| {name} |" + "".join(f" {c:.1f} |" for c in cells))


def motion_rows(swappers, pairs, points, scale) -> list[tuple[str, np.ndarray]]:
    """The landing of every probe motion, and of no motion, over ``pairs``."""
    rows = [(m, landing_distances(sw, pairs, points, scale)) for m, sw in swappers.items()]
    no_motion = landing_distances(swappers["learned"], pairs, points, scale, motion=False)
    return [*rows, ("no motion", no_motion)]


def _moments(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mass centre ``(x, y)`` and square root of the covariance of ``weights`` ``[H, W]``."""
    y, x = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    total = weights.sum()
    centre = np.array([(weights * x).sum(), (weights * y).sum()]) / total
    d = np.stack([x - centre[0], y - centre[1]], -1)
    values, vectors = np.linalg.eigh(np.einsum("hwi,hwj,hw->ij", d, d, weights) / total)
    return centre, vectors @ np.diag(np.sqrt(values)) @ vectors.T


def silhouette_rows(model, pairs, points, scale) -> list[tuple[str, np.ndarray]]:
    """Landing in the full images (no crop): the identity, one shift and one similarity from
    the model's foreground mask (its mass centre and second moments), and one shift by the
    true points' centroids (the bar of a translation): what a silhouette can align."""
    segmenter = PartSegmenter(model)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in SILHOUETTE_ROWS}
    for (source, target), (p_source, p_target), s in zip(pairs, points, scale, strict=True):
        (c_s, a_s), (c_t, a_t) = (_moments(1 - segmenter(im).masks[0]) for im in (source, target))
        ratio = np.sqrt(np.linalg.det(a_s) / np.linalg.det(a_t))
        true_shift = np.nanmean(p_source, 0) - np.nanmean(p_target, 0)
        moved = (p_target, p_target - c_t + c_s, ratio * (p_target - c_t) + c_s)
        for name, m in zip(SILHOUETTE_ROWS, (*moved, p_target + true_shift), strict=True):
            rows[name].append(np.linalg.norm(m - p_source, axis=1) / s)
    return [(name, np.stack(r)) for name, r in rows.items()]


SILHOUETTE_ROWS = (
    "identity (the images as they are)",
    "shift by the foreground mass centres",
    "similarity from the foreground moments",
    "shift by the true points' centroids (bar of a shift)",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mcs_faces", help="an MCS model: name or folder")
    parser.add_argument("--dataset", default="faces300w", choices=("faces300w", "taichi"))
    parser.add_argument(
        "--descriptors",
        help="a DenseDescriptorNet (name or folder): adds the part affines fitted on its matches "
        "(PartSwapper(correspondence=)) and its matches alone (DescriptorMatcher, full images)",
    )
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
        scale, unit = np.ones(len(pairs)), "px"
    groups = FACE_GROUPS if test.landmarks is not None else {}
    device = next(model.parameters()).device
    swappers = {
        m: ProbeSwapper(model, device, "pixels", m) for m in ("learned", "centres", "fitted")
    }
    extra = []
    if args.descriptors:
        swappers["descriptor-fitted"] = PartSwapper(
            model, device, "pixels", correspondence=args.descriptors
        )
        matcher = DescriptorMatcher(from_pretrained(args.descriptors), device)
        extra = [("descriptor matches alone", landing_distances(matcher, pairs, points, scale))]
    print("Swaps between two held-out images\n")
    bar = ("similarity on the true points (bar)", similarity_bar(points, scale))
    landing_table([*motion_rows(swappers, pairs, points, scale), *extra, bar], groups, unit)
    if args.descriptors:
        print("\nSharpness of the swaps: detail under the mask against the target photo's\n")
        print("| part motion | " + " | ".join(RENDERS) + " |\n|---|" + "---:|" * len(RENDERS))
        for name, corr in (("the model's own", None), ("descriptor-fitted", args.descriptors)):
            scores = swap_scores(model, pairs, corr)
            cells = [f"{scores.get(f'swap_sharpness_{r}', float('nan')):.3f}" for r in RENDERS]
            print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nEach source against itself turned 10 degrees and moved 15 px\n")
    same, same_points = [], []
    for (source, _), (p_source, _) in zip(pairs, points, strict=True):
        copy, p_copy = moved_copy(source, p_source)
        same.append((source, copy))
        same_points.append((p_source, p_copy))
    landing_table(motion_rows(swappers, same, same_points, scale), groups, unit)
    print("\nThe full images, aligned by the model's foreground or the true centroids\n")
    landing_table(silhouette_rows(model, pairs, points, scale), groups, unit)


if __name__ == "__main__":
    main()
