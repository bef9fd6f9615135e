"""Palette, overlays, legend and contact sheet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from copart_hub.visualize import (
    contact_sheet,
    overlay_parts,
    overlay_superpixels,
    part_colors,
    render_legend,
)


def test_part_colors_background_dark_parts_bright_and_distinct() -> None:
    colors = part_colors(9)
    assert colors.shape == (9, 3) and colors.dtype == np.uint8
    assert colors[0].max() == 0
    assert (colors[1:].max(1) == 255).all()
    assert len({tuple(c) for c in colors}) == 9


def test_overlay_parts_leaves_background_unchanged() -> None:
    image = Image.new("RGB", (4, 2), (100, 100, 100))
    labels = np.array([[0, 1, 2, 0], [0, 0, 1, 1]])
    out = np.asarray(overlay_parts(image, labels, alpha=1.0))
    assert (out[labels == 0] == 100).all()
    np.testing.assert_array_equal(out[0, 1], part_colors(3)[1])
    np.testing.assert_array_equal(out[0, 2], part_colors(3)[2])
    # a fixed num_parts keeps colours the same whatever labels occur
    fixed = np.asarray(overlay_parts(image, labels, alpha=1.0, num_parts=5))
    np.testing.assert_array_equal(fixed[0, 1], part_colors(6)[1])
    with pytest.raises(ValueError, match="do not match"):
        overlay_parts(image, labels.T)


def test_overlay_superpixels_marks_boundaries_only() -> None:
    image = Image.new("RGB", (6, 4), (0, 0, 0))
    labels = np.zeros((4, 6), np.int64)
    labels[:, 3:] = 1
    out = np.asarray(overlay_superpixels(image, labels))
    marked = out.any(-1)
    assert marked[:, 2].all()  # a 1-pixel line on the left side of the vertical boundary
    assert not marked[:, [0, 1, 3, 4, 5]].any()


def test_legend_has_one_row_per_label() -> None:
    small, big = render_legend(2), render_legend(6, names=list("abcdef"))
    assert big.height > small.height
    assert tuple(np.asarray(big).reshape(-1, 3).max(0)) == (255, 255, 255)
    colours = {tuple(c) for c in np.asarray(big).reshape(-1, 3)}
    assert {tuple(c) for c in part_colors(7)} <= colours
    with pytest.raises(ValueError, match="names"):
        render_legend(3, names=["a"])


def test_contact_sheet_grid() -> None:
    images = [Image.new("RGB", (20, 10), (255, 0, 0))] * 5
    sheet = contact_sheet(images, cols=2, cell_size=16, gap=2)
    assert sheet.size == (2 + 2 * 18, 2 + 3 * 18)
    px = np.asarray(sheet)
    assert tuple(px[2 + 8, 2 + 8]) == (255, 0, 0)  # centre of the first cell
    assert tuple(px[2 + 2 * 18 + 8, 2 + 18 + 8]) == (255, 255, 255)  # empty sixth cell
