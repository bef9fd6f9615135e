"""Normalised coordinate grids, part centres and soft-argmax (SPEC A1.4.1, A2.2).

Coordinates are ``(x, y)`` in ``[-1, 1]``, x along the width and y along the height, the order
``F.grid_sample`` uses. Three conventions for pixel ``i`` of an axis of ``n`` pixels:

* ``"half_open"``: ``2 i / n - 1`` in ``[-1, 1)``, the SCOPS grid (``arange(W)/W*2-1``). The
  official SCOPS code transposes it when H != W; here x always has W entries and y H.
* ``"inclusive"``: ``2 i / (n - 1) - 1`` in ``[-1, 1]``, the MCS/FOMM grid; pixel coordinates of
  ``grid_sample(..., align_corners=True)``.
* ``"pixel_centres"``: ``(2 i + 1) / n - 1``; pixel coordinates of ``align_corners=False``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

Convention = Literal["half_open", "inclusive", "pixel_centres"]
CONCENTRATION_EPS = 1e-3  # SCOPS smoothing of the part maps before normalising them


def coordinate_axis(
    n: int,
    convention: Convention,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Normalised coordinates of the ``n`` pixels of one axis ``[n]``."""
    if convention not in get_args(Convention):
        raise ValueError(f"convention must be one of {get_args(Convention)}, got {convention!r}")
    if n < 1 or (convention == "inclusive" and n < 2):
        raise ValueError(f"an axis needs at least {2 if convention == 'inclusive' else 1} pixels")
    i = torch.arange(n, device=device, dtype=dtype or torch.get_default_dtype())
    if convention == "half_open":
        return i * (2 / n) - 1
    if convention == "inclusive":
        return i * (2 / (n - 1)) - 1
    return (2 * i + 1) / n - 1


def coordinate_grid(
    height: int,
    width: int,
    convention: Convention,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``[H, W, 2]`` grid of ``(x, y)``: ``grid[i, j] = (x_j, y_i)``."""
    ys = coordinate_axis(height, convention, device, dtype)
    xs = coordinate_axis(width, convention, device, dtype)
    return torch.stack(
        [xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width)], -1
    )


def _check_maps(x: Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be [B, K, H, W], got shape {tuple(x.shape)}")


def soft_argmax(probs: Tensor, convention: Convention = "inclusive") -> Tensor:
    """Expected ``(x, y)`` under each map ``[B, K, H, W]`` -> ``[B, K, 2]``.

    The maps are used as given (each should sum to 1 over H x W, e.g. from ``spatial_softmax``).
    The default grid is the inclusive one of MCS (A2.2).
    """
    _check_maps(probs, "probs")
    grid = coordinate_grid(*probs.shape[-2:], convention, probs.device, probs.dtype)
    return torch.einsum("bkhw,hwc->bkc", probs, grid)


def spatial_softmax(heatmaps: Tensor, temperature: float = 0.1) -> Tensor:
    """Softmax over the H x W positions of each map of ``heatmaps / temperature`` [B, K, H, W]."""
    _check_maps(heatmaps, "heatmaps")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax((heatmaps / temperature).flatten(2), dim=-1).view_as(heatmaps)


def _smoothed(probs: Tensor, eps: float) -> Tensor:
    """``(P + eps) / sum_uv (P + eps)`` per map (SCOPS normalisation)."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    p = probs + eps
    return p / p.sum((-2, -1), keepdim=True)


def part_centres(
    probs: Tensor, eps: float = CONCENTRATION_EPS, convention: Convention = "half_open"
) -> Tensor:
    """SCOPS part centres ``[B, K, 2]`` ``(x, y)`` of maps ``[B, K, H, W]`` (A1.4.1).

    Each map is smoothed and normalised, ``(P + eps) / sum(P + eps)``, before the weighted mean.
    Pass the part channels only (background excluded). Gradients flow into ``probs``.
    """
    _check_maps(probs, "probs")
    return soft_argmax(_smoothed(probs, eps), convention)


def concentration_loss(
    part_probs: Tensor, eps: float = CONCENTRATION_EPS, convention: Convention = "half_open"
) -> Tensor:
    """SCOPS geometric concentration loss (A1.4.1) of part maps ``[B, K, H, W]`` -> scalar.

    ``L = 1/B^2 sum_b sum_k sum_uv p~_k(u, v) ||(u, v) - c_k||^2`` with ``p~_k`` the smoothed,
    normalised map and ``c_k`` its centre (not detached). The caller excludes the background
    (``probs[:, 1:]``). The official code divides by B twice; the official loss weight (10)
    assumes that, so it is kept.
    """
    _check_maps(part_probs, "part_probs")
    p = _smoothed(part_probs, eps)
    centres = soft_argmax(p, convention)  # [B, K, 2]
    grid = coordinate_grid(*p.shape[-2:], convention, p.device, p.dtype)  # [H, W, 2]
    sq_dist = (grid[None, None] - centres[:, :, None, None]).pow(2).sum(-1)  # [B, K, H, W]
    b = part_probs.shape[0]
    return (p * sq_dist).sum() / (b * b)
