"""Thin-plate-spline warps shared by the SCOPS (A1.4.2) and MCS/FOMM (A2.5) equivariance losses.

A ``TPSTransform`` is the map ``T(p) = A p + t + sum_i w_i U(p, c_i)`` on normalised ``(x, y)``
coordinates. It goes from the *output* (warped) frame to the *input* frame, as ``grid_sample``
needs: ``warp(x)(p) = x(T(p))``. Consequently a point ``p`` found in the warped image sits at
``T(p)`` in the original one, which is what ``transform_points`` returns (FOMM's
``warp_coordinates``).

Kernels ``U``:

* ``"r2logr"``: ``r^2 log r`` with ``r`` the Euclidean distance (0 at ``r = 0``), the classic
  TPS used by SCOPS (WarBean ``TPSGridGen``).
* ``"l1_r2logr"``: ``r^2 log(r + 1e-6)`` with ``r`` the L1 distance (FOMM's quirk, used by MCS).

``align_corners`` says which ``grid_sample`` convention the coordinates follow; the output pixel
grid is built to match (inclusive grid for ``True``, pixel centres for ``False``), so identity
parameters reproduce the image exactly either way. Both official codes were trained with
``align_corners=True`` semantics (torch < 1.3), the default here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from .coordinates import coordinate_grid

Kernel = Literal["r2logr", "l1_r2logr"]
PaddingMode = Literal["zeros", "border", "reflection"]
L1_KERNEL_EPS = 1e-6


def _check_points(points: Tensor, name: str) -> None:
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"{name} must be [B, N, 2], got shape {tuple(points.shape)}")


def _check_kernel(kernel: str) -> None:
    if kernel not in get_args(Kernel):
        raise ValueError(f"kernel must be one of {get_args(Kernel)}, got {kernel!r}")


def _kernel_values(points: Tensor, centres: Tensor, kernel: Kernel) -> Tensor:
    """``U(p_n, c_i)`` for points ``[B, N, 2]`` and centres ``[B, P, 2]`` -> ``[B, N, P]``."""
    diff = points[:, :, None] - centres[:, None]
    if kernel == "l1_r2logr":
        r = diff.abs().sum(-1)
        return r.pow(2) * torch.log(r + L1_KERNEL_EPS)
    s = diff.pow(2).sum(-1)  # r^2; r^2 log r = s log(s) / 2, 0 at s = 0 (finite gradient too)
    positive = s > 0
    return 0.5 * s * torch.log(torch.where(positive, s, torch.ones_like(s)))


def _kernel_gradients(points: Tensor, centres: Tensor, kernel: Kernel) -> Tensor:
    """``dU(p_n, c_i) / dp_n`` -> ``[B, N, P, 2]``."""
    diff = points[:, :, None] - centres[:, None]
    if kernel == "l1_r2logr":
        r = diff.abs().sum(-1, keepdim=True)
        du_dr = 2 * r * torch.log(r + L1_KERNEL_EPS) + r.pow(2) / (r + L1_KERNEL_EPS)
        return du_dr * diff.sign()
    s = diff.pow(2).sum(-1, keepdim=True)
    positive = s > 0
    factor = torch.log(torch.where(positive, s, torch.ones_like(s))) + 1
    return torch.where(positive, factor * diff, torch.zeros_like(diff))


def control_grid(
    points_per_side: int = 5,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Regular control points on ``[-1, 1]^2`` (both ends included) ``[n^2, 2]`` ``(x, y)``."""
    if points_per_side < 2:
        raise ValueError(f"points_per_side must be >= 2, got {points_per_side}")
    grid = coordinate_grid(points_per_side, points_per_side, "inclusive", device, dtype)
    return grid.reshape(-1, 2)


