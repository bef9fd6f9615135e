"""Convolution blocks and the Hourglass U-Net of the MCS/FOMM networks (SPEC A2.2, A2.4).

Up-sampling blocks take the output size explicitly (nearest neighbour), so that odd sizes,
which ``AvgPool2d`` floors on the way down, come back exactly; for even sizes this is the
nearest x2 of the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SameBlock(nn.Sequential):
    """conv(k x k, same size) + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DownBlock(nn.Sequential):
    """conv3x3 + BN + ReLU + AvgPool2: ``[B, C_in, H, W]`` -> ``[B, C_out, H//2, W//2]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(*SameBlock(in_channels, out_channels), nn.AvgPool2d(2))


class UpBlock(nn.Module):
    """Nearest up-sampling to ``size`` (default x2) + conv3x3 + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = SameBlock(in_channels, out_channels)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        size = size or (2 * x.shape[-2], 2 * x.shape[-1])
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(bn(conv(relu(bn(x))))))``, 3x3 convs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def level_channels(block_expansion: int, max_features: int, level: int) -> int:
    """Channels at depth ``level``: ``min(max_features, block_expansion * 2**level)``."""
    return min(max_features, block_expansion * 2**level)


class Hourglass(nn.Module):
    """U-Net: ``num_blocks`` DownBlocks, as many UpBlocks, each output concatenated with the skip.

    ``[B, C_in, H, W]`` -> ``[B, block_expansion + C_in, H, W]``; channels double per level up to
    ``max_features`` (3 -> 64 -> ... -> 1024 for the MCS defaults). ``H, W >= 2**num_blocks``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        width = [in_channels] + [
            level_channels(block_expansion, max_features, i + 1) for i in range(num_blocks)
        ]
        self.down = nn.ModuleList(DownBlock(width[i], width[i + 1]) for i in range(num_blocks))
        up = []
        for i in reversed(range(num_blocks)):
            inputs = width[i + 1] * (1 if i == num_blocks - 1 else 2)
            up.append(UpBlock(inputs, level_channels(block_expansion, max_features, i)))
        self.up = nn.ModuleList(up)
        self.min_size = 2**num_blocks
        self.out_channels = block_expansion + in_channels

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is smaller than {self.min_size} (2**num_blocks)"
            )
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.up:
            skip = skips.pop()
            out = torch.cat([block(out, skip.shape[-2:]), skip], dim=1)
        return out
