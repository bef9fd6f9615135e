"""Superpixel quality metrics (SSN / SEAL protocol on BSDS500), vectorised numpy/scipy.

Conventions used by every function here:

- Label maps are 2-D integer arrays of the same shape; label values need not be consecutive.
- **Boundary pixel** (as in the SEAL ``computeBR`` code): a pixel whose right or bottom
  neighbour has a different label. The same rule is applied to superpixels and ground truth,
  so boundaries are one pixel thick and sit on the top/left side of each label change.
- **Tolerance** ``r``: a boundary pixel is matched when the other map has a boundary pixel in
  the ``(2r+1) x (2r+1)`` square around it (Chebyshev distance ``<= r``).
- **Perimeter** (for compactness): the number of 4-neighbour pixel edges between a segment and
  any other segment or the image border, so a ``k x k`` square has perimeter ``4k``.

With several annotators, the protocol averages ASA, BR and BP over every (image, annotator)
pair; :func:`superpixel_scores` does this for one image while computing the superpixel side once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, sparse

# Above this many (superpixel, segment) cells the contingency table is built as a sparse matrix.
_DENSE_CONTINGENCY_LIMIT = 1 << 24


def _check_labels(*maps: np.ndarray) -> None:
    shape = maps[0].shape
    for m in maps:
        if m.ndim != 2:
            raise ValueError(f"label maps must be 2-D [H, W], got shape {m.shape}")
        if m.shape != shape:
            raise ValueError(f"label maps must have the same shape, got {shape} and {m.shape}")
        if not np.issubdtype(m.dtype, np.integer):
            raise ValueError(f"label maps must hold integers, got dtype {m.dtype}")


def _consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Flat labels renumbered ``0..n-1`` and ``n``."""
    flat = labels.ravel().astype(np.int64, copy=False)
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo < 4 * flat.size:  # lookup table: O(N), no sort
        present = np.bincount(flat - lo, minlength=hi - lo + 1) > 0
        lut = np.cumsum(present) - 1
        return lut[flat - lo], int(present.sum())
    uniq, inverse = np.unique(flat, return_inverse=True)
    return inverse.ravel(), len(uniq)


def num_segments(sp: np.ndarray) -> int:
    """Number of distinct labels in a label map."""
    _check_labels(sp)
    return _consecutive(sp)[1]


def _best_overlaps(s: np.ndarray, n_s: int, gt: np.ndarray) -> np.ndarray:
    """``max_i |s_j ∩ g_i|`` for every superpixel ``s_j`` (contingency-table row maxima).

    ``s`` holds the flat superpixel labels renumbered ``0..n_s-1``.
    """
    g, n_g = _consecutive(gt)
    if n_s * n_g <= _DENSE_CONTINGENCY_LIMIT:
        table = np.bincount(s * n_g + g, minlength=n_s * n_g).reshape(n_s, n_g)
        return table.max(axis=1)
    ones = np.ones(s.size, dtype=np.int64)
    table = sparse.coo_matrix((ones, (s, g)), shape=(n_s, n_g)).tocsr()  # sums duplicates
    return table.max(axis=1).toarray().ravel()


def achievable_segmentation_accuracy(sp: np.ndarray, gt: np.ndarray) -> float:
    """ASA = ``(1/N) sum_j max_i |s_j ∩ g_i|``: pixel accuracy when each superpixel takes its
    best ground-truth segment (1.0 when ``sp`` is as fine as or finer than ``gt``)."""
    _check_labels(sp, gt)
    return float(_best_overlaps(*_consecutive(sp), gt).sum() / sp.size)


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """``bool [H, W]``: pixels whose right or bottom neighbour has a different label."""
    _check_labels(labels)
    b = np.zeros(labels.shape, dtype=bool)
    b[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    b[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return b


def _dilate(boundary: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``tolerance`` of a boundary pixel."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if tolerance == 0:
        return boundary
    return ndimage.maximum_filter(boundary, size=2 * tolerance + 1, mode="constant", cval=False)


def _matched_fraction(boundary: np.ndarray, other_dilated: np.ndarray) -> float:
    """Fraction of ``boundary`` pixels inside ``other_dilated``; 1.0 if there are none."""
    total = int(np.count_nonzero(boundary))
    if total == 0:
        return 1.0
    return np.count_nonzero(boundary & other_dilated) / total


def boundary_recall(sp: np.ndarray, gt: np.ndarray, tolerance: int = 1) -> float:
    """BR: fraction of ground-truth boundary pixels within ``tolerance`` of a superpixel
    boundary (1.0 when the ground truth has no boundary, as in SEAL)."""
    _check_labels(sp, gt)
    return _matched_fraction(boundary_map(gt), _dilate(boundary_map(sp), tolerance))


def boundary_precision(sp: np.ndarray, gt: np.ndarray, tolerance: int = 1) -> float:
    """BP: fraction of superpixel boundary pixels within ``tolerance`` of a ground-truth
    boundary (1.0 when the superpixels have no boundary)."""
    _check_labels(sp, gt)
    return _matched_fraction(boundary_map(sp), _dilate(boundary_map(gt), tolerance))


def compactness(sp: np.ndarray) -> float:
    """CO (Schick et al. 2012) = ``sum_S (|S|/|I|) * 4 pi A_S / P_S^2``.

    ``A_S = |S|`` and ``P_S`` counts the 4-neighbour edges on the segment's outline, image
    border included (see the module docstring). With this perimeter a square scores ``pi/4``,
    the maximum for pixel sets; elongated or ragged segments score lower.
    """
    _check_labels(sp)
    h, w = sp.shape
    flat, n = _consecutive(sp)
    lab = flat.reshape(h, w)
    area = np.bincount(flat, minlength=n).astype(np.float64)
    horiz = lab[:, :-1] != lab[:, 1:]
    vert = lab[:-1, :] != lab[1:, :]
    ends = [
        lab[:, :-1][horiz],
        lab[:, 1:][horiz],
        lab[:-1, :][vert],
        lab[1:, :][vert],
        lab[0, :],  # image border edges
        lab[-1, :],
        lab[:, 0],
        lab[:, -1],
    ]
    perimeter = np.bincount(np.concatenate(ends), minlength=n).astype(np.float64)
    return float(np.sum(area / sp.size * 4 * math.pi * area / perimeter**2))


def superpixel_scores(
    sp: np.ndarray, gts: Sequence[np.ndarray], tolerance: int = 1
) -> dict[str, float]:
    """All metrics of one superpixel map against several annotators.

    Returns ``n_segments``, ``co`` and the per-annotator means of ``asa``, ``br`` and ``bp``.
    The superpixel boundary and its dilation are computed once for all annotators.
    """
    if len(gts) == 0:
        raise ValueError("need at least one ground-truth segmentation")
    _check_labels(sp, *gts)
    s, n_s = _consecutive(sp)
    sp_boundary = boundary_map(sp)
    sp_near = _dilate(sp_boundary, tolerance)
    asa, br, bp = [], [], []
    for gt in gts:
        gt_boundary = boundary_map(gt)
        asa.append(_best_overlaps(s, n_s, gt).sum() / sp.size)
        br.append(_matched_fraction(gt_boundary, sp_near))
        bp.append(_matched_fraction(sp_boundary, _dilate(gt_boundary, tolerance)))
    return {
        "n_segments": float(n_s),
        "asa": float(np.mean(asa)),
        "br": float(np.mean(br)),
        "bp": float(np.mean(bp)),
        "co": compactness(sp),
    }
