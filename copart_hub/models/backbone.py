"""timm feature backbones by name (CNN or ViT), never downloading weights.

Weights come from a local file only (``weights_file``: a timm/torchvision state dict in
``.safetensors``/``.pth``/``.bin``), loaded through timm's own adapters (classifier removal,
ViT position-embedding resizing). Channels, strides and normalisation are exposed so models can
store them in their config.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn


class TimmBackbone(nn.Module):
    """Multi-scale features of a timm model: ``[B, 3, H, W] -> list of [B, C_i, H/r_i, W/r_i]``.

    Args:
        name: any timm model name, e.g. ``resnet50`` or ``vit_small_patch16_224``.
        out_indices: feature levels to return (timm ``features_only`` indices; negative allowed).
        weights_file: optional local weight file; nothing is ever downloaded.
        kwargs: passed to ``timm.create_model`` (e.g. ``img_size`` for ViTs).
    """

    def __init__(
        self,
        name: str,
        out_indices: tuple[int, ...] = (-1,),
        weights_file: str | Path | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        import timm  # lazily: importing timm costs seconds, and only backbone models need it

        if name not in timm.list_models():
            raise ValueError(f"unknown timm model {name!r}")
        if weights_file is not None and not Path(weights_file).is_file():
            raise FileNotFoundError(f"backbone weights file {weights_file} does not exist")
        overlay = {"file": str(weights_file), "source": ""} if weights_file else None
        self.body = timm.create_model(
            name,
            pretrained=weights_file is not None,
            pretrained_cfg_overlay=overlay,
            features_only=True,
            out_indices=tuple(out_indices),
            **kwargs,
        )
        info = self.body.feature_info
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        cfg = self.body.pretrained_cfg
        self.mean: tuple[float, ...] = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std: tuple[float, ...] = tuple(cfg.get("std", (0.229, 0.224, 0.225)))

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))
