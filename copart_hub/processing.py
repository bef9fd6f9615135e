"""Image I/O: turn paths, PIL images, arrays and tensors into RGB PIL images and model tensors.

Accepted inputs (``ImageInput``):

* a path (``str`` / ``Path``) to any image file PIL can read;
* a PIL image of any mode (EXIF orientation applied, transparency composited on white,
  16-bit grey scaled to 8 bit);
* a numpy array ``[H, W]`` or ``[H, W, C]`` (C in 1, 3, 4), ``uint8``, ``uint16``, ``bool`` or
  float in [0, 1];
* a torch tensor ``[H, W]`` or ``[C, H, W]`` (C in 1, 3, 4), ``uint8`` or float in [0, 1].

``to_pil_list`` also takes a list/tuple of these, or a 4-D array/tensor as a batch.

Size limits and working resolutions:

* :func:`load_image` refuses images over :func:`max_image_pixels` pixels (default 100 MP, set
  ``COPART_HUB_MAX_PIXELS`` to change it) with :class:`ImageTooLargeError`; files are checked
  from their header, before decoding. PIL's own decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``) is set to the same value.
* :func:`working_size` is the one resolution policy of the pipelines: superpixels, saliency and
  refinements run at most at ``WORKING_PIXELS`` (about 1 MP) and only what they return is
  upsampled to the image size (:func:`upsample_bands` does it a band of rows at a time).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

ImageInput: TypeAlias = str | Path | Image.Image | np.ndarray | Tensor
ImagesInput: TypeAlias = ImageInput | Sequence[ImageInput]

WHITE = (255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_FLOAT_TOLERANCE = 1e-3
_ORIENTATION = 0x0112  # EXIF tag
MAX_PIXELS_ENV = "COPART_HUB_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
#: pixel budget of the working resolution (superpixels, saliency, refinements)
WORKING_PIXELS = 1_000_000
#: output pixels per band of :func:`upsample_bands` (bounds its temporary memory)
BAND_PIXELS = 1 << 20


class InvalidImageError(ValueError):
    """An input cannot be read or interpreted as an image."""


class ImageTooLargeError(InvalidImageError):
    """An image has more pixels than :func:`max_image_pixels` allows."""


def max_image_pixels() -> int:
    """The pixel cap of :func:`load_image`: ``$COPART_HUB_MAX_PIXELS`` (e.g. ``25e6``) or 100 MP.

    Also sets ``PIL.Image.MAX_IMAGE_PIXELS`` to it, so that PIL's decompression-bomb check agrees.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    try:
        limit = float(raw) if raw else DEFAULT_MAX_PIXELS
    except ValueError:
        limit = math.nan
    if not (math.isfinite(limit) and limit >= 1):
        raise InvalidImageError(f"{MAX_PIXELS_ENV} must be a number of pixels >= 1, got {raw!r}")
    Image.MAX_IMAGE_PIXELS = int(limit)
    return int(limit)


def check_image_pixels(width: int, height: int) -> None:
    """Raise :class:`ImageTooLargeError` if ``width x height`` exceeds :func:`max_image_pixels`."""
    limit = max_image_pixels()
    if width * height > limit:
        size = f"{width}x{height} ({_megapixels(width * height)})"
        raise ImageTooLargeError(_too_large(size, limit))


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.4g} MP" if pixels >= 10_000 else f"{pixels} pixels"


def _too_large(what: str, limit: int) -> str:
    return (
        f"image too large: {what} is over the limit of {_megapixels(limit)} "
        f"(set {MAX_PIXELS_ENV} to change it)"
    )


def is_batch(inputs: object) -> bool:
    """Whether ``inputs`` is a list/tuple or a 4-D array/tensor (several images)."""
    if isinstance(inputs, (list, tuple)):
        return True
    return isinstance(inputs, (np.ndarray, Tensor)) and inputs.ndim == 4


def to_pil_list(inputs: ImagesInput) -> list[Image.Image]:
    """Any accepted input, a list of them, or a 4-D batch -> a list of RGB PIL images."""
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InvalidImageError("got an empty list of images")
        return [load_image(x) for x in inputs]
    if isinstance(inputs, (np.ndarray, Tensor)) and inputs.ndim == 4:
        if inputs.shape[0] == 0:
            raise InvalidImageError(f"got an empty batch of images (shape {tuple(inputs.shape)})")
        return [load_image(x) for x in inputs]
    return [load_image(inputs)]


