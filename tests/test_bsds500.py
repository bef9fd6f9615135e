"""BSDS500 reader on the real data (skipped when ../shared/data/bsds500 is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from copart_hub.data.bsds500 import (
    bsds500_root,
    list_ids,
    load_boundaries,
    load_image,
    load_segmentations,
)


def test_splits(bsds_root: Path) -> None:
    assert len(list_ids(bsds_root, "train")) == 200
    val = list_ids(bsds_root, "val")
    assert len(val) == 100
    assert val == sorted(val)


def test_image_and_annotators(bsds_root: Path) -> None:
    image_id = list_ids(bsds_root, "val")[0]
    image = load_image(bsds_root, "val", image_id)
    assert image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3
    assert image.shape[:2] in {(321, 481), (481, 321)}
    segs = load_segmentations(bsds_root, "val", image_id)
    bounds = load_boundaries(bsds_root, "val", image_id)
    assert len(segs) >= 5 and len(bounds) == len(segs)
    for seg, bnd in zip(segs, bounds, strict=True):
        assert seg.shape == bnd.shape == image.shape[:2]
        assert seg.min() == 0 and bnd.dtype == bool and bnd.any()
        # labels are consecutive 0..n-1
        assert np.array_equal(np.unique(seg), np.arange(seg.max() + 1))


def test_default_root_and_errors(bsds_root: Path, tmp_path: Path) -> None:
    assert load_image(None, "val", list_ids(None, "val")[0]).shape[2] == 3
    with pytest.raises(FileNotFoundError, match="no images"):
        bsds500_root(tmp_path)
    with pytest.raises(ValueError, match="unknown BSDS500 split"):
        list_ids(bsds_root, "training")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_segmentations(bsds_root, "val", "0")