@dataclass(frozen=True, eq=False)
class TPSTransform:
    """A batch of TPS maps ``T(p) = A p + t + sum_i w_i U(p, c_i)`` (output -> input frame).

    Attributes:
        affine: ``[B, 2, 3]`` ``[A | t]`` acting on ``(x, y, 1)``.
        weights: ``[B, P, 2]`` kernel coefficients ``w_i`` (x and y displacement).
        centres: ``[B, P, 2]`` kernel centres ``c_i``.
        kernel: radial basis ``U`` (see the module docstring).
        align_corners: the ``grid_sample`` convention of the coordinates.
    """

    affine: Tensor
    weights: Tensor
    centres: Tensor
    kernel: Kernel = "r2logr"
    align_corners: bool = True

    def __post_init__(self) -> None:
        _check_kernel(self.kernel)
        if self.affine.ndim != 3 or self.affine.shape[1:] != (2, 3):
            raise ValueError(f"affine must be [B, 2, 3], got shape {tuple(self.affine.shape)}")
        _check_points(self.weights, "weights")
        _check_points(self.centres, "centres")
        if self.weights.shape != self.centres.shape or self.weights.shape[0] != self.batch_size:
            raise ValueError(
                f"weights {tuple(self.weights.shape)} and centres {tuple(self.centres.shape)} must "
                f"both be [B, P, 2] with B = {self.batch_size} (the affine batch)"
            )

    @property
    def batch_size(self) -> int:
        return self.affine.shape[0]

    @classmethod
    def from_affine(cls, affine: Tensor, align_corners: bool = True) -> TPSTransform:
        """A purely affine transform from ``[B, 2, 3]`` (no kernel terms)."""
        empty = affine.new_zeros(affine.shape[0], 0, 2)
        return cls(affine, empty, empty, align_corners=align_corners)

    @classmethod
    def from_control_points(
        cls,
        control_src: Tensor,
        control_dst: Tensor,
        kernel: Kernel = "r2logr",
        align_corners: bool = True,
    ) -> TPSTransform:
        """The interpolating TPS with ``T(control_dst[i]) = control_src[i]``.

        Args:
            control_src: ``[B, P, 2]`` where each control point samples from (input frame).
            control_dst: ``[B, P, 2]``, or ``[P, 2]`` shared by the batch (one solve), where
                each point lands (output frame); also the kernel centres. At least 3 points,
                not all collinear.

        The linear system ``[[U, Q], [Q^T, 0]] [w; a] = [src; 0]`` (``Q = [1, x, y]``) is solved
        in float64; an affine ``control_src`` is reproduced exactly (zero kernel weights).
        """
        _check_points(control_src, "control_src")
        b, p, _ = control_src.shape
        shared = control_dst.ndim == 2
        if control_dst.shape[-2:] != (p, 2) or (not shared and control_dst.shape != (b, p, 2)):
            raise ValueError(
                f"control_dst {tuple(control_dst.shape)} must be [B, P, 2] or [P, 2] with the "
                f"same B and P as control_src {tuple(control_src.shape)}"
            )
        dst = control_dst.double().unsqueeze(0) if shared else control_dst.double()
        if p < 3:
            raise ValueError(f"a TPS needs at least 3 control points, got {p}")
        _check_kernel(kernel)
        n = dst.shape[0]
        q = torch.cat([dst.new_ones(n, p, 1), dst], dim=-1)  # [n, P, 3]
        system = dst.new_zeros(n, p + 3, p + 3)
        system[:, :p, :p] = _kernel_values(dst, dst, kernel)
        system[:, :p, p:] = q
        system[:, p:, :p] = q.transpose(1, 2)
        rhs = torch.cat([control_src.double(), dst.new_zeros(b, 3, 2)], dim=1)  # [B, P + 3, 2]
        if shared:  # one system, the batch stacked as right-hand-side columns
            cols = rhs.permute(1, 0, 2).reshape(p + 3, 2 * b)
            solution = torch.linalg.solve(system[0], cols).view(p + 3, b, 2).permute(1, 0, 2)
        else:
            solution = torch.linalg.solve(system, rhs)
        solution = solution.to(control_src.dtype)
        weights, lin = solution[:, :p], solution[:, p:]  # lin rows: 1, x, y
        affine = torch.stack([lin[:, 1], lin[:, 2], lin[:, 0]], dim=-1)  # [B, 2, 3]
        centres = dst.to(control_src.dtype).expand(b, -1, -1)
        return cls(affine, weights, centres, kernel, align_corners)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TPSTransform:
        """The same transform with its tensors moved/cast."""
        return replace(
            self,
            affine=self.affine.to(device=device, dtype=dtype),
            weights=self.weights.to(device=device, dtype=dtype),
            centres=self.centres.to(device=device, dtype=dtype),
        )

    def transform_points(self, points: Tensor) -> Tensor:
        """``T(p)``: points ``[B, N, 2]`` in the output frame -> the input frame ``[B, N, 2]``."""
        _check_points(points, "points")
        self._check_batch(points, "points")
        out = points @ self.affine[:, :, :2].transpose(1, 2) + self.affine[:, None, :, 2]
        return out + _kernel_values(points, self.centres, self.kernel) @ self.weights

    def jacobian(self, points: Tensor) -> Tensor:
        """Analytic ``dT/dp`` at ``[B, N, 2]`` -> ``[B, N, 2, 2]`` (``J[..., i, j] = dT_i/dp_j``).

        Differentiable with respect to ``points`` (MCS affine equivariance, A2.5).
        """
        _check_points(points, "points")
        self._check_batch(points, "points")
        grads = _kernel_gradients(points, self.centres, self.kernel)  # [B, N, P, 2]
        kernel_part = torch.einsum("bpi,bnpj->bnij", self.weights, grads)
        return self.affine[:, None, :, :2] + kernel_part

    def grid(self, height: int, width: int) -> Tensor:
        """Sampling grid ``[B, H, W, 2]`` for ``F.grid_sample`` with this ``align_corners``."""
        convention = "inclusive" if self.align_corners else "pixel_centres"
        pixels = coordinate_grid(
            height, width, convention, self.affine.device, self.affine.dtype
        ).view(1, -1, 2)
        return self.transform_points(pixels.expand(self.batch_size, -1, -1)).view(
            self.batch_size, height, width, 2
        )

    def warp(self, x: Tensor, padding_mode: PaddingMode = "zeros") -> Tensor:
        """Bilinearly resample images or maps ``[B, C, H, W]``: ``out(p) = x(T(p))``.

        ``padding_mode="zeros"`` for SCOPS (logits and images), ``"border"`` for MCS frames.
        """
        if x.ndim != 4:
            raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
        self._check_batch(x, "x")
        if padding_mode not in get_args(PaddingMode):
            raise ValueError(
                f"padding_mode must be one of {get_args(PaddingMode)}, got {padding_mode!r}"
            )
        grid = self.grid(*x.shape[-2:]).to(x)  # keep the transform on x's device (``to``)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=self.align_corners
        )

    def _check_batch(self, x: Tensor, name: str) -> None:
        if x.shape[0] != self.batch_size:
            raise ValueError(
                f"{name} has batch size {x.shape[0]} but the transform has {self.batch_size}"
            )


