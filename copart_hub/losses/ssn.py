"""SSN training losses (SPEC A3.4): soft label reconstruction + hard-assignment compactness."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.slic import SoftAssociation

IGNORE_INDEX = 255


def one_hot_labels(
    labels: Tensor, num_classes: int | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``[B, H, W]`` integer labels -> one-hot ``[B, L, H, W]`` float and valid mask ``[B, H, W]``.

    Pixels equal to ``IGNORE_INDEX`` (255) get an all-zero row and ``valid=False``.
    """
    valid = labels != IGNORE_INDEX
    ids = torch.where(valid, labels, torch.zeros_like(labels)).long()
    n = num_classes or int(ids.max()) + 1
    onehot = torch.zeros(labels.shape[0], n, *labels.shape[1:], device=labels.device, dtype=dtype)
    onehot.scatter_(1, ids.unsqueeze(1), valid.unsqueeze(1).to(dtype))
    return onehot, valid


def label_reconstruction_loss(assoc: SoftAssociation, labels: Tensor) -> Tensor:
    """Cross-entropy between labels and their superpixel reconstruction ``Q (Q^T R)``.

    Superpixel label histograms are association-weighted means of the one-hot labels, decoded
    back to pixels with the soft association, clamped at 0, shifted by 1e-10 and renormalised.
    Args:
        labels: ``[B, H, W]`` segment ids (255 = ignore).
    """
    onehot, valid = one_hot_labels(labels, dtype=assoc.q.dtype)
    recon = assoc.unpool(assoc.pool(onehot)).clamp_min(0) + 1e-10
    recon = recon / recon.sum(1, keepdim=True)
    nll = -(onehot * recon.log()).sum(1)
    return nll[valid].mean() if valid.any() else nll.sum() * 0


def compactness_loss(assoc: SoftAssociation, xy: Tensor) -> Tensor:
    """Caffe ``EuclideanLoss`` between pixel positions and their *hard* superpixel's position.

    Superpixel positions are soft (association-weighted) means of ``xy``; they are smeared back
    with the hard assignment (no gradient through the argmax). Sum of squares / (2 B).
    Args:
        xy: ``[B, 2, H, W]`` scaled pixel positions (the first two XYLab channels).
    """
    centres = assoc.pool(xy)  # [B, 2, S]
    hard = assoc.hard_labels().flatten(1)  # [B, N]
    smeared = torch.gather(centres, 2, hard.unsqueeze(1).expand(-1, 2, -1))
    return (xy.flatten(2) - smeared).pow(2).sum() / (2 * xy.shape[0])


def ssn_loss(
    assoc: SoftAssociation, labels: Tensor, xy: Tensor, compact_weight: float = 1e-5
) -> tuple[Tensor, dict[str, float]]:
    """``L = L_recon + compact_weight * L_compact``; returns the loss and its parts."""
    recon = label_reconstruction_loss(assoc, labels)
    compact = compactness_loss(assoc, xy)
    loss = recon + compact_weight * compact
    return loss, {"loss": loss.item(), "recon": recon.item(), "compact": compact.item()}
