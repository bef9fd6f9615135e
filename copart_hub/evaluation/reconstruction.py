"""Held-out reconstruction quality of a motion co-segmentation model (issue 11).

The generator re-draws the target frame from the source frame and the parts' motion; a swap is
only as sharp as that drawing. On pairs ``(t, t + gap)`` of held-out clips (``t`` every
``every`` frames) :func:`reconstruction_scores` gives:

- ``recon_l1``: mean absolute error of the prediction, pixels in [0, 1] (lower is better);
- ``recon_ssim``: mean SSIM (kornia, 11 px Gaussian window; higher is better);
- ``recon_sharpness``: total gradient magnitude of the predictions over that of the targets
  (1 = as much detail as the real frames; a blurred drawing is below 1);
- ``copy_l1`` / ``copy_ssim``: the same for the source frame itself as the prediction, the
  baseline a model must beat to have learnt any motion.

Collections without video (held-out faces) are scored on :func:`still_pairs`: each image and
the same image under a fixed random TPS + similarity warp, as two-frame clips (``gap=1``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import spatial_gradient
from kornia.metrics import ssim
from torch import Tensor

from ..ops.warps import random_scops_tps
from ..processing import image_to_tensor


def frame_pairs(
    clips: Sequence[Any], gap: int, every: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(source, target)`` ``uint8 [H, W, 3]`` frames ``t`` and ``t + gap`` of each clip, for
    ``t = 0, every, 2 every, ...``; ``clips`` index like ``uint8 [T, H, W, 3]`` arrays."""
    for clip in clips:
        for t in range(0, len(clip) - gap, every):
            pair = clip[[t, t + gap]]
            yield pair[0], pair[1]


def still_pairs(images: Sequence[Any], size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Two-frame clips ``uint8 [2, H, W, 3]`` (``size = (H, W)``) from still images (any input
    of :func:`~copart_hub.processing.load_image`, resized as the pipelines do): the image, then
    the image under a random TPS + similarity warp drawn from ``seed``, in the moderate ranges
    of MCS's training pairs from still images (rotation up to 15 degrees, zoom 0.85-1.2, shift
    0.1, control-point jitter 0.04; border padding)."""
    if not len(images):
        raise ValueError("still_pairs needs at least one image")
    frames = torch.stack([image_to_tensor(image, size) for image in images])
    warp = random_scops_tps(
        len(frames),
        jitter=0.04,
        max_rotation_deg=15.0,
        scale_range=(0.85, 1.2),
        max_translation=0.1,
        generator=torch.Generator().manual_seed(seed),
    )
    warped = warp.warp(frames, padding_mode="border").clamp(0, 1)
    pairs = torch.stack([frames, warped], 1).permute(0, 1, 3, 4, 2)
    return list((pairs * 255).round().to(torch.uint8).numpy())


def gradient_magnitude(images: Tensor) -> Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> the gradient magnitude of the grey image ``[B, H, W]``."""
    grad = spatial_gradient(rgb_to_grayscale(images))[:, 0]  # [B, 2, H, W]
    return grad.pow(2).sum(1).add(1e-12).sqrt()


def _gradient_energy(images: Tensor) -> Tensor:
    """Sum over the batch of the mean gradient magnitude of the grey image ``[B, 3, H, W]``."""
    return gradient_magnitude(images).mean(dim=(1, 2)).sum()


@torch.no_grad()
def reconstruction_scores(
    model: torch.nn.Module,
    clips: Sequence[Any],
    gap: int = 30,
    every: int = 10,
    batch_size: int = 16,
) -> dict[str, float]:
    """Scores of ``model(source, target)["prediction"]`` against the target (module docstring),
    with frames resized (antialiased) to the model's ``input_size`` where they differ.
    ``ValueError`` when no clip is longer than ``gap`` frames."""
    if gap < 1 or every < 1:
        raise ValueError(f"gap and every must be >= 1, got gap={gap}, every={every}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(("recon_l1", "recon_ssim", "copy_l1", "copy_ssim"), 0.0)
    grad_pred = grad_target = 0.0
    count = 0
    pairs = list(frame_pairs(clips, gap, every))
    if not pairs:
        raise ValueError(f"no clip has more than gap={gap} frames: no pairs to reconstruct")
    for start in range(0, len(pairs), batch_size):
        chunk = np.stack([np.stack(p) for p in pairs[start : start + batch_size]])
        x = torch.from_numpy(chunk).to(device).permute(0, 1, 4, 2, 3).float() / 255
        size = tuple(getattr(model, "input_size", x.shape[-2:]))
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x.flatten(0, 1), size, mode="bilinear", antialias=True)
            x = x.clamp(0, 1).unflatten(0, (-1, 2))
        source, target = x[:, 0], x[:, 1]
        pred = model(source, target)["prediction"].float().clamp(0, 1)
        for name, guess in (("recon", pred), ("copy", source)):
            sums[f"{name}_l1"] += (guess - target).abs().mean(dim=(1, 2, 3)).sum().item()
            sums[f"{name}_ssim"] += ssim(guess, target, 11).mean(dim=(1, 2, 3)).sum().item()
        grad_pred += _gradient_energy(pred).item()
        grad_target += _gradient_energy(target).item()
        count += len(x)
    model.train(was_training)
    scores = {k: v / count for k, v in sums.items()}
    scores["recon_sharpness"] = grad_pred / max(grad_target, 1e-12)
    return scores
