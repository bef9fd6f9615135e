"""SCOPS losses (SPEC A1.4): equivariance, semantic consistency with a learned part basis, and
orthonormality of the basis. The concentration loss lives in ``copart_hub.ops.coordinates``.

Channel 0 of the ``K + 1`` logits is the background. Losses that act on parts only take
``K``-channel part maps (``probs[:, 1:]``), so excluding the background is the caller's explicit
choice and a ``K + 1``-channel tensor is rejected by the shape checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.coordinates import part_centres
from ..ops.warps import TPSTransform

ORTHONORMAL_EPS = 1e-6


def equivariance_loss(
    logits: Tensor, logits_transformed: Tensor, warp: TPSTransform
) -> tuple[Tensor, Tensor]:
    """The two SCOPS equivariance terms (A1.4.2).

    Args:
        logits: ``[B, K + 1, H, W]`` logits ``z`` of the original images.
        logits_transformed: ``[B, K + 1, H, W]`` logits ``z'`` of the warped (and colour-jittered)
            images.
        warp: the spatial transform ``T_s`` applied to the images.

    Returns:
        ``kl``: ``KL(softmax(T(z).detach()) || softmax(z'))``, the elementwise mean over all
        ``B (K + 1) H W`` terms (``reduction='mean'``, the PyTorch 0.4 default of the official
        code; *not* ``'batchmean'``). The logits are warped with zero padding, so pixels from
        outside the frame become uniform.
        ``centre_mse``: MSE between the part centres (``[1:]``, eps-smoothed) of ``softmax(z')``
        and of ``softmax(T(z))``; the target branch is *not* detached, as in the official code.
    """
    if logits.ndim != 4 or logits.shape[1] < 2:
        raise ValueError(f"logits must be [B, K + 1, H, W] with K >= 1, got {tuple(logits.shape)}")
    if logits_transformed.shape != logits.shape:
        raise ValueError(
            f"logits_transformed {tuple(logits_transformed.shape)} must match logits "
            f"{tuple(logits.shape)}"
        )
    target = warp.warp(logits, padding_mode="zeros")
    log_probs = F.log_softmax(logits_transformed, dim=1)
    p = F.softmax(target.detach(), dim=1)
    kl = (torch.xlogy(p, p) - p * log_probs).mean()  # nn.KLDivLoss(reduction="mean")
    centres = part_centres(log_probs.exp()[:, 1:])
    target_centres = part_centres(F.softmax(target, dim=1)[:, 1:])
    return kl, F.mse_loss(centres, target_centres)


def _check_basis(basis_raw: Tensor) -> None:
    if basis_raw.ndim != 2:
        raise ValueError(f"basis_raw must be [K, C], got shape {tuple(basis_raw.shape)}")


def semantic_consistency_loss(
    part_probs: Tensor, features: Tensor, basis_raw: Tensor, saliency: Tensor | None = None
) -> Tensor:
    """SCOPS semantic consistency (A1.4.3) -> scalar.

    ``mean_{b,c,u,v} (sum_k P_k(u, v) W_kc - V_c(u, v) D(u, v))^2`` with ``W = ReLU(basis_raw)``.

    Args:
        part_probs: ``[B, K, H, W]`` part maps **without** the background channel
            (``softmax(logits)[:, 1:]``).
        features: ``[B, C, H, W]`` reference features ``V`` at the same resolution (detached here:
            they are a target, computed under ``no_grad`` in the official code).
        basis_raw: ``[K, C]`` raw basis ``w``; ReLU is applied here (idempotent, so the output of
            ``PartBasis`` may be passed too).
        saliency: ``[B, 1, H, W]`` saliency ``D`` in ``[0, 1]`` masking the targets, or ``None``
            for no masking. Where ``D = 0`` the target is 0, which a non-negative basis can only
            fit by moving the mass to the background: this is what forms the background.
    """
    _check_basis(basis_raw)
    if part_probs.ndim != 4 or features.ndim != 4:
        raise ValueError(
            f"part_probs and features must be [B, K, H, W] and [B, C, H, W], got "
            f"{tuple(part_probs.shape)} and {tuple(features.shape)}"
        )
    k, c = basis_raw.shape
    if part_probs.shape[1] != k:
        raise ValueError(
            f"part_probs has {part_probs.shape[1]} channels but the basis has {k} parts; pass the "
            "part channels only (probs[:, 1:]), the background is not part of the sum"
        )
    b, _, h, w = part_probs.shape
    if features.shape != (b, c, h, w):
        raise ValueError(
            f"features must be [B, C, H, W] = {(b, c, h, w)} (batch and size of part_probs, C of "
            f"the basis), got {tuple(features.shape)}"
        )
    target = features.detach()
    if saliency is not None:
        if saliency.shape != (b, 1, h, w):
            raise ValueError(
                f"saliency must be [B, 1, H, W] = {(b, 1, h, w)}, got {tuple(saliency.shape)}"
            )
        target = target * saliency
    recon = torch.einsum("bkhw,kc->bchw", part_probs, F.relu(basis_raw))
    return F.mse_loss(recon, target)


def background_loss(probs: Tensor, saliency: Tensor) -> Tensor:
    """The paper's separate saliency constraint (absent from the released code, SPEC A1.4.4)
    -> scalar: ``mean_{b,u,v} (P_0(u, v) - (1 - D(u, v)))^2``, the background channel of
    ``probs`` ``[B, K+1, H, W]`` against the complement of the saliency ``D`` ``[B, 1, H, W]``."""
    if probs.ndim != 4 or saliency.shape != (probs.shape[0], 1, *probs.shape[2:]):
        raise ValueError(
            f"probs must be [B, K+1, H, W] and saliency [B, 1, H, W] of the same B, H, W; got "
            f"{tuple(probs.shape)} and {tuple(saliency.shape)}"
        )
    return F.mse_loss(probs[:, :1], 1 - saliency.detach())


def orthonormality_loss(basis_raw: Tensor) -> Tensor:
    """``||W^ W^T - I_K||_F^2`` (a sum) with ``W^`` the row-normalised ``ReLU(basis_raw)`` [K, C].

    Rows are divided by ``||row||_2 + 1e-6`` (A1.4.3).
    """
    _check_basis(basis_raw)
    basis = F.relu(basis_raw)
    unit = basis / (basis.norm(dim=1, keepdim=True) + ORTHONORMAL_EPS)
    eye = torch.eye(basis.shape[0], device=basis.device, dtype=basis.dtype)
    return (unit @ unit.T - eye).pow(2).sum()


class PartBasis(nn.Module):
    """Learned non-negative part basis ``W = ReLU(w)`` ``[K, C]``, ``w`` initialised ``|N(0, 1)|``.

    The official code trains ``w`` with its own SGD (lr 0.01, momentum 0.9, weight decay 5e-4,
    no decay of the lr; A1.5).

    ``unit_rows`` (ours): ``W = s ReLU(w) / ||ReLU(w)||`` with one learned scale ``s`` shared by
    all parts (initialised ``sqrt(C)``). With free row norms, a part that covers background
    pixels (target 0) has its row shrunk by the semantic-consistency gradient until ReLU kills
    it; the part then costs nothing anywhere and spreads over the background like a second
    background channel. With rows of one shared norm, a part in the background always pays.
    """

    def __init__(self, num_parts: int, num_channels: int, unit_rows: bool = False) -> None:
        super().__init__()
        if num_parts < 1 or num_channels < 1:
            raise ValueError(
                f"num_parts and num_channels must be >= 1, got {num_parts} and {num_channels}"
            )
        self.w = nn.Parameter(torch.randn(num_parts, num_channels).abs())
        self.log_scale = None
        if unit_rows:
            self.log_scale = nn.Parameter(torch.tensor(0.5 * math.log(num_channels)))

    def forward(self) -> Tensor:
        """``W`` ``[K, C]``: ``ReLU(w)``, or its rows at the shared norm ``s`` (``unit_rows``)."""
        basis = F.relu(self.w)
        if self.log_scale is None:
            return basis
        unit = basis / (basis.norm(dim=1, keepdim=True) + ORTHONORMAL_EPS)
        return self.log_scale.exp() * unit


@dataclass
class ScopsLossWeights:
    """Loss weights of the released config ``exps/SCOPS_K8_retrain.json`` (A1.4, F.3).

    ``L = 10 L_con + 1000 L_eqv + 100 L_lmeqv + 1e4 L_sc + 0.1 L_on``. The official CLI defaults
    differ (``concentration=0.1``, ``equivariance=10``, ``semantic_consistency=0.1``, and a
    different reference layer and scale range); the JSON values are the ones that were trained.
    ``concentration`` assumes the official 1/B^2 normalisation of ``concentration_loss``.
    ``background`` weighs :func:`background_loss`, the paper's saliency constraint; the released
    code has none, hence 0 by default (the term is then not computed).
    """

    concentration: float = 10.0
    equivariance: float = 1000.0
    landmark_equivariance: float = 100.0
    semantic_consistency: float = 1e4
    orthonormality: float = 0.1
    background: float = 0.0

    def total(self, losses: dict[str, Tensor]) -> Tensor:
        """Weighted sum of the given terms, keyed by field name (absent terms are skipped)."""
        names = {f.name for f in fields(self)}
        unknown = set(losses) - names
        if unknown:
            raise ValueError(
                f"unknown loss terms {sorted(unknown)}; expected some of {sorted(names)}"
            )
        if not losses:
            raise ValueError("no loss terms given")
        return sum(getattr(self, name) * value for name, value in losses.items())