def tps_grid(
    control_src: Tensor,
    control_dst: Tensor,
    height: int,
    width: int,
    kernel: Kernel = "r2logr",
    align_corners: bool = True,
) -> Tensor:
    """``grid_sample`` grid ``[B, H, W, 2]`` of the TPS with ``T(control_dst) = control_src``."""
    tps = TPSTransform.from_control_points(control_src, control_dst, kernel, align_corners)
    return tps.grid(height, width)


def tps_transform_points(
    points: Tensor, control_src: Tensor, control_dst: Tensor, kernel: Kernel = "r2logr"
) -> Tensor:
    """Map ``[B, N, 2]`` output-frame points with the same TPS as ``tps_grid`` -> ``[B, N, 2]``."""
    return TPSTransform.from_control_points(control_src, control_dst, kernel).transform_points(
        points
    )


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None
) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low


def random_scops_tps(
    batch_size: int,
    *,
    jitter: float = 0.01,
    max_rotation_deg: float = 60.0,
    scale_range: tuple[float, float] = (0.7, 2.0),
    max_translation: float = 0.1,
    points_per_side: int = 5,
    align_corners: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TPSTransform:
    """SCOPS random TPS with a similarity component (A1.4.2), one draw per sample.

    The 5x5 control grid ``c`` (output frame) is jittered by ``U(-jitter, jitter)`` and moved by a
    similarity to the input frame: ``src = s R(theta) (c + e) + t`` with ``theta ~ U(+-60 deg)``,
    ``t ~ U(+-0.1)^2`` and ``s ~ U(1/scale_range[1], 1/scale_range[0])`` (the official config's
    ``random_scale_low/high``; s is inverted because the map goes target -> source, so the
    apparent zoom is in ``scale_range``). Sampling runs on the CPU with ``generator``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    dst = control_grid(points_per_side, dtype=torch.float64)  # [P, 2], shared by the batch
    noisy = dst + _uniform((batch_size, *dst.shape), -jitter, jitter, generator)
    theta = _uniform((batch_size,), -1, 1, generator) * math.radians(max_rotation_deg)
    scale = _uniform((batch_size,), 1 / high, 1 / low, generator)
    shift = _uniform((batch_size, 1, 2), -max_translation, max_translation, generator)
    cos, sin = torch.cos(theta) * scale, torch.sin(theta) * scale
    s_rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    src = noisy @ s_rot.transpose(1, 2) + shift
    tps = TPSTransform.from_control_points(src, dst, "r2logr", align_corners)
    return tps.to(device, dtype or torch.get_default_dtype())


def random_mcs_tps(
    batch_size: int,
    *,
    sigma_affine: float = 0.05,
    sigma_tps: float = 0.005,
    points_per_side: int = 5,
    align_corners: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TPSTransform:
    """MCS/FOMM random transform (A2.5): ``[I | 0] + N(0, sigma_affine^2)`` plus an L1 TPS.

    The kernel coefficients are ``N(0, sigma_tps^2)``, one per control point of the 5x5 grid and
    shared by x and y (FOMM adds the same scalar displacement to both coordinates).
    Sampling runs on the CPU with ``generator``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    noise = torch.randn(batch_size, 2, 3, generator=generator, dtype=torch.float64)
    affine = torch.eye(2, 3, dtype=torch.float64) + sigma_affine * noise
    centres = control_grid(points_per_side, dtype=torch.float64).expand(batch_size, -1, -1)
    coeffs = torch.randn(batch_size, centres.shape[1], 1, generator=generator, dtype=torch.float64)
    weights = (sigma_tps * coeffs).expand(-1, -1, 2)
    tps = TPSTransform(affine, weights, centres, "l1_r2logr", align_corners)
    return tps.to(device, dtype or torch.get_default_dtype())
