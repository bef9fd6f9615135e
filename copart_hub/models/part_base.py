"""Base class of part segmenters (SCOPS, motion co-segmentation, DFF, ...)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from ..hub.base import CopartModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: bounds of the sizes a (saved) config may ask for, checked before anything is allocated
MAX_SIDE = 4096  # pixels per side of ``input_size``
MAX_PARTS = 64
MAX_WIDTH = 4096  # channels of a layer


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an ``int`` in ``[low, high]``, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def check_input_size(input_size: Any) -> tuple[int, int]:
    """``(height, width)``, each side an integer in ``[1, MAX_SIDE]``."""
    if not isinstance(input_size, (list, tuple)) or len(input_size) != 2:
        raise ValueError(f"input_size must be (height, width), got {input_size!r}")
    return (
        check_int("input_size height", input_size[0], 1, MAX_SIDE),
        check_int("input_size width", input_size[1], 1, MAX_SIDE),
    )


class PartModel(CopartModel):
    """A model that maps an image to K+1 part logits (channel 0 = background).

    Subclasses set in ``__init__``: ``num_parts`` (K), ``input_size`` ``(H, W)`` the model
    expects, and ``image_mean`` / ``image_std`` (RGB, for inputs scaled to [0, 1]).
    :class:`copart_hub.pipelines.PartSegmenter` uses these to pre-process any image.
    """

    num_parts: int
    input_size: tuple[int, int]
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def forward(self, pixel_values: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``[B, 3, H, W]`` normalised images -> logits ``[B, K+1, h, w]`` (any h, w)."""
        raise NotImplementedError


class BackbonePartModel(PartModel):
    """A part model on one feature level of a :class:`~.backbone.TimmBackbone`.

    Channels and normalisation resolved from timm are saved in ``config.json``
    (:meth:`derived_config`), and the local weight file is only read at construction (its
    weights are saved with the model), so reloading never needs timm's pretrained registry,
    the file, or a download.
    """

    transient_config: ClassVar[dict[str, Any]] = {"backbone_weights": None}

    def _init_backbone(
        self,
        backbone: str,
        num_parts: int,
        input_size: tuple[int, int],
        feature_indices: tuple[int, ...],
        backbone_weights: str | None,
        image_mean: tuple[float, float, float] | None,
        image_std: tuple[float, float, float] | None,
        feature_channels: int | list[int] | None,
        feature_reduction: int | list[int] | None = None,
        **timm_kwargs: Any,
    ) -> list[int]:
        """Build ``self.encoder`` on the timm feature levels ``feature_indices`` and the
        part-model attributes; returns the channel count of each level. ``feature_channels`` /
        ``feature_reduction`` (saved configs) are checked against the built backbone."""
        from .backbone import TimmBackbone

        input_size = check_input_size(input_size)
        num_parts = check_int("num_parts", num_parts, 1, MAX_PARTS)
        self.encoder = TimmBackbone(backbone, feature_indices, backbone_weights, **timm_kwargs)
        for name, saved, built in (
            ("channels", feature_channels, self.encoder.channels),
            ("stride", feature_reduction, self.encoder.reductions),
        ):
            if saved is not None and list(np.atleast_1d(saved)) != built:
                raise ValueError(f"{backbone} has {name} {built}, config says {saved}")
        self.num_parts = num_parts
        self.input_size = input_size
        self.image_mean = tuple(image_mean or self.encoder.mean)
        self.image_std = tuple(image_std or self.encoder.std)
        return list(self.encoder.channels)

    def derived_config(self) -> dict[str, Any]:
        channels, reductions = self.encoder.channels, self.encoder.reductions
        single = len(channels) == 1  # one level: plain ints, as in the released configs
        return {
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "feature_channels": channels[0] if single else list(channels),
            "feature_reduction": reductions[0] if single else list(reductions),
        }
