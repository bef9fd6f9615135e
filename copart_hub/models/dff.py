"""DFF: Deep Feature Factorization (Collins et al., ECCV 2018), a training-free part baseline.

Non-negative backbone features of an image collection are factorised with NMF into K+1
factors; a pixel's part is the factor that best explains its feature. The factor with the most
mass on the image border is put in channel 0 (background). ``fit`` learns the factors
(:func:`nmf`); inference solves for the non-negative loadings with the factors fixed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..hub.registry import register_architecture, register_model
from .part_base import BackbonePartModel

EPS = 1e-8


def nmf(
    v: Tensor, w: Tensor, h: Tensor, iters: int, update_w: bool = True
) -> tuple[Tensor, Tensor]:
    """Lee-Seung multiplicative updates for ``V ~ W H`` (all non-negative).

    Args:
        v: ``[..., C, N]`` data, w: ``[..., C, R]`` factors, h: ``[..., R, N]`` loadings.
        update_w: ``False`` keeps ``w`` fixed (non-negative least squares for ``h``).
    """
    for _ in range(iters):
        h = h * (w.transpose(-1, -2) @ v) / (w.transpose(-1, -2) @ w @ h + EPS)
        if update_w:
            w = w * (v @ h.transpose(-1, -2)) / (w @ (h @ h.transpose(-1, -2)) + EPS)
    return w, h


@register_architecture("dff")
class DFF(BackbonePartModel, paper_url="https://arxiv.org/abs/1806.10206", tags=["dff"]):
    """Args:
    backbone: timm model name; ``feature_index`` picks its feature level.
    num_parts: K (K+1 NMF factors, one of them background).
    input_size: ``(H, W)`` images are resized to.
    backbone_weights: optional local weight file (only read at construction; the weights
        are saved with the model, so this is reset to ``None`` in ``config.json``).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_parts: int = 8,
        input_size: tuple[int, int] = (256, 256),
        feature_index: int = -2,
        nmf_iters: int = 50,
        backbone_weights: str | None = None,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        feature_channels: int | None = None,
        feature_reduction: int | None = None,
    ) -> None:
        super().__init__()
        (channels,) = self._init_backbone(
            backbone,
            num_parts,
            input_size,
            (feature_index,),
            backbone_weights,
            image_mean,
            image_std,
            feature_channels,
            feature_reduction,
        )
        self.nmf_iters = nmf_iters
        self.register_buffer("factors", torch.full((channels, num_parts + 1), 1.0 / channels))

    def features(self, pixel_values: Tensor) -> Tensor:
        """Non-negative features ``[B, C, h, w]``."""
        return F.relu(self.encoder(pixel_values)[0])

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Log of the normalised NMF loadings: logits ``[B, K+1, h, w]``."""
        feats = self.features(pixel_values)
        b, _, hh, ww = feats.shape
        v = feats.flatten(2)
        h0 = torch.full((b, self.num_parts + 1, hh * ww), 0.5, device=v.device, dtype=v.dtype)
        _, h = nmf(v, self.factors.expand(b, -1, -1), h0, self.nmf_iters, update_w=False)
        h = h / (h.sum(1, keepdim=True) + EPS)
        return torch.log(h + 1e-6).view(b, -1, hh, ww)

    @torch.no_grad()
    def fit(
        self, batches: Iterable[Tensor], iters: int = 200, max_pixels: int = 200_000, seed: int = 0
    ) -> DFF:
        """Learn the K+1 factors from normalised image batches ``[B, 3, H, W]``."""
        feats = [self.features(x) for x in batches]
        if not feats:
            raise ValueError("fit needs at least one batch of images")
        all_px = torch.cat([f.flatten(2).transpose(0, 1).flatten(1) for f in feats], 1)  # [C, N]
        border = torch.cat([_border_mask(f).flatten() for f in feats])
        g = torch.Generator().manual_seed(seed)
        if all_px.shape[1] > max_pixels:
            keep = torch.randperm(all_px.shape[1], generator=g)[:max_pixels]
            all_px, border = all_px[:, keep], border[keep]
        r = self.num_parts + 1
        w0 = torch.rand(all_px.shape[0], r, generator=g).to(all_px) + 0.1
        h0 = torch.rand(r, all_px.shape[1], generator=g).to(all_px) + 0.1
        w, h = nmf(all_px, w0, h0, iters)
        share = h / (h.sum(0, keepdim=True) + EPS)
        order = torch.argsort(share[:, border].mean(1) - share[:, ~border].mean(1), descending=True)
        self.factors.copy_(w[:, order])
        return self


def _border_mask(feats: Tensor) -> Tensor:
    """``[B, h, w]`` bool mask of the outermost feature rows / columns."""
    b, _, h, w = feats.shape
    m = torch.zeros(b, h, w, dtype=torch.bool, device=feats.device)
    m[:, [0, -1], :] = True
    m[:, :, [0, -1]] = True
    return m


register_model("dff_resnet50", "dff", "DFF on timm resnet50 stage-3 features", backbone="resnet50")
register_model(
    "dff_vit_small",
    "dff",
    "DFF on ViT-S/16 tokens",
    backbone="vit_small_patch16_224",
    input_size=(224, 224),
    feature_index=-1,
)
