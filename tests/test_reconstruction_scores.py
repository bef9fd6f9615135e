"""Held-out reconstruction scores of motion co-segmentation models (copart_hub.evaluation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia.filters import box_blur

from copart_hub.evaluation.reconstruction import frame_pairs, reconstruction_scores


class _Drawer(torch.nn.Module):
    """Stands in for an MCS model: predicts the target itself, blurred, or the source."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = {"target": target, "blur": box_blur(target, (7, 7)), "source": source}[self.mode]
        return {"prediction": pred}


def _clips(n: int = 2, frames: int = 12, size: int = 24) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_pairs_stay_inside_each_clip():
    clips = [np.arange(12).reshape(12, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)]
    pairs = [(int(s[0, 0, 0]), int(t[0, 0, 0])) for s, t in frame_pairs(clips, gap=5, every=3)]
    assert pairs == [(0, 5), (3, 8), (6, 11)]


def test_a_perfect_drawing_scores_perfectly_and_a_blurred_one_loses_sharpness():
    clips = _clips()
    perfect = reconstruction_scores(_Drawer("target"), clips, gap=4, every=2, batch_size=3)
    assert perfect["recon_l1"] == pytest.approx(0, abs=1e-7)
    assert perfect["recon_ssim"] == pytest.approx(1, abs=1e-4)
    assert perfect["recon_sharpness"] == pytest.approx(1, abs=1e-6)
    assert perfect["copy_l1"] > 0.2  # independent random frames
    blurred = reconstruction_scores(_Drawer("blur"), clips, gap=4, every=2)
    assert blurred["recon_sharpness"] < 0.5 and blurred["recon_ssim"] < 0.5
    copied = reconstruction_scores(_Drawer("source"), clips, gap=4, every=2)
    assert copied["recon_l1"] == pytest.approx(copied["copy_l1"])
    assert copied["recon_ssim"] == pytest.approx(copied["copy_ssim"])


def test_a_real_model_is_scored_and_left_in_its_mode():
    from copart_hub import create_model

    model = create_model("mcs_test", num_parts=2, input_size=(32, 32)).train()
    scores = reconstruction_scores(model, _clips(1, 6, 32), gap=2, every=2)
    assert set(scores) == {"recon_l1", "recon_ssim", "recon_sharpness", "copy_l1", "copy_ssim"}
    assert all(np.isfinite(v) for v in scores.values()) and model.training


def test_clips_shorter_than_the_gap_are_a_clear_error():
    with pytest.raises(ValueError, match="no clip has more than gap=30 frames"):
        reconstruction_scores(_Drawer("target"), _clips(frames=20))
    with pytest.raises(ValueError, match="gap and every must be >= 1"):
        reconstruction_scores(_Drawer("target"), _clips(), every=0)


def test_frames_of_another_size_are_resized_to_the_model():
    from copart_hub import create_model

    model = create_model("mcs_test", num_parts=2, input_size=(32, 32))
    small = reconstruction_scores(model, _clips(1, 6, 32), gap=2, every=2)
    large = reconstruction_scores(model, _clips(1, 6, 64), gap=2, every=2)
    assert set(small) == set(large) and all(np.isfinite(v) for v in large.values())


def test_still_pairs_are_each_image_and_its_seeded_warp():
    from PIL import Image

    from copart_hub.evaluation.reconstruction import still_pairs
    from copart_hub.ops.warps import random_scops_tps

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(3)]
    images[1] = Image.fromarray(images[1])  # PIL images too
    clips = still_pairs(images, (24, 20), seed=5)
    assert len(clips) == 3 and all(c.shape == (2, 24, 20, 3) and c.dtype == np.uint8 for c in clips)
    first = torch.from_numpy(clips[0][0]).permute(2, 0, 1).float()[None] / 255
    warp = random_scops_tps(
        3,
        jitter=0.04,
        max_rotation_deg=15.0,
        scale_range=(0.85, 1.2),
        max_translation=0.1,
        generator=torch.Generator().manual_seed(5),
    )
    expected = warp.warp(first.expand(3, -1, -1, -1), padding_mode="border")[0].clamp(0, 1)
    got = torch.from_numpy(clips[0][1]).permute(2, 0, 1).float() / 255
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6
    assert not np.array_equal(clips[0][0], clips[0][1])  # the warp moves the image
    again = still_pairs(images, (24, 20), seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(clips, again, strict=True))
    scores = reconstruction_scores(_Drawer("target"), clips, gap=1, every=1)
    assert scores["recon_l1"] == pytest.approx(0, abs=1e-7) and scores["copy_l1"] > 0.05
    with pytest.raises(ValueError, match="at least one image"):
        still_pairs([], (24, 20))
