"""Anti-aliased downsampling and image pyramids (MCS/FOMM, SPEC A2.2 and A2.5).

Downsampling by ``scale`` = 1/n (n an integer) is a Gaussian blur with
``sigma = (1 / scale - 1) / 2`` and an odd kernel of ``2 round(4 sigma) + 1`` taps (kornia's
separable ``gaussian_blur2d``), followed by keeping every n-th pixel starting at the first one,
so an axis of ``N`` pixels gives ``ceil(N / n)``. For 0.25 this is sigma 1.5 and 13 taps.

The border is padded by replication by default, which is defined for any image size and does
not darken the edges; the official code pads with zeros (``border="constant"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from kornia.filters import gaussian_blur2d
from torch import Tensor, nn

Border = Literal["replicate", "reflect", "constant"]
PYRAMID_SCALES = (1.0, 0.5, 0.25, 0.125)


def _stride(scale: float) -> int:
    """The integer step ``1 / scale``; any other scale is an error."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    stride = round(1 / scale)
    if abs(stride * scale - 1) > 1e-6:
        raise ValueError(f"1 / scale must be an integer, got scale {scale}")
    return stride


def antialias_downsample(x: Tensor, scale: float, border: Border = "replicate") -> Tensor:
    """Blur then stride ``[B, C, H, W]`` -> ``[B, C, ceil(H scale), ceil(W scale)]``.

    ``scale == 1`` returns ``x`` unchanged.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    if border not in get_args(Border):
        raise ValueError(f"border must be one of {get_args(Border)}, got {border!r}")
    stride = _stride(scale)
    if stride == 1:
        return x
    sigma = (stride - 1) / 2
    size = 2 * round(4 * sigma) + 1
    blurred = gaussian_blur2d(x, (size, size), (sigma, sigma), border_type=border)
    return blurred[..., ::stride, ::stride]


class AntiAliasDownsample(nn.Module):
    """Module form of :func:`antialias_downsample` (no parameters, nothing in the state dict)."""

    def __init__(self, scale: float, border: Border = "replicate") -> None:
        super().__init__()
        _stride(scale)
        self.scale = scale
        self.border = border

    def forward(self, x: Tensor) -> Tensor:
        return antialias_downsample(x, self.scale, self.border)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, border={self.border!r}"


def image_pyramid(
    x: Tensor, scales: Sequence[float] = PYRAMID_SCALES, border: Border = "replicate"
) -> list[Tensor]:
    """``[B, C, H, W]`` -> one anti-aliased copy per scale (each made from ``x`` directly)."""
    return [antialias_downsample(x, s, border) for s in scales]
