"""Known-answer tests for the superpixel metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from copart_hub.metrics.superpixels import (
    achievable_segmentation_accuracy,
    boundary_map,
    boundary_precision,
    boundary_recall,
    compactness,
    num_segments,
    superpixel_scores,
)


def _halves(h: int = 8, w: int = 8, split: int = 4, axis: int = 1) -> np.ndarray:
    """Two segments split at column (axis=1) or row (axis=0) ``split``."""
    idx = np.indices((h, w))[axis]
    return (idx >= split).astype(np.int64)


def _blocks(h: int, w: int, bh: int, bw: int) -> np.ndarray:
    yy, xx = np.indices((h, w))
    return (yy // bh) * math.ceil(w / bw) + xx // bw


def test_asa_identical_and_finer_is_one() -> None:
    gt = _blocks(12, 12, 6, 6)
    assert achievable_segmentation_accuracy(gt, gt) == 1.0
    finer = _blocks(12, 12, 3, 2)  # every 3x2 block lies inside one 6x6 block
    assert achievable_segmentation_accuracy(finer, gt) == 1.0
    # label values need not be consecutive or start at 0
    assert achievable_segmentation_accuracy(finer * 7 - 100, gt + 1000) == 1.0


def test_asa_contingency_example() -> None:
    # 1x10 strip: superpixels [0]*6 + [1]*4; ground truth [0]*4 + [1]*6
    sp = np.array([[0] * 6 + [1] * 4])
    gt = np.array([[0] * 4 + [1] * 6])
    # sp 0 overlaps gt 0 by 4 and gt 1 by 2 -> 4; sp 1 lies in gt 1 -> 4; ASA = 8 / 10
    assert achievable_segmentation_accuracy(sp, gt) == pytest.approx(0.8)
    # a single superpixel takes the largest segment
    assert achievable_segmentation_accuracy(np.zeros_like(gt), gt) == pytest.approx(0.6)


def test_asa_sparse_path_matches_dense() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, (70, 70))
    sp = np.arange(70 * 70).reshape(70, 70)  # one pixel per superpixel: 4900 x 3 table
    assert achievable_segmentation_accuracy(sp, gt) == 1.0
    big_gt = np.arange(70 * 70).reshape(70, 70)[::-1]  # 4900 x 4900 > dense limit -> sparse
    assert achievable_segmentation_accuracy(sp, big_gt) == 1.0
    assert achievable_segmentation_accuracy(gt, big_gt) == pytest.approx(3 / gt.size)


def test_boundary_map_definition() -> None:
    b = boundary_map(_halves(4, 6, split=3))
    expected = np.zeros((4, 6), dtype=bool)
    expected[:, 2] = True  # the pixel left of each label change
    np.testing.assert_array_equal(b, expected)


def test_boundary_recall_and_precision_coincident_and_far() -> None:
    gt = _halves(10, 20, split=10)
    assert boundary_recall(gt, gt) == 1.0
    assert boundary_precision(gt, gt) == 1.0
    far = _halves(10, 20, split=3)  # 7 columns away
    assert boundary_recall(far, gt) == 0.0
    assert boundary_precision(far, gt) == 0.0
    # a single superpixel has no boundary: nothing recalled; precision is vacuous (1.0)
    assert boundary_recall(np.zeros_like(gt), gt) == 0.0
    assert boundary_precision(np.zeros_like(gt), gt) == 1.0
    assert boundary_recall(gt, np.zeros_like(gt)) == 1.0  # no GT boundary (SEAL convention)


def test_boundary_tolerance_one_pixel_shift() -> None:
    gt = _halves(10, 20, split=10)
    shifted = _halves(10, 20, split=11)
    assert boundary_recall(shifted, gt, tolerance=0) == 0.0
    assert boundary_recall(shifted, gt, tolerance=1) == 1.0
    assert boundary_precision(shifted, gt, tolerance=1) == 1.0
    two = _halves(10, 20, split=12)
    assert boundary_recall(two, gt, tolerance=1) == 0.0
    assert boundary_recall(two, gt, tolerance=2) == 1.0
    # the window is a square (Chebyshev): GT pixel (1, 2) is matched only by SP pixel (2, 3)
    sp = np.zeros((6, 6), dtype=np.int64)
    sp[3:, 3:] = 1
    gt_diag = np.zeros((6, 6), dtype=np.int64)
    gt_diag[2:, 2:] = 1
    assert boundary_recall(sp, gt_diag, tolerance=0) == 0.0
    assert boundary_recall(sp, gt_diag, tolerance=1) == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        boundary_recall(gt, gt, tolerance=-1)


def test_boundary_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    sp = _blocks(15, 17, 3, 4)
    gt = rng.integers(0, 2, (15, 17)).cumsum(1) // 3
    for r in (0, 1, 2):
        sb, gb = boundary_map(sp), boundary_map(gt)
        hit = [
            sb[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1].any()
            for y, x in zip(*np.nonzero(gb), strict=True)
        ]
        assert boundary_recall(sp, gt, r) == pytest.approx(np.mean(hit))


def test_compactness_square_vs_rectangle() -> None:
    square = np.zeros((8, 8), dtype=np.int64)
    assert compactness(square) == pytest.approx(math.pi / 4)  # 4 pi 64 / 32^2
    strip = np.zeros((1, 64), dtype=np.int64)
    assert compactness(strip) == pytest.approx(4 * math.pi * 64 / 130**2)
    assert compactness(_blocks(16, 16, 4, 4)) == pytest.approx(math.pi / 4)
    # area-weighted: two 8x4 halves of a square, each 4 pi 32 / 24^2
    assert compactness(_halves(8, 8, 4)) == pytest.approx(4 * math.pi * 32 / 24**2)
    assert compactness(_blocks(16, 16, 16, 2)) < compactness(_blocks(16, 16, 4, 4))


def test_num_segments_and_scores() -> None:
    sp = _blocks(12, 12, 4, 3)
    assert num_segments(sp) == 12
    assert num_segments(sp * 5 + 3) == 12
    gts = [_blocks(12, 12, 4, 3), _halves(12, 12, 6)]
    scores = superpixel_scores(sp, gts, tolerance=1)
    assert scores["n_segments"] == 12
    assert scores["asa"] == 1.0  # sp is finer than both annotators
    assert scores["br"] == 1.0
    expected_bp = (1.0 + boundary_precision(sp, gts[1])) / 2  # mean over annotators
    assert scores["bp"] == pytest.approx(expected_bp)
    assert scores["co"] == pytest.approx(compactness(sp))


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same shape"):
        achievable_segmentation_accuracy(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="integers"):
        compactness(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2-D"):
        num_segments(np.zeros((3, 3, 1), int))
    with pytest.raises(ValueError, match="at least one"):
        superpixel_scores(np.zeros((3, 3), int), [])
