"""SCOPS: Self-supervised Co-Part Segmentation (Hung et al., CVPR 2019).

Two architectures, both predicting K+1 part logits (channel 0 = background):

- ``scops`` (:class:`SCOPS`): as in the paper, a timm backbone dilated to output stride 8 (the
  official model is a dilated DeepLab-v2 ResNet-50) and the DeepLab-v2 classifier, the *sum* of
  four dilated 3x3 convolutions, weights N(0, 0.01).
- ``scops_fpn`` (:class:`SCOPSFPN`): the same backbone family at its native stride 32 with a
  light FPN decoder back to stride 4. Dilation makes the last two stages run on 4x and 16x more
  positions; this decoder gives finer part maps for a fraction of the cost (see
  ``benchmarks/bench_train_step.py``).

Losses live in :mod:`copart_hub.losses.scops`; training in ``copart_hub.training.tasks.scops``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..hub.registry import register_architecture, register_model
from .decoders import FPNDecoder
from .part_base import BackbonePartModel


class ASPPSum(nn.Module):
    """DeepLab-v2 classifier: ``sum_r conv3x3_dilation=r(x)`` -> ``[B, out, h, w]``."""

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r) for r in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(0)


@register_architecture("scops")
class SCOPS(BackbonePartModel, paper_url="https://arxiv.org/abs/1905.01298", tags=["scops"]):
    """Args:
    backbone: timm model name (default ``resnet18``: a BatchNorm ResNet trains stably from
        scratch on a few thousand images, unlike ViTs, and is cheap at 128-256 px).
    num_parts: K; the model predicts K+1 channels with channel 0 = background.
    input_size: ``(H, W)`` training / inference resolution.
    output_stride: backbone stride (8 as in SCOPS; ``None`` for backbones without the option,
        e.g. ViTs at 16).
    aspp_rates: dilations of the classifier (official: 6, 12, 18, 24 at 256 px).
    backbone_weights: optional local weight file, read once at construction.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_parts: int = 8,
        input_size: tuple[int, int] = (128, 128),
        output_stride: int | None = 8,
        aspp_rates: tuple[int, ...] = (3, 6, 9, 12),
        backbone_weights: str | None = None,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        feature_channels: int | None = None,
        feature_reduction: int | None = None,
    ) -> None:
        super().__init__()
        kwargs = {"output_stride": output_stride} if output_stride else {}
        (channels,) = self._init_backbone(
            backbone,
            num_parts,
            input_size,
            (-1,),
            backbone_weights,
            image_mean,
            image_std,
            feature_channels,
            feature_reduction,
            **kwargs,
        )
        self.classifier = ASPPSum(channels, num_parts + 1, tuple(aspp_rates))

    def forward_features(self, pixel_values: Tensor) -> Tensor:
        """Backbone features ``[B, C, H/s, W/s]``."""
        return self.encoder(pixel_values)[0]

    def forward_head(self, features: Tensor) -> Tensor:
        return self.classifier(features)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Normalised images ``[B, 3, H, W]`` -> part logits ``[B, K+1, H/s, W/s]``."""
        return self.forward_head(self.forward_features(pixel_values))


def _part_head(in_channels: int, num_parts: int) -> nn.Conv2d:
    """3x3 conv to K+1 logits, weights N(0, 0.01) as the official classifier."""
    head = nn.Conv2d(in_channels, num_parts + 1, 3, padding=1)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return head


@register_architecture("scops_fpn")
class SCOPSFPN(BackbonePartModel, paper_url="https://arxiv.org/abs/1905.01298", tags=["scops"]):
    """SCOPS on a stride-32 timm encoder with an FPN decoder to stride 4.

    Args:
        backbone: timm model name with ``features_only`` support.
        num_parts: K (K+1 output channels, 0 = background).
        input_size: ``(H, W)`` training / inference resolution.
        feature_indices: encoder levels fed to the decoder, finest first (timm indices; the
            default 1-4 are strides 4-32 for ResNets, RegNets and MobileNets).
        decoder_channels: FPN width.
        backbone_weights: optional local weight file, read once at construction.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_parts: int = 8,
        input_size: tuple[int, int] = (128, 128),
        feature_indices: tuple[int, ...] = (1, 2, 3, 4),
        decoder_channels: int = 64,
        backbone_weights: str | None = None,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        feature_channels: list[int] | None = None,
        feature_reduction: list[int] | None = None,
    ) -> None:
        super().__init__()
        channels = self._init_backbone(
            backbone,
            num_parts,
            input_size,
            tuple(feature_indices),
            backbone_weights,
            image_mean,
            image_std,
            feature_channels,
            feature_reduction,
        )
        self.decoder = FPNDecoder(channels, decoder_channels)
        self.classifier = _part_head(decoder_channels, num_parts)

    def forward_features(self, pixel_values: Tensor) -> Tensor:
        """Decoded features ``[B, D, H/4, W/4]``."""
        return self.decoder(self.encoder(pixel_values))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.classifier(features)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Normalised images ``[B, 3, H, W]`` -> part logits ``[B, K+1, H/4, W/4]``."""
        return self.forward_head(self.forward_features(pixel_values))


register_model("scops_resnet18", "scops", "SCOPS, timm resnet18 at stride 8 (from scratch)")
register_model(
    "scops_resnet50",
    "scops",
    "SCOPS, resnet50 at stride 8 (the paper's backbone size)",
    backbone="resnet50",
    input_size=(256, 256),
    aspp_rates=(6, 12, 18, 24),
)
register_model(
    "scops_fpn_resnet18", "scops_fpn", "SCOPS, timm resnet18 at stride 32 + FPN to stride 4"
)
register_model(
    "scops_fpn_regnetx_002",
    "scops_fpn",
    "SCOPS, timm regnetx_002 (2.3 M parameters) + FPN to stride 4",
    backbone="regnetx_002",
)
register_model(
    "scops_fpn_mobilenetv4",
    "scops_fpn",
    "SCOPS, timm mobilenetv4_conv_small (1.3 M parameters) + FPN to stride 4",
    backbone="mobilenetv4_conv_small",
)
