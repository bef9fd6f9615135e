"""Inference pipelines: part segmentation and superpixels for any image input.

>>> segmenter = PartSegmenter("path/to/checkpoint")   # doctest: +SKIP
>>> result = segmenter("bird.jpg")                     # doctest: +SKIP
>>> result.labels.shape, result.centres.shape          # doctest: +SKIP
((H, W), (K, 2))
>>> result.to_hf()[0]                                   # doctest: +SKIP
{'score': 0.93, 'label': 'background', 'mask': <PIL.Image.Image image mode=L size=WxH>}

Memory follows the models, not the photo: part models run at ``model.input_size`` and keep
their soft masks at the logits' resolution (:meth:`PartSegmentation.masks_at` upsamples them
on request); superpixels and refinements run at most at the working resolution of
:func:`copart_hub.processing.working_size`; full-size outputs (label maps, overlays) are made a
band of rows at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
from .processing import (
    WORKING_PIXELS,
    ImagesInput,
    fit_pixels,
    image_to_tensor,
    is_batch,
    to_pil_list,
    upsample_bands,
    upsample_labels,
    upsample_logits,
)
from .visualize import overlay_parts, overlay_superpixels, part_names

DEFAULT_SUPERPIXEL_MODEL = "ssn_bsds500"
#: superpixels run at a working size of at least this many pixels per requested superpixel
MIN_PIXELS_PER_SUPERPIXEL = 16
#: refined probabilities are stored as logs floored here (0 stays exactly 0 after softmax)
LOG_FLOOR = -1e4
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


def label_dtype(num_labels: int) -> np.dtype:
    """The smallest of ``uint8`` / ``int16`` / ``int32`` that holds labels ``0..num_labels-1``."""
    for dtype in (np.uint8, np.int16):
        if num_labels - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int32)


def _soft_bands(logits: Tensor, size: tuple[int, int]) -> Iterator[tuple[slice, Tensor]]:
    """Soft masks ``softmax(upsample_logits(logits))`` ``[K+1, b, W]`` a band of rows at a time."""
    for rows, band in upsample_bands(logits.float(), size):
        yield rows, band.softmax(0)


@dataclass
class PartSegmentation:
    """Parts of one image (K parts; label 0 is background).

    ``labels``, ``centres``, ``areas`` and ``overlay`` are at the image's size. The soft masks
    are kept small, as ``logits`` at the model's output resolution (or the working resolution
    of a refinement), and upsampled on request: ``masks_at(size)`` is the softmax of their
    bilinear upsampling (``align_corners=False``, as in training), ``masks`` that at the image's
    size.
    """

    labels: np.ndarray  # uint8 [H, W] (int16 from 256 parts on), argmax of the soft masks
    logits: np.ndarray  # float32 [K+1, h, w], log-probabilities up to a per-pixel constant
    centres: np.ndarray  # float32 [K, 2], (x, y) in pixels; NaN for a part with no mass
    areas: np.ndarray  # float32 [K], fraction of the image labelled as part 1..K
    overlay: Image.Image  # the parts blended over the image

    @property
    def num_parts(self) -> int:
        return int(self.logits.shape[0]) - 1

    @property
    def size(self) -> tuple[int, int]:
        """The image's ``(height, width)``."""
        return self.labels.shape[0], self.labels.shape[1]

    def masks_at(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """Soft masks ``float32 [K+1, *size]`` (softmax probabilities, channel 0 = background),
        by default at the image's size. Allocates ``4 (K+1) H W`` bytes: ask for what you need."""
        logits = torch.from_numpy(self.logits)[None]
        return upsample_logits(logits, size or self.size)[0].softmax(0).numpy()

    @property
    def masks(self) -> np.ndarray:
        """``masks_at()``: ``float32 [K+1, H, W]`` at the image's size, computed at each access."""
        return self.masks_at()

    def to_hf(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The ``transformers`` image-segmentation pipeline format: one
        ``{"score", "label", "mask"}`` per label present in ``labels``, in label order.

        ``label`` is ``background``, ``part 1`` ... (or ``names``, the K part names); ``mask`` a
        PIL ``L`` image of the image's size, 255 inside; ``score`` the mean soft probability of
        that label inside its mask.
        """
        labels = part_names(self.num_parts, names)
        n = self.num_parts + 1
        counts = np.bincount(self.labels.ravel(), minlength=n)
        sums = torch.zeros(n, dtype=torch.float64)
        for rows, probs in _soft_bands(torch.from_numpy(self.logits), self.size):
            lab = torch.from_numpy(self.labels[rows].astype(np.int64))
            mine = probs.gather(0, lab[None])[0].double()  # [b, W], probability of own label
            sums += torch.bincount(lab.flatten(), mine.flatten(), minlength=n)
        return [
            {
                "score": float(sums[k]) / int(counts[k]),
                "label": labels[k],
                "mask": Image.fromarray(np.multiply(self.labels == k, 255, dtype=np.uint8), "L"),
            }
            for k in np.flatnonzero(counts)
        ]

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


def summarise_parts(
    logits: Tensor, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits ``[K+1, h, w]`` -> labels ``[H, W]`` (argmax), centres ``[K, 2]`` (soft-mask
    weighted ``(x, y)``, NaN without mass) and areas ``[K]`` (fraction of labels), computed a
    band of rows of ``size = (H, W)`` at a time."""
    n = logits.shape[0]
    labels = np.empty(size, dtype=label_dtype(n))
    mass, moments = torch.zeros(n, dtype=torch.float64), torch.zeros(n, 2, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.int64)
    xs = torch.arange(size[1], dtype=torch.float64)
    for rows, probs in _soft_bands(logits, size):
        band = probs.max(0).indices  # argmax (first on ties); ~20x faster over dim 0 on CPU
        labels[rows] = band.numpy()
        per_col, per_row = probs.sum(1).double(), probs.sum(2).double()  # [n, W], [n, b]
        ys = torch.arange(rows.start, rows.stop, dtype=torch.float64)
        mass += per_row.sum(1)
        moments[:, 0] += per_col @ xs
        moments[:, 1] += per_row @ ys
        counts += torch.bincount(band.flatten(), minlength=n)
    mass, moments = mass[1:, None], moments[1:]
    centres = torch.where(mass > 0, moments / mass.clamp_min(1e-300), torch.nan)
    areas = counts[1:].double() / (size[0] * size[1])
    return labels, centres.float().numpy(), areas.float().numpy()


class PartSegmenter:
    """Run a :class:`PartModel` on images of any size and return per-image part maps.

    Each image is resized (anisotropically) to ``model.input_size``, normalised with
    ``model.image_mean`` / ``image_std``; labels, centres and areas come from the logits
    upsampled to the image's size a band of rows at a time, and the result keeps the logits at
    their own resolution (see :class:`PartSegmentation`).
    A full MCS checkpoint (segmenter + generator) runs its segmentation module.
    With ``refine`` (an SSN model or name, e.g. ``"ssn_bsds500"``) the part probabilities are
    averaged inside ``refine_spixels`` superpixels of the image, which snaps part boundaries to
    image edges. With ``grabcut`` the foreground (label != 0) is refined by GrabCut seeded with
    it (:func:`copart_hub.saliency.grabcut_foreground`): pixels it drops become background,
    pixels it adds take their most probable part. Refinements run at the working size of the
    image (at most ``max_pixels``, :func:`copart_hub.processing.working_size`); their result
    is kept at that size.
    """

    def __init__(
        self,
        model_or_name: PartModel | str | Path,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        refine: SSN | str | Path | None = None,
        refine_spixels: int = 300,
        grabcut: bool = False,
        max_pixels: int = WORKING_PIXELS,
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
        self.refiner = (
            SuperpixelSegmenter(refine, device, max_pixels) if refine is not None else None
        )
        self.refine_spixels = refine_spixels
        self.grabcut = grabcut
        self.max_pixels = max_pixels

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
        """Logits ``[K+1, h, w]`` of one image -> its :class:`PartSegmentation`."""
        if self.refiner is not None or self.grabcut:
            logits = self._refine(logits, image)
        labels, centres, areas = summarise_parts(logits.cpu(), (image.height, image.width))
        return PartSegmentation(
            labels=labels,
            logits=logits.cpu().numpy().copy(),  # not a view of the batch
            centres=centres,
            areas=areas,
            overlay=overlay_parts(image, labels, num_parts=self.model.num_parts),
        )

    def _refine(self, logits: Tensor, image: Image.Image) -> Tensor:
        """Logits ``[K+1, h, w]`` -> refined log-probabilities at the image's working size."""
        small = fit_pixels(image, self.max_pixels)
        masks = upsample_logits(logits[None], (small.height, small.width))[0].softmax(0)
        if self.refiner is not None:
            masks = self._snap(masks, small)
        if self.grabcut:
            masks = self._grabcut(masks, small)
        return masks.log().clamp_min_(LOG_FLOOR)

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
    """Superpixels of one image, at its size."""

    labels: np.ndarray  # int32 [H, W] superpixel ids (consecutive 0..n-1 with connectivity)
    num_superpixels: int  # number of distinct ids in ``labels``
    overlay: Image.Image  # superpixel boundaries drawn over the image


class SuperpixelSegmenter:
    """Run an :class:`SSN` on images at their working size, labels upsampled to the image size.

    The SSN runs at :func:`copart_hub.processing.working_size` for ``max(max_pixels, 16 *
    n_spixels)`` pixels (the image's own size when it is smaller) and its labels are upsampled
    (nearest) to the image's size: ``n_spixels`` is the count for the whole image at any
    resolution, memory stays that of about ``max_pixels`` pixels, and superpixel boundaries
    are placed to the working resolution's pixel.
    """

    def __init__(
        self,
        model_or_name: SSN | str | Path = DEFAULT_SUPERPIXEL_MODEL,
        device: str | torch.device | None = None,
        max_pixels: int = WORKING_PIXELS,
    ) -> None:
        self.model = _prepare(model_or_name, SSN, device)
        self.device = pick_device(device)
        self.max_pixels = max_pixels

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
        small = fit_pixels(image, max(self.max_pixels, MIN_PIXELS_PER_SUPERPIXEL * n_spixels))
        tensor = image_to_tensor(small)[None].to(self.device)
        labels = self.model.superpixels(tensor, n_spixels, connectivity)[0].astype(np.int32)
        count = len(np.unique(labels))  # upsampling keeps every label
        labels = upsample_labels(labels, (image.height, image.width))
        return SuperpixelResult(
            labels=labels, num_superpixels=count, overlay=overlay_superpixels(image, labels)
        )
