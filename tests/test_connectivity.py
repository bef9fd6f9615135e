"""Connectivity enforcement of label maps."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as cc

from copart_hub.ops.connectivity import enforce_connectivity


def test_split_label_becomes_two_segments():
    lab = np.zeros((10, 10), dtype=np.int64)
    lab[:, 5:] = 1
    lab[:, 8:] = 0  # label 0 now has two components
    out = enforce_connectivity(lab, min_size=1)
    assert len(np.unique(out)) == 3
    assert cc(out, background=-1, connectivity=1).max() == 3


def test_small_fragment_merges_into_its_neighbour():
    lab = np.zeros((20, 20), dtype=np.int64)
    lab[:, 10:] = 1
    lab[5, 3] = 1  # one stray pixel of label 1 inside label 0
    out = enforce_connectivity(lab, min_size=5)
    assert len(np.unique(out)) == 2
    assert out[5, 3] == out[0, 0]


def test_every_segment_connected_and_consecutive():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 6, size=(40, 50))
    out = enforce_connectivity(lab, n_expected=6)
    ids = np.unique(out)
    assert np.array_equal(ids, np.arange(len(ids)))
    comps = cc(out, background=-1, connectivity=1)
    assert comps.max() == len(ids)  # one component per label
    assert np.bincount(out.ravel()).min() >= int(0.06 * out.size / 6)


def test_uniform_map_is_one_segment():
    out = enforce_connectivity(np.full((7, 9), 3), n_expected=10)
    assert np.all(out == 0)


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        enforce_connectivity(np.zeros((2, 3, 4), dtype=int))
