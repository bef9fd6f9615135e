"""Boundary-connectivity saliency, GrabCut foreground and the saliency CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from copart_hub.cli import main
from copart_hub.saliency import (
    boundary_connectivity_saliency,
    grabcut_foreground,
    saliency_from_superpixels,
    unsupervised_foreground,
)


def _object_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((60, 80, 3), (90, 140, 90), dtype=np.uint8)  # green background
    img[15:45, 25:55] = (200, 40, 40)  # red object in the middle
    return np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


def test_central_object_is_salient_and_border_is_not():
    s = boundary_connectivity_saliency(_object_image(), 60)
    assert s.shape == (60, 80) and s.dtype == np.float32
    assert s.min() >= 0.0 and s.max() <= 1.0
    assert s[20:40, 30:50].mean() > 0.7
    assert s[:5].mean() < 0.2 and s[:, :5].mean() < 0.2


def test_object_touching_the_border_is_less_salient():
    img = _object_image()
    touching = img.copy()
    touching[15:60, 25:55] = (200, 40, 40)
    s_in = boundary_connectivity_saliency(img, 60)[20:40, 30:50].mean()
    s_touch = boundary_connectivity_saliency(touching, 60)[20:40, 30:50].mean()
    assert s_touch < s_in


def test_single_superpixel_gives_zero_map():
    img = _object_image()
    assert not saliency_from_superpixels(img, np.zeros(img.shape[:2], dtype=int)).any()


def test_bad_input():
    with pytest.raises(ValueError, match="RGB uint8"):
        boundary_connectivity_saliency(np.zeros((10, 10), dtype=np.uint8))


def test_cli_writes_maps_and_rejects_bad_files(tmp_path: Path, capsys):
    good = tmp_path / "obj.png"
    Image.fromarray(_object_image()).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(["saliency", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.jpg" in err[0] and not out.exists()
    args = ["saliency", str(good), "--out", str(out), "--n", "60", "--method", "boundary"]
    assert main(args) == 0
    sal = np.asarray(Image.open(out / "obj_saliency.png"))
    assert sal.shape == (60, 80) and sal[30, 40] > 180 and sal[2, 2] < 60
    assert len(np.unique(sal)) > 2  # soft map


def test_cli_grabcut_is_the_default_and_binary(tmp_path: Path):
    good = tmp_path / "obj.png"
    Image.fromarray(_object_image()).save(good)
    assert main(["saliency", str(good), "--out", str(tmp_path / "out"), "--n", "60"]) == 0
    fg = np.asarray(Image.open(tmp_path / "out" / "obj_saliency.png"))
    assert set(np.unique(fg)) == {0, 255}
    assert (fg[15:45, 25:55] == 255).mean() > 0.95 and (fg[:, :20] == 0).all()


def _object_mask() -> np.ndarray:
    mask = np.zeros((60, 80), dtype=bool)
    mask[15:45, 25:55] = True
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_grabcut_grows_a_rough_prior_to_the_object():
    img, obj = _object_image(), _object_mask()
    prior = np.zeros((60, 80), dtype=np.float32)
    prior[10:30, 20:45] = 0.9  # too small and shifted: covers part object, part background
    fg = grabcut_foreground(img, prior)
    assert fg.dtype == np.float32 and set(np.unique(fg)) <= {0.0, 1.0}
    assert _iou(fg > 0.5, obj) > 0.9 > _iou(prior > 0.5, obj)


def test_grabcut_is_deterministic_whatever_opencvs_random_state():
    """GrabCut seeds its colour models from OpenCV's global random generator; on a noisy image
    that changes the mask from call to call unless the generator is reset."""
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    img[20:40, 20:40] = (220, 30, 30)
    prior = np.zeros((64, 64), dtype=np.float32)
    prior[18:42, 18:42] = 1.0
    cv2.setRNGSeed(0)  # a known state, from which repeated calls used to differ
    masks = [grabcut_foreground(img, prior) for _ in range(8)]
    for mask in masks[1:]:
        np.testing.assert_array_equal(mask, masks[0])


def test_grabcut_border_is_background_and_empty_prior_stays_empty():
    img = _object_image()
    fg = grabcut_foreground(img, np.ones((60, 80), dtype=np.float32), border=0.05)
    assert not fg[:3].any() and not fg[-3:].any() and not fg[:, :4].any() and not fg[:, -4:].any()
    assert not grabcut_foreground(img, np.zeros((60, 80), dtype=np.float32)).any()


def test_grabcut_on_a_large_image_runs_downscaled_and_returns_full_size():
    rng = np.random.default_rng(0)
    img = np.full((1500, 2000, 3), (90, 140, 90), np.uint8)
    img[400:1100, 600:1400] = (200, 40, 40)
    img = np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    prior = np.zeros((1500, 2000), np.float32)
    prior[350:800, 500:1100] = 1.0
    fg = grabcut_foreground(img, prior, max_side=256) > 0.5
    obj = np.zeros((1500, 2000), bool)
    obj[400:1100, 600:1400] = True
    assert fg.shape == (1500, 2000) and _iou(fg, obj) > 0.95


def test_unsupervised_foreground_methods_agree_on_the_object():
    img, obj = _object_image(), _object_mask()
    for method in ("boundary", "grabcut"):
        assert _iou(unsupervised_foreground(img, method, 60) > 0.5, obj) > 0.9


@pytest.mark.parametrize(
    ("prior", "kwargs", "match"),
    [
        (np.zeros((60, 81)), {}, "prior must be"),
        (np.zeros((60, 80)), {"border": 0.5}, "border"),
        (np.zeros((60, 80)), {"iterations": 0}, "iterations"),
        (np.zeros((60, 80)), {"max_side": 2}, "max_side"),
    ],
)
def test_grabcut_bad_input(prior, kwargs, match):
    with pytest.raises(ValueError, match=match):
        grabcut_foreground(_object_image(), prior, **kwargs)


def test_unknown_foreground_method():
    with pytest.raises(ValueError, match="unknown foreground method"):
        unsupervised_foreground(_object_image(), "magic")  # type: ignore[arg-type]
