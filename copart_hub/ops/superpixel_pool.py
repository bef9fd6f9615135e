"""Superpixel pooling / unpooling as layers, for hard label maps or SSN's soft association.

Other networks use them to average features (or part probabilities) inside superpixels and
paint them back, which snaps predictions to image boundaries.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .slic import SoftAssociation


def _check(x: Tensor, labels: Tensor) -> None:
    if x.ndim != 4 or labels.ndim != 3:
        raise ValueError(
            f"expected features [B, C, H, W] and labels [B, H, W], got {tuple(x.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if x.shape[0] != labels.shape[0] or x.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            f"features {tuple(x.shape)} and labels {tuple(labels.shape)} differ in size"
        )
    if labels.dtype not in (torch.int32, torch.int64) or (labels.numel() and labels.min() < 0):
        raise ValueError("labels must be non-negative integer superpixel ids")


def superpixel_pool(x: Tensor, labels: Tensor, num_spixels: int | None = None) -> Tensor:
    """Mean of ``x`` ``[B, C, H, W]`` over each superpixel id of ``labels`` ``[B, H, W]``.

    Returns ``[B, C, S]`` with ``S = num_spixels`` (default: max id + 1); empty ids give 0.
    """
    _check(x, labels)
    b, c = x.shape[:2]
    s = int(num_spixels if num_spixels is not None else labels.max() + 1)
    idx = labels.reshape(b, 1, -1).long()
    if s <= int(idx.max()):
        raise ValueError(f"labels contain id {int(idx.max())} >= num_spixels={s}")
    sums = x.new_zeros(b, c, s).scatter_add(2, idx.expand(-1, c, -1), x.reshape(b, c, -1))
    counts = x.new_zeros(b, 1, s).scatter_add(2, idx, torch.ones_like(idx, dtype=x.dtype))
    return sums / counts.clamp_min(1)


def superpixel_unpool(values: Tensor, labels: Tensor) -> Tensor:
    """Paint superpixel values ``[B, C, S]`` back to pixels: ``[B, C, H, W]``."""
    if values.ndim != 3 or labels.ndim != 3 or values.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected values [B, C, S] and labels [B, H, W], got "
            f"{tuple(values.shape)} and {tuple(labels.shape)}"
        )
    b, c, _ = values.shape
    idx = labels.reshape(b, 1, -1).long().expand(-1, c, -1)
    return torch.gather(values, 2, idx).view(b, c, *labels.shape[-2:])


class SuperpixelPool(nn.Module):
    """``(x, spixels) -> [B, C, S]``; ``spixels`` is a label map or a :class:`SoftAssociation`."""

    def forward(self, x: Tensor, spixels: Tensor | SoftAssociation) -> Tensor:
        if isinstance(spixels, SoftAssociation):
            return spixels.pool(x)
        return superpixel_pool(x, spixels)


class SuperpixelUnpool(nn.Module):
    """``(values [B, C, S], spixels) -> [B, C, H, W]`` (soft decoding for an association)."""

    def forward(self, values: Tensor, spixels: Tensor | SoftAssociation) -> Tensor:
        if isinstance(spixels, SoftAssociation):
            return spixels.unpool(values)
        return superpixel_unpool(values, spixels)
