"""SSN: Superpixel Sampling Networks (Jampani et al., ECCV 2018).

``SSN_deep`` learns 15 pixel-feature channels with a small CNN and appends them to the scaled
XYLab input (20 channels in all); ``SSN_pix`` (``deep=False``) clusters XYLab directly and has
no parameters. Superpixels come from :func:`copart_hub.ops.slic.differentiable_slic`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hub.base import CopartModel
from ..hub.registry import register_architecture, register_model
from ..ops.connectivity import enforce_connectivity
from ..ops.slic import (
    COLOR_SCALE,
    SoftAssociation,
    differentiable_slic,
    position_scale,
    xylab_features,
)
from ..processing import bilinear_taps, bilinear_window
from .part_base import MAX_WIDTH, check_int

PAPER_URL = "https://arxiv.org/abs/1807.10174"
#: inference on more pixels than this runs the feature CNN in tiles (same result, less memory)
TILE_PIXELS = 512 * 512
TILE = 256  # tile side; a multiple of 4, so that the tiles' pooling grids are the image's
HALO = 48  # context added around a tile (> the CNN's receptive-field radius, ~22 px)


def _conv_norm_relu(cin: int, cout: int, norm: str) -> nn.Sequential:
    norms = {"batch": nn.BatchNorm2d, "none": nn.Identity}
    if norm not in norms:
        raise ValueError(f"norm must be one of {sorted(norms)}, got {norm!r}")
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), norms[norm](cout), nn.ReLU(inplace=True)
    )


class SSNFeatureNet(nn.Module):
    """The SSN_deep CNN: 3 stages of two conv-BN-ReLU, multi-scale concat, 3x3 to ``out_dim``.

    ``norm="none"`` drops BatchNorm (batch-size independent; used to test data parallelism on
    CPU, where SyncBatchNorm is unavailable).
    """

    def __init__(
        self, in_dim: int = 5, hidden_dim: int = 64, out_dim: int = 15, norm: str = "batch"
    ) -> None:
        super().__init__()

        def stage(cin: int, pool: bool) -> nn.Sequential:
            layers = [nn.MaxPool2d(3, 2, padding=1)] if pool else []
            layers += [
                _conv_norm_relu(cin, hidden_dim, norm),
                _conv_norm_relu(hidden_dim, hidden_dim, norm),
            ]
            return nn.Sequential(*layers)

        self.stage1 = stage(in_dim, pool=False)
        self.stage2 = stage(hidden_dim, pool=True)
        self.stage3 = stage(hidden_dim, pool=True)
        self.head = nn.Conv2d(in_dim + 3 * hidden_dim, out_dim, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=1e-3)  # official init N(0, 0.001)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_dim, H, W]`` -> ``[B, out_dim, H, W]`` (ReLU features).

        Without autograd, inputs over ``TILE_PIXELS`` run in tiles (:meth:`forward_tiled`).
        """
        if not torch.is_grad_enabled() and x.shape[-2] * x.shape[-1] > TILE_PIXELS:
            return self.forward_tiled(x)
        size = x.shape[-2:]
        c2 = self.stage1(x)
        c4 = self.stage2(c2)
        c6 = self.stage3(c4)
        up = [F.interpolate(c, size=size, mode="bilinear", align_corners=False) for c in (c4, c6)]
        return F.relu(self.head(torch.cat([x, c2, *up], dim=1)))

    def forward_tiled(self, x: Tensor, tile: int = TILE, halo: int = HALO) -> Tensor:
        """:meth:`forward` computed ``tile x tile`` pixels at a time, each with ``halo`` pixels
        of context: memory of the 197-channel intermediates is that of one tile. The pooled maps
        are upsampled with the whole image's bilinear taps, so the result equals the untiled
        one (to float rounding); ``tile`` and ``halo`` must be multiples of 4."""
        if tile % 4 or halo % 4 or tile < 4:
            raise ValueError(f"tile and halo must be positive multiples of 4, got {tile}, {halo}")
        height, width = x.shape[-2:]
        h4, w4 = (height + 1) // 2, (width + 1) // 2  # sizes after the first / second pooling
        h6, w6 = (h4 + 1) // 2, (w4 + 1) // 2
        taps4 = bilinear_taps(h4, height, x), bilinear_taps(w4, width, x)
        taps6 = bilinear_taps(h6, height, x), bilinear_taps(w6, width, x)
        out = x.new_empty(x.shape[0], self.head.out_channels, height, width)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                y0, x0 = max(0, top - halo), max(0, left - halo)
                crop = x[..., y0 : top + tile + halo, x0 : left + tile + halo]
                c2 = self.stage1(crop)
                c4 = self.stage2(c2)
                c6 = self.stage3(c4)
                # the tile and a 1-pixel ring (inside the image) for the head's 3x3 conv
                rows = slice(max(0, top - 1), min(height, top + tile + 1))
                cols = slice(max(0, left - 1), min(width, left + tile + 1))
                local = (
                    slice(rows.start - y0, rows.stop - y0),
                    slice(cols.start - x0, cols.stop - x0),
                )
                ups = [  # the crops of the pooled maps start at (y0, x0) / 2 and / 4
                    bilinear_window(c, taps, rows, cols, (y0 // f, x0 // f))
                    for c, taps, f in ((c4, taps4, 2), (c6, taps6, 4))
                ]
                parts = [crop[..., local[0], local[1]], c2[..., local[0], local[1]], *ups]
                head = F.relu(self.head(torch.cat(parts, dim=1)))
                dy, dx = top - rows.start, left - cols.start
                out[..., top : top + tile, left : left + tile] = head[
                    ..., dy : dy + min(tile, height - top), dx : dx + min(tile, width - left)
                ]
        return out


@dataclass
class SuperpixelOutput:
    """Result of :meth:`SSN.forward`."""

    association: SoftAssociation  # soft Q over the 9 neighbour cells
    features: Tensor  # [B, C, H, W] pixel features that were clustered
    centres: Tensor  # [B, C, S] superpixel features

    @property
    def labels(self) -> Tensor:
        """Hard superpixel ids ``[B, H, W]`` (before connectivity enforcement)."""
        return self.association.hard_labels()


@register_architecture("ssn")
class SSN(CopartModel, paper_url=PAPER_URL, tags=["superpixels", "ssn"]):
    """Superpixel Sampling Network.

    Args:
        deep: learn pixel features with :class:`SSNFeatureNet` (SSN_deep) or use XYLab (SSN_pix).
        feature_dim: learned channels appended to XYLab (15 in the paper).
        hidden_dim: width of the feature CNN (64 in the paper).
        n_spixels: default requested number of superpixels.
        n_iter: default number of SLIC associations (10 at test, 5 in training).
        color_scale: Lab multiplier (0.26).
        norm: ``"batch"`` (paper) or ``"none"`` in the feature CNN.
    """

    def __init__(
        self,
        deep: bool = True,
        feature_dim: int = 15,
        hidden_dim: int = 64,
        n_spixels: int = 400,
        n_iter: int = 10,
        color_scale: float = COLOR_SCALE,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_int("feature_dim", feature_dim, 1, MAX_WIDTH)
        check_int("hidden_dim", hidden_dim, 1, MAX_WIDTH)
        check_int("n_spixels", n_spixels, 1, 10**6)
        check_int("n_iter", n_iter, 1, 1000)
        self.deep = deep
        self.n_spixels = n_spixels
        self.n_iter = n_iter
        self.color_scale = color_scale
        self.feature_net = SSNFeatureNet(5, hidden_dim, feature_dim, norm) if deep else None

    def forward_features(
        self, image: Tensor, n_spixels: int, pos_scale: float | None = None
    ) -> Tensor:
        """Pixel features ``[B, 5 (+feature_dim), H, W]`` from RGB ``[B, 3, H, W]`` in [0, 1].

        ``pos_scale`` defaults to the test-time rule ``2.5 * spixels_per_axis / size``;
        the official training uses a fixed 0.25 on 201x201 patches.
        """
        h, w = image.shape[-2:]
        if pos_scale is None:
            pos_scale = position_scale(h, w, n_spixels)
        xylab = xylab_features(image, pos_scale, self.color_scale)
        if self.feature_net is None:
            return xylab
        return torch.cat([self.feature_net(xylab), xylab], dim=1)

    def forward(
        self,
        image: Tensor,
        n_spixels: int | None = None,
        n_iter: int | None = None,
        pos_scale: float | None = None,
    ) -> SuperpixelOutput:
        """Soft superpixels of RGB images ``[B, 3, H, W]`` in [0, 1]."""
        n_spixels = n_spixels or self.n_spixels
        feats = self.forward_features(image, n_spixels, pos_scale)
        assoc, centres = differentiable_slic(feats, n_spixels, n_iter or self.n_iter)
        return SuperpixelOutput(assoc, feats, centres)

    @torch.no_grad()
    def superpixels(
        self, image: Tensor, n_spixels: int | None = None, connectivity: bool = True
    ) -> list[np.ndarray]:
        """Final label maps (``int64 [H, W]`` per image), connectivity enforced by default."""
        out = self(image, n_spixels)
        labels = out.labels.cpu().numpy()
        if not connectivity:
            return list(labels)
        n = out.association.num_spixels
        return [enforce_connectivity(lab, n) for lab in labels]


register_model("ssn_deep", "ssn", "SSN with the learned 20-d pixel features (SSN_deep)", deep=True)
register_model("ssn_pix", "ssn", "SSN on XYLab features only (SSN_pix; no parameters)", deep=False)
