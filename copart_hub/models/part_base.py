"""Base class of part segmenters (SCOPS, motion co-segmentation, DFF, ...)."""

from __future__ import annotations

from torch import Tensor

from ..hub.base import CopartModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
