"""Boundary-connectivity saliency and its CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copart_hub.cli import main
from copart_hub.saliency import boundary_connectivity_saliency, saliency_from_superpixels


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
    assert main(["saliency", str(good), "--out", str(out), "--n", "60"]) == 0
    sal = np.asarray(Image.open(out / "obj_saliency.png"))
    assert sal.shape == (60, 80) and sal[30, 40] > 180 and sal[2, 2] < 60
