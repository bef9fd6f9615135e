"""Inference pipelines: part segmentation and superpixels for any image input.

>>> segmenter = PartSegmenter("path/to/checkpoint")   # doctest: +SKIP
>>> result = segmenter("bird.jpg")                     # doctest: +SKIP
>>> result.labels.shape, result.centres.shape          # doctest: +SKIP
((H, W), (K, 2))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import create_model, from_pretrained, list_models
from .hub import CopartModel, ModelNotFoundError, zoo_names
from .models.mcs import MCSModel
from .models.part_base import PartModel
from .models.ssn import SSN
from .ops.slic import grid_shape
from .ops.superpixel_pool import superpixel_pool, superpixel_unpool
from .processing import ImagesInput, image_to_tensor, is_batch, to_pil_list, upsample_logits
from .visualize import overlay_parts, overlay_superpixels

DEFAULT_SUPERPIXEL_MODEL = "ssn_bsds500"
M = TypeVar("M", bound=CopartModel)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; by default CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(name_or_path: str | Path, device: str | torch.device | None = None) -> CopartModel:
    """Load a checkpoint (local folder, bundled zoo name or Hub repo id) in eval mode.

    A registered model name without parameters (e.g. ``ssn_pix``) needs no checkpoint and is
    built with :func:`copart_hub.create_model`. Raises :class:`ModelNotFoundError` otherwise.
    """
    name = str(name_or_path)
    is_checkpoint = Path(name).expanduser().is_dir() or name in zoo_names()
    if not is_checkpoint and name in list_models():
        model = create_model(name)
        if next(model.parameters(), None) is not None:
            raise ModelNotFoundError(
                f"{name!r} is a model name with learned weights but no bundled checkpoint "
                f"(bundled: {', '.join(zoo_names()) or 'none'}); pass a checkpoint folder or "
                "Hub repo id"
            )
    else:
        model = from_pretrained(name_or_path)
    return model.to(pick_device(device)).eval()


def _prepare(model_or_name: M | str | Path, kind: type[M], device: Any) -> M:
    model = model_or_name
    if not isinstance(model, CopartModel):
        model = load_model(model, device)
    if not isinstance(model, kind):
        raise TypeError(
            f"{model_or_name!s} is a {type(model).__name__}, not a {kind.__name__} model"
        )
    return model.to(pick_device(device)).eval()


@dataclass
class PartSegmentation:
    """Parts of one image (K parts; label 0 is background; sizes are the original image's)."""

    labels: np.ndarray  # int64 [H, W], argmax over the K+1 channels
    masks: np.ndarray  # float32 [K+1, H, W], softmax probabilities (channel 0 = background)
    centres: np.ndarray  # float32 [K, 2], (x, y) in pixels; NaN for a part with no mass
    areas: np.ndarray  # float32 [K], fraction of the image labelled as part 1..K
    overlay: Image.Image  # the parts blended over the image

    @property
    def num_parts(self) -> int:
        return int(self.masks.shape[0]) - 1

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary: image size, K, part centres (``None`` if absent) and areas."""
        height, width = self.labels.shape
        centres = [None if np.isnan(c).any() else [float(c[0]), float(c[1])] for c in self.centres]
        return {
            "width": int(width),
            "height": int(height),
            "num_parts": self.num_parts,
            "centres": centres,
            "areas": [float(a) for a in self.areas],
        }


class PartSegmenter:
    """Run a :class:`PartModel` on images of any size and return per-image part maps.

    Each image is resized (anisotropically) to ``model.input_size``, normalised with
    ``model.image_mean`` / ``image_std``, and the logits are upsampled back to its original size.
    A full MCS checkpoint (segmenter + generator) runs its segmentation module.
    With ``refine`` (an SSN model or name, e.g. ``"ssn_bsds500"``) the part probabilities are
    averaged inside ``refine_spixels`` superpixels of the full-resolution image, which snaps
    part boundaries to image edges. With ``grabcut`` the foreground (label != 0) is refined by
    GrabCut seeded with it (:func:`copart_hub.saliency.grabcut_foreground`): pixels it drops
    become background, pixels it adds take their most probable part.
    """

    def __init__(
        self,
        model_or_name: PartModel | str | Path,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        refine: SSN | str | Path | None = None,
        refine_spixels: int = 300,
        grabcut: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model = model_or_name
        if not isinstance(model, CopartModel):
            model = load_model(model, device)
        if isinstance(model, MCSModel):
            model = model.segmenter_only()
        self.model = _prepare(model, PartModel, device)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.refiner = SuperpixelSegmenter(refine, device) if refine is not None else None
        self.refine_spixels = refine_spixels
        self.grabcut = grabcut

    def __call__(self, inputs: ImagesInput) -> PartSegmentation | list[PartSegmentation]:
        """One input -> one :class:`PartSegmentation`; a list/batch -> a list of them."""
        images = to_pil_list(inputs)
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            logits = self._logits(chunk)
            results += [self._postprocess(lg, img) for lg, img in zip(logits, chunk, strict=True)]
        return results if is_batch(inputs) else results[0]

    def preprocess(self, images: list[Image.Image]) -> Tensor:
        """RGB images -> normalised ``[B, 3, h, w]`` at ``model.input_size``."""
        batch = torch.stack([image_to_tensor(img, tuple(self.model.input_size)) for img in images])
        mean = torch.tensor(self.model.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.model.image_std).view(1, 3, 1, 1)
        return (batch - mean) / std

    @torch.inference_mode()
    def _logits(self, images: list[Image.Image]) -> Tensor:
        param = next(self.model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        logits = self.model(self.preprocess(images).to(self.device, dtype))
        expected = self.model.num_parts + 1
        if logits.ndim != 4 or logits.shape[:2] != (len(images), expected):
            raise RuntimeError(
                f"{type(self.model).__name__} returned logits of shape {tuple(logits.shape)}, "
                f"expected [{len(images)}, {expected}, h, w]"
            )
        return logits.float()

    @torch.inference_mode()
    def _postprocess(self, logits: Tensor, image: Image.Image) -> PartSegmentation:
        size = (image.height, image.width)
        up = upsample_logits(logits[None], size)[0]
        masks = up.softmax(0)  # [K+1, H, W]
        if self.refiner is not None:
            masks = self._snap(masks, image)
        if self.grabcut:
            masks = self._grabcut(masks, image)
        labels = masks.argmax(0)
        parts = masks[1:]
        mass = parts.sum((1, 2))  # [K]
        xs = torch.arange(size[1], device=masks.device, dtype=masks.dtype)
        ys = torch.arange(size[0], device=masks.device, dtype=masks.dtype)
        centres = torch.stack([(parts.sum(1) * xs).sum(1), (parts.sum(2) * ys).sum(1)], 1)
        centres = torch.where(mass[:, None] > 0, centres / mass[:, None], torch.nan)
        counts = torch.bincount(labels.flatten(), minlength=parts.shape[0] + 1)[1:]
        labels_np = labels.cpu().numpy().astype(np.int64)
        return PartSegmentation(
            labels=labels_np,
            masks=masks.cpu().numpy(),
            centres=centres.cpu().numpy(),
            areas=(counts.float() / labels.numel()).cpu().numpy(),
            overlay=overlay_parts(image, labels_np, num_parts=self.model.num_parts),
        )

    def _snap(self, masks: Tensor, image: Image.Image) -> Tensor:
        """Average part probabilities ``[K+1, H, W]`` inside the image's superpixels."""
        n = min(self.refine_spixels, image.width * image.height)
        sp = torch.from_numpy(self.refiner(image, n).labels).to(masks.device)[None]
        return superpixel_unpool(superpixel_pool(masks[None], sp), sp)[0]

    @staticmethod
    def _grabcut(masks: Tensor, image: Image.Image) -> Tensor:
        """Foreground of ``[K+1, H, W]`` refined by GrabCut; parts keep their proportions."""
        from .saliency import grabcut_foreground  # OpenCV and SciPy only when asked for

        seeds = (masks.argmax(0) != 0).float().cpu().numpy()
        fg = torch.from_numpy(grabcut_foreground(np.asarray(image.convert("RGB")), seeds))
        fg = fg.to(masks)
        parts = masks[1:] + 1e-12  # uniform where the softmax underflowed to 0
        parts = parts / parts.sum(0, keepdim=True)
        return torch.cat([(1 - fg)[None], parts * fg], 0)


@dataclass
class SuperpixelResult:
    """Superpixels of one image at its full resolution."""

    labels: np.ndarray  # int64 [H, W] superpixel ids (consecutive 0..n-1 with connectivity)
    num_superpixels: int  # number of distinct ids in ``labels``
    overlay: Image.Image  # superpixel boundaries drawn over the image


class SuperpixelSegmenter:
    """Run an :class:`SSN` on images at full resolution (no resizing)."""

    def __init__(
        self,
        model_or_name: SSN | str | Path = DEFAULT_SUPERPIXEL_MODEL,
        device: str | torch.device | None = None,
    ) -> None:
        self.model = _prepare(model_or_name, SSN, device)
        self.device = pick_device(device)

    def __call__(
        self, inputs: ImagesInput, n_spixels: int = 400, connectivity: bool = True
    ) -> SuperpixelResult | list[SuperpixelResult]:
        """One input -> one :class:`SuperpixelResult`; a list/batch -> a list of them.

        Raises ``ValueError`` (before any work) if ``n_spixels`` is < 1 or exceeds the number of
        pixels of an image.
        """
        if isinstance(n_spixels, bool) or not isinstance(n_spixels, (int, np.integer)):
            raise ValueError(f"n_spixels must be an integer, got {n_spixels!r}")
        images = to_pil_list(inputs)
        for img in images:
            grid_shape(img.height, img.width, int(n_spixels))
        results = [self._run(img, int(n_spixels), connectivity) for img in images]
        return results if is_batch(inputs) else results[0]

    @torch.inference_mode()
    def _run(self, image: Image.Image, n_spixels: int, connectivity: bool) -> SuperpixelResult:
        tensor = image_to_tensor(image)[None].to(self.device)
        labels = self.model.superpixels(tensor, n_spixels, connectivity)[0].astype(np.int64)
        return SuperpixelResult(
            labels=labels,
            num_superpixels=len(np.unique(labels)),
            overlay=overlay_superpixels(image, labels),
        )
