"""Connectivity enforcement for superpixel label maps (post-processing of SLIC/SSN)."""

from __future__ import annotations

import numpy as np
from skimage.measure import label as connected_components

MIN_SIZE_FACTOR = 0.06  # official SSN: components smaller than 6% of the average size merge


def enforce_connectivity(
    labels: np.ndarray, n_expected: int | None = None, min_size: int | None = None
) -> np.ndarray:
    """Make every superpixel one 4-connected region and merge tiny fragments.

    Each 4-connected component of equal labels becomes its own segment; components smaller
    than ``min_size`` pixels (default ``0.06 * H * W / n_expected``) are merged into their
    largest adjacent neighbour. Returns consecutive labels ``0..n-1`` as ``int64 [H, W]``.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    if min_size is None:
        n = n_expected if n_expected else int(labels.max()) + 1
        min_size = int(MIN_SIZE_FACTOR * labels.size / max(n, 1))
    comp = connected_components(labels, background=-1, connectivity=1) - 1  # 0..m-1
    while True:
        sizes = np.bincount(comp.ravel())
        small = sizes < min_size
        if not small.any() or len(sizes) == 1:
            break
        # adjacent component pairs (both directions)
        a = np.concatenate([comp[:, :-1].ravel(), comp[:-1, :].ravel()])
        b = np.concatenate([comp[:, 1:].ravel(), comp[1:, :].ravel()])
        keep = a != b
        src = np.concatenate([a[keep], b[keep]])
        dst = np.concatenate([b[keep], a[keep]])
        # merge a small component only into a strictly "larger" neighbour, ordered by
        # (size, id), so merges form chains towards big segments and never cycle
        rank = sizes.astype(np.int64) * len(sizes) + np.arange(len(sizes))
        ok = small[src] & (rank[dst] > rank[src])
        if not ok.any():
            break
        best = np.full(len(sizes), -1, dtype=np.int64)
        np.maximum.at(best, src[ok], rank[dst[ok]])
        target = np.arange(len(sizes))
        has = best >= 0
        target[has] = best[has] % len(sizes)
        while True:  # follow chains to their end
            nxt = target[target]
            if np.array_equal(nxt, target):
                break
            target = nxt
        comp = target[comp]
        _, comp = np.unique(comp, return_inverse=True)
        comp = comp.reshape(labels.shape)
    _, out = np.unique(comp, return_inverse=True)
    return out.reshape(labels.shape).astype(np.int64)