def load_image(image: ImageInput) -> Image.Image:
    """One accepted input -> an RGB PIL image; raises :class:`InvalidImageError`
    (:class:`ImageTooLargeError` over :func:`max_image_pixels`, checked before decoding).

    An upright RGB PIL image is returned as it is (not copied).
    """
    if isinstance(image, (str, Path)):
        return _load_file(Path(image))
    if isinstance(image, Image.Image):
        check_image_pixels(image.width, image.height)
        return _pil_to_rgb(image, copy=False)
    if isinstance(image, Tensor):
        if image.ndim in (2, 3):  # [H, W] or [C, H, W]
            check_image_pixels(image.shape[-1], image.shape[-2])
        return _array_to_rgb(_tensor_to_hwc(image))
    if isinstance(image, np.ndarray):
        if image.ndim in (2, 3):  # [H, W] or [H, W, C]
            check_image_pixels(image.shape[1], image.shape[0])
        return _array_to_rgb(image)
    raise InvalidImageError(
        f"unsupported image input of type {type(image).__name__}; "
        "expected a path, PIL image, numpy array or torch tensor"
    )


def image_to_tensor(image: Image.Image, size: tuple[int, int] | None = None) -> Tensor:
    """RGB PIL image -> float tensor ``[3, H, W]`` in [0, 1].

    ``size`` is ``(height, width)``; when given, the image is resized (bilinear, antialiased),
    one channel at a time so that only one full-size float channel exists at once.
    """
    image = load_image(image)
    if size is None or tuple(size) == (image.height, image.width):
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
    channels = []
    for c in range(3):
        channel = torch.from_numpy(np.array(image.getchannel(c))).float().div_(255)
        channels.append(
            F.interpolate(
                channel[None, None],
                size=tuple(size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0, 0]
        )
    return torch.stack(channels).clamp_(0, 1)


def working_size(height: int, width: int, max_pixels: int = WORKING_PIXELS) -> tuple[int, int]:
    """``(h, w)`` to process an ``height x width`` image at: the image's own size when it has at
    most ``max_pixels`` pixels, else the largest size of the same aspect ratio that fits."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    h = min(height, max_pixels, max(1, math.floor(height * scale)))
    return h, min(width, max(1, max_pixels // h))


def fit_pixels(image: Image.Image, max_pixels: int = WORKING_PIXELS) -> Image.Image:
    """``image`` resized (bilinear, antialiased) to :func:`working_size`, or itself if it fits."""
    height, width = working_size(image.height, image.width, max_pixels)
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)


def upsample_labels(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize (pixel centres) of a label map ``[h, w]`` to ``size = (H, W)``.

    When ``H >= h`` and ``W >= w`` every label keeps at least one pixel and 4-connected regions
    stay 4-connected.
    """
    (h, w), (height, width) = labels.shape, tuple(size)
    if (h, w) == (height, width):
        return labels
    rows = ((np.arange(height) + 0.5) * (h / height)).astype(np.intp)
    cols = ((np.arange(width) + 0.5) * (w / width)).astype(np.intp)
    return labels[np.minimum(rows, h - 1)[:, None], np.minimum(cols, w - 1)[None, :]]


def _load_file(path: Path) -> Image.Image:
    if not path.exists():
        raise InvalidImageError(f"{path}: no such file")
    if not path.is_file():
        raise InvalidImageError(f"{path}: not a file")
    limit = max_image_pixels()  # PIL's bomb check now refuses > 2x limit, warns above it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            img = Image.open(path)  # reads the header only
        with img:
            check_image_pixels(img.width, img.height)
            img.load()  # decode now, so that truncated or corrupt data fails here
            return _pil_to_rgb(img)
    except InvalidImageError as err:
        raise type(err)(f"{path}: {err}") from None
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        what = _megapixels(int(found[1])) if found else f"over {_megapixels(2 * limit)}"
        raise ImageTooLargeError(f"{path}: {_too_large(what, limit)}") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = "not a readable image" if isinstance(err, UnidentifiedImageError) else str(err)
        raise InvalidImageError(f"{path}: {_one_line(reason)}") from None


def _pil_to_rgb(img: Image.Image, copy: bool = True) -> Image.Image:
    """Upright RGB version of ``img``: a new image, or (``copy=False``) ``img`` itself when it
    is one already."""
    if img.width == 0 or img.height == 0:
        raise InvalidImageError(f"empty image ({img.width}x{img.height})")
    if img.getexif().get(_ORIENTATION, 1) in range(2, 9):
        img, copy = ImageOps.exif_transpose(img), False  # a new image
    if img.mode in _SIXTEEN_BIT_MODES:
        return _array_to_rgb(np.asarray(img).clip(0, 65535).astype(np.uint16))
    if img.mode == "F":
        return _array_to_rgb(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _composite_on_white(img.convert("RGBA"))
    if img.mode != "RGB":
        return img.convert("RGB")
    return img.copy() if copy else img


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _tensor_to_hwc(tensor: Tensor) -> np.ndarray:
    """``[H, W]`` or ``[C, H, W]`` tensor -> numpy ``[H, W]`` / ``[H, W, C]``."""
    array = tensor.detach().cpu()
    if array.ndim == 3:
        if array.shape[0] not in (1, 3, 4):
            raise InvalidImageError(
                f"tensor images must be [C, H, W] with C in 1, 3, 4, got shape {tuple(array.shape)}"
            )
        array = array.permute(1, 2, 0)
    elif array.ndim != 2:
        raise InvalidImageError(
            f"tensor images must be [H, W] or [C, H, W], got shape {tuple(array.shape)}"
        )
    if array.dtype not in (torch.uint8, torch.bool) and not array.is_floating_point():
        raise InvalidImageError(
            f"tensor images must be uint8 or float in [0, 1], got {array.dtype}"
        )
    if array.dtype == torch.bfloat16:
        array = array.float()
    return array.numpy()


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    if array.size == 0:
        raise InvalidImageError(f"empty image array (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        channels = array.shape[2]
    elif array.ndim == 2:
        channels, array = 1, array[..., None]
    else:
        raise InvalidImageError(
            f"array images must be [H, W] or [H, W, C] with C in 1, 3, 4, got shape {array.shape}"
            + ("; pass [C, H, W] data as a torch tensor" if array.ndim == 3 else "")
        )
    pixels = _to_uint8(array)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    img = Image.fromarray(np.ascontiguousarray(pixels))
    return _composite_on_white(img) if channels == 4 else img


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise InvalidImageError("float image contains NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < -_FLOAT_TOLERANCE or high > 1 + _FLOAT_TOLERANCE:
            raise InvalidImageError(
                f"float images must be in [0, 1], got values in [{low:.3g}, {high:.3g}]"
            )
        return np.rint(values.clip(0, 1) * 255).astype(np.uint8)
    raise InvalidImageError(
        f"unsupported image dtype {array.dtype}; use uint8, uint16, bool or float in [0, 1]"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unreadable image"


def upsample_logits(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Part logits ``[B, K+1, h, w]`` -> ``[B, K+1, *size]``, bilinear with pixel-centre
    alignment (``align_corners=False``, as timm feature maps are laid out). Training and
    :class:`~copart_hub.pipelines.PartSegmenter` both use it, so their maps agree."""
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


Taps: TypeAlias = tuple[Tensor, Tensor, Tensor]


def bilinear_taps(n_in: int, n_out: int, like: Tensor) -> Taps:
    """Bilinear taps of ``F.interpolate(align_corners=False)`` along one axis: the two source
    indices ``[n_out]`` and the weight of the second one (dtype and device of ``like``)."""
    dst = torch.arange(n_out, device=like.device, dtype=like.dtype)
    src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp_min_(0)
    first = src.long()  # floor, as src >= 0
    return first, (first + 1).clamp_max_(n_in - 1), src - first


def upsample_bands(
    x: Tensor, size: Sequence[int], antialias: bool = False, band_pixels: int = BAND_PIXELS
) -> Iterator[tuple[slice, Tensor]]:
    """Bilinear resize of ``[C, h, w]`` to ``size = (H, W)``, a band of rows at a time.

    Yields ``(rows, [C, len(rows), W])`` with bands of about ``band_pixels`` output pixels; the
    bands put together equal ``F.interpolate(x[None], size, mode="bilinear")[0]``
    (``align_corners=False``). With ``antialias`` and a smaller output along an axis, the result
    is one band of ``F.interpolate(..., antialias=True)`` instead.
    """
    (h, w), (height, width) = x.shape[-2:], tuple(size)
    if antialias and (height < h or width < w):
        out = F.interpolate(x[None], size=(height, width), mode="bilinear", antialias=True)
        yield slice(0, height), out[0]
        return
    taps = bilinear_taps(h, height, x), bilinear_taps(w, width, x)
    step = max(1, band_pixels // width)
    for start in range(0, height, step):
        rows = slice(start, min(start + step, height))
        yield rows, bilinear_window(x, taps, rows, slice(0, width))


def bilinear_window(
    x: Tensor,
    taps: tuple[Taps, Taps],
    rows: slice,
    cols: slice,
    offset: tuple[int, int] = (0, 0),
) -> Tensor:
    """``[..., len(rows), len(cols)]`` window of a bilinear upsampling given its taps along
    (y, x) (:func:`bilinear_taps`), from ``x`` ``[..., h, w]``, the part of the source map that
    starts at ``offset``."""
    (ya, yb, ly), (xa, xb, lx) = taps
    ya, yb, ly = ya[rows] - offset[0], yb[rows] - offset[0], ly[rows, None]
    xa, xb, lx = xa[cols] - offset[1], xb[cols] - offset[1], lx[cols]
    band = x[..., ya, :] * (1 - ly) + x[..., yb, :] * ly
    return band[..., xa] * (1 - lx) + band[..., xb] * lx
