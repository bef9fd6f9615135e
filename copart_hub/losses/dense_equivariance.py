"""Dense equivariant descriptors (Thewlis et al., ICCV 2017: "Unsupervised learning of object
frames by dense equivariant image labelling"), with descriptor vector exchange (Thewlis et al.,
ICCV 2019: "Unsupervised learning of landmarks by descriptor vector exchange").

A network maps an image to unit descriptors ``[B, C, h, w]``. For a pair of one image and its
random warp, each descriptor of the warped image must match, by a softmax over all positions
of the original, the position it came from: the loss is the expected distance of the match.
With exchange, each descriptor of the warped image is first re-expressed as a soft
combination of the descriptors of a third image (another object of the category), so only what
two different objects share can carry the match: the cross-instance signal our co-part models
lack without pretrained features (benchmarks/mcs_ablations.md, "What a silhouette can align").
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.coordinates import coordinate_grid


def _check(name: str, x: Tensor, ndim: int) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")


def exchange_descriptors(query: Tensor, bank: Tensor, temperature: float) -> Tensor:
    """Each descriptor of ``query`` ``[B, C, h, w]`` as the softmax(similarity /
    ``temperature``)-weighted mean of the descriptors of ``bank`` ``[B, C, h', w']`` (one
    image per sample): ``[B, C, h, w]``."""
    _check("query", query, 4)
    _check("bank", bank, 4)
    if bank.shape[:2] != query.shape[:2]:
        raise ValueError(
            f"bank {tuple(bank.shape)} must share B, C with query {tuple(query.shape)}"
        )
    q, k = query.flatten(2).transpose(1, 2), bank.flatten(2).transpose(1, 2)  # [B, N, C]
    mixed = torch.softmax(q @ k.transpose(1, 2) / temperature, -1) @ k
    return mixed.transpose(1, 2).reshape(query.shape)


def dense_equivariance_loss(
    source: Tensor,
    target: Tensor,
    grid: Tensor,
    temperature: float = 0.05,
    exchange: Tensor | None = None,
) -> Tensor:
    """Expected distance, in descriptor pixels, between where each ``target`` descriptor
    matches in ``source`` and where it came from.

    Args:
        source: ``[B, C, h, w]`` unit descriptors of the original images.
        target: ``[B, C, h, w]`` unit descriptors of their warps.
        grid: ``[B, h, w, 2]`` where each target position comes from in the source, ``(x, y)``
            in [-1, 1] with ``align_corners=True`` (a ``grid_sample`` grid at the descriptors'
            resolution); positions that come from outside the source are left out.
        temperature: of the match softmax (and of the exchange).
        exchange: ``[B, C, h', w']`` descriptors of other images (DVE): target descriptors are
            re-expressed in them before matching. None: plain dense equivariance.

    Returns:
        Scalar: mean over the kept target positions of ``sum_u p(u | v) |u - grid(v)|``.
    """
    for name, x in (("source", source), ("target", target)):
        _check(name, x, 4)
    _check("grid", grid, 4)
    b, _, h, w = source.shape
    if target.shape != source.shape or grid.shape != (b, h, w, 2):
        raise ValueError(
            f"source {tuple(source.shape)}, target {tuple(target.shape)} and grid "
            f"{tuple(grid.shape)} must be [B, C, h, w], [B, C, h, w] and [B, h, w, 2]"
        )
    if exchange is not None:
        target = exchange_descriptors(target, exchange, temperature)
    s, t = source.flatten(2), target.flatten(2).transpose(1, 2)  # [B, C, N], [B, N, C]
    match = torch.softmax(t @ s / temperature, -1)  # [B, N target, N source]
    came_from = grid.reshape(b, -1, 2).to(source.dtype)
    positions = coordinate_grid(h, w, "inclusive", source.device).reshape(-1, 2).to(source.dtype)
    half_size = came_from.new_tensor([(w - 1) / 2, (h - 1) / 2])  # normalised -> pixels
    distance = torch.cdist(came_from * half_size, (positions * half_size)[None].expand(b, -1, -1))
    inside = (came_from.abs() <= 1).all(-1).to(source.dtype)
    expected = (match * distance).sum(-1)
    return (expected * inside).sum() / inside.sum().clamp_min(1)
