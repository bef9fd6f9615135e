"""Dense descriptor networks trained by dense equivariance with descriptor vector exchange
(Thewlis et al., ICCV 2019; loss in :mod:`copart_hub.losses.dense_equivariance`).

A small U-shaped CNN maps an image to unit descriptors at half its resolution. Trained from
scratch on an unlabelled collection (random warps of each image, exchanged through another
image), the descriptors of the same object point agree across instances: matching them carries
a point of one face onto the same point of another (:mod:`copart_hub.correspondence`),
the cross-instance correspondence our part models lack without pretrained features.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hub.base import CopartModel
from ..hub.registry import register_architecture, register_model
from .part_base import MAX_WIDTH, check_int

PAPER_URL = "https://arxiv.org/abs/1908.06427"


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


@register_architecture("dve")
class DenseDescriptorNet(
    CopartModel,
    paper_url=PAPER_URL,
    pipeline_tag="image-feature-extraction",
    tags=["descriptors", "dve"],
):
    """Unit descriptors ``[B, descriptor_dim, H/2, W/2]`` of normalised images ``[B, 3, H, W]``
    (H, W multiples of 8).

    Args:
        descriptor_dim: channels of a descriptor.
        width: channels of the first stage; the others have 2x, 4x and 4x.
        input_size: ``(H, W)`` the model was trained at (what pipelines resize to).
        image_mean, image_std: per-channel input normalisation of [0, 1] RGB.
    """

    card_pipeline_tag: ClassVar[str] = "image-feature-extraction"

    def __init__(
        self,
        descriptor_dim: int = 32,
        width: int = 32,
        input_size: tuple[int, int] = (64, 64),
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        check_int("descriptor_dim", descriptor_dim, 1, MAX_WIDTH)
        check_int("width", width, 1, MAX_WIDTH // 4)
        self.descriptor_dim = descriptor_dim
        self.input_size = tuple(input_size)
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        w = width
        self.stage1 = nn.Sequential(_conv(3, w), _conv(w, w))
        self.stage2 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))
        self.stage3 = nn.Sequential(
            _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w), _conv(4 * w, 4 * w)
        )
        self.stage4 = nn.Sequential(_conv(4 * w, 4 * w, 2), _conv(4 * w, 4 * w))
        self.up3 = _conv(8 * w, 4 * w)
        self.up2 = _conv(6 * w, 2 * w)
        self.head = nn.Conv2d(2 * w, descriptor_dim, 1)

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` normalised -> ``[B, descriptor_dim, H/2, W/2]`` unit descriptors."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        if images.shape[-2] % 8 or images.shape[-1] % 8:
            raise ValueError(f"H and W must be multiples of 8, got {tuple(images.shape[-2:])}")
        half = self.stage2(self.stage1(images))
        quarter = self.stage3(half)
        eighth = self.stage4(quarter)
        quarter = self.up3(torch.cat([quarter, F.interpolate(eighth, scale_factor=2)], 1))
        half = self.up2(torch.cat([half, F.interpolate(quarter, scale_factor=2)], 1))
        return F.normalize(self.head(half), dim=1)


register_model(
    "dve_small", "dve", "32-d dense descriptors at half resolution, 64x64 input", width=32
)
