"""How sharp a part swap is on held-out images, and where it lands (issue 11).

A swap pastes re-drawn (``render="generator"``) or warped source pixels (``render="pixels"``)
into the target under a feathered mask. :func:`swap_sharpness` compares the detail of the
result inside that mask with the detail of the target photo in the same place: 1 means as
sharp as the photo it is pasted into, a blurred paste is below 1. :func:`swap_scores` runs it
over held-out (source, target) pairs, swapping the target's two largest parts (as the model
cards' examples do), for each render. :func:`transfer_error` asks whether a swap lands on the
same part: each target landmark (faces) or keypoint (Tai-Chi) is mapped by the swap's part
motion (:meth:`PartSwapper.transfer_points`) into the source, where it should meet the
source's own same landmark.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..part_swap import RENDERS, PartSwapper
from ..pipelines import PartSegmenter
from .reconstruction import gradient_magnitude


def _gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` -> ``float [H, W]`` gradient magnitude of the grey image."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    return gradient_magnitude(x)[0].numpy()


def _detail(result: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> tuple[float, float]:
    """Alpha-weighted summed gradient magnitude of ``result`` and of ``target``."""
    if result.shape != target.shape or alpha.shape != target.shape[:2]:
        raise ValueError(
            f"result {result.shape}, target {target.shape} and alpha {alpha.shape} must share H, W"
        )
    return (
        float((_gradient_magnitude(result) * alpha).sum()),
        float((_gradient_magnitude(target) * alpha).sum()),
    )


def swap_sharpness(result: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> float:
    """Alpha-weighted gradient magnitude of ``result`` over that of ``target`` (both ``uint8
    [H, W, 3]``, ``alpha`` ``[H, W]`` in [0, 1]); NaN when nothing was swapped."""
    swapped, reference = _detail(result, target, alpha)
    return swapped / reference if reference > 0 else float("nan")


def largest_parts(segmenter: PartSegmenter, image: Image.Image, count: int = 2) -> list[int]:
    """Indices (1..K) of the ``count`` parts that win the most pixels of ``image``."""
    return [int(k) + 1 for k in np.argsort(segmenter(image).areas)[::-1][:count]]


def swap_scores(
    model: torch.nn.Module,
    pairs: Sequence[tuple[Image.Image, Image.Image]],
    correspondence: torch.nn.Module | str | None = None,
) -> dict[str, float]:
    """``swap_sharpness_<render>`` for each render the model has (``pixels`` only without a
    generator): the ratio of summed detail over all ``pairs`` (source, target), each swapping
    the target's two largest parts (with the part motion fitted on a dense descriptor model's
    matches when ``correspondence`` is given: :class:`PartSwapper`)."""
    device = next(model.parameters()).device
    segmenter = PartSegmenter(model, device=device)
    parts = [largest_parts(segmenter, target) for _, target in pairs]
    scores = {}
    for render in RENDERS if hasattr(model, "generator") else ("pixels",):
        swapper = PartSwapper(model, device=device, render=render, correspondence=correspondence)
        totals = np.zeros(2)
        for (source, target), chosen in zip(pairs, parts, strict=True):
            result, alpha = swapper.swap_image(source, target, chosen, return_alpha=True)
            totals += _detail(np.asarray(result), np.asarray(target.convert("RGB")), alpha)
        scores[f"swap_sharpness_{render}"] = (
            float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
        )
    return scores


def landing_distances(
    swapper: PartSwapper,
    pairs: Sequence[tuple[Image.Image, Image.Image]],
    points: Sequence[tuple[np.ndarray, np.ndarray]],
    scale: Sequence[float] | None = None,
    motion: bool = True,
) -> np.ndarray:
    """``[pairs, N]`` distance between each target point mapped into the source by
    ``swapper``'s part motion and the source's same point, over ``pairs`` (source, target) with
    their ``points`` (source ``[N, 2]``, target ``[N, 2]``, NaN where missing, and NaN in the
    result), each pair's divided by its ``scale`` (default 1: pixels). ``motion=False``: the
    same crops mapped onto each other without motion (the baseline)."""
    rows = []
    for n, ((source, target), (p_source, p_target)) in enumerate(zip(pairs, points, strict=True)):
        seen = ~(np.isnan(p_source).any(1) | np.isnan(p_target).any(1))
        row = np.full(len(p_source), np.nan)
        if seen.any():
            moved = swapper.transfer_points(source, target, p_target[seen], motion)
            row[seen] = np.linalg.norm(moved - p_source[seen], axis=1)
        rows.append(row / (scale[n] if scale is not None else 1.0))
    return np.stack(rows)


def transfer_error(
    model: torch.nn.Module,
    pairs: Sequence[tuple[Image.Image, Image.Image]],
    points: Sequence[tuple[np.ndarray, np.ndarray]],
    scale: Sequence[float] | None = None,
    motion: bool = True,
) -> float:
    """The mean over ``pairs`` of each pair's mean :func:`landing_distances` (pairs without a
    point seen in both images left out), with ``model``'s :class:`PartSwapper`
    (``render="pixels"``): e.g. in % of the source's inter-ocular distance for ``scale`` = the
    distance / 100."""
    swapper = PartSwapper(model, device=next(model.parameters()).device, render="pixels")
    distances = landing_distances(swapper, pairs, points, scale, motion)
    seen = ~np.isnan(distances).all(1)
    if not seen.any():
        raise ValueError("no pair has a point seen in both images")
    return float(np.nanmean(distances[seen], 1).mean())
