"""Light decoders that bring a stride-32 timm encoder back to a fine output stride."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FPNDecoder(nn.Module):
    """Top-down feature pyramid (Lin et al., CVPR 2017) fused at its finest level.

    Each level gets a 1x1 lateral projection to ``channels``; from the coarsest level down, the
    running map is upsampled bilinearly and added to the next lateral; one 3x3 conv + BN + ReLU
    smooths the result. The output stride is that of the first (finest) input level.

    Args:
        in_channels: channels ``C_i`` of the encoder levels, finest first.
        channels: width ``D`` of the pyramid.

    Shapes: list of ``[B, C_i, H / r_i, W / r_i]`` -> ``[B, D, H / r_0, W / r_0]``.
    """

    def __init__(self, in_channels: list[int], channels: int = 64) -> None:
        super().__init__()
        if not in_channels or channels < 1:
            raise ValueError(f"need >= 1 level and channels >= 1, got {in_channels}, {channels}")
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        if len(features) != len(self.lateral):
            raise ValueError(f"expected {len(self.lateral)} feature levels, got {len(features)}")
        x = self.lateral[-1](features[-1])
        for feat, lateral in zip(features[-2::-1], list(self.lateral)[-2::-1], strict=True):
            x = F.interpolate(x, size=feat.shape[-2:], mode="bilinear", align_corners=False)
            x = x + lateral(feat)
        return self.smooth(x)
