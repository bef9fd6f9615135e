"""Image I/O: turn paths, PIL images, arrays and tensors into RGB PIL images and model tensors.

Accepted inputs (``ImageInput``):

* a path (``str`` / ``Path``) to any image file PIL can read;
* a PIL image of any mode (EXIF orientation applied, transparency composited on white,
  16-bit grey scaled to 8 bit);
* a numpy array ``[H, W]`` or ``[H, W, C]`` (C in 1, 3, 4), ``uint8``, ``uint16``, ``bool`` or
  float in [0, 1];
* a torch tensor ``[H, W]`` or ``[C, H, W]`` (C in 1, 3, 4), ``uint8`` or float in [0, 1].

``to_pil_list`` also takes a list/tuple of these, or a 4-D array/tensor as a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class InvalidImageError(ValueError):
    """An input cannot be read or interpreted as an image."""


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
    """One accepted input -> an RGB PIL image; raises :class:`InvalidImageError`."""
    if isinstance(image, (str, Path)):
        return _load_file(Path(image))
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, Tensor):
        return _array_to_rgb(_tensor_to_hwc(image))
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    raise InvalidImageError(
        f"unsupported image input of type {type(image).__name__}; "
        "expected a path, PIL image, numpy array or torch tensor"
    )


def image_to_tensor(image: Image.Image, size: tuple[int, int] | None = None) -> Tensor:
    """RGB PIL image -> float tensor ``[3, H, W]`` in [0, 1].

    ``size`` is ``(height, width)``; when given, the image is resized (bilinear, antialiased).
    """
    array = np.asarray(load_image(image), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)
    if size is None or tuple(size) == tuple(tensor.shape[-2:]):
        return tensor
    resized = F.interpolate(
        tensor[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].clamp_(0, 1)


def _load_file(path: Path) -> Image.Image:
    if not path.exists():
        raise InvalidImageError(f"{path}: no such file")
    if not path.is_file():
        raise InvalidImageError(f"{path}: not a file")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so that truncated or corrupt data fails here
            return _pil_to_rgb(img)
    except InvalidImageError as err:
        raise InvalidImageError(f"{path}: {err}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = "not a readable image" if isinstance(err, UnidentifiedImageError) else str(err)
        raise InvalidImageError(f"{path}: {_one_line(reason)}") from None


def _pil_to_rgb(img: Image.Image) -> Image.Image:
    if img.width == 0 or img.height == 0:
        raise InvalidImageError(f"empty image ({img.width}x{img.height})")
    img = ImageOps.exif_transpose(img)
    if img.mode in _SIXTEEN_BIT_MODES:
        return _array_to_rgb(np.asarray(img).clip(0, 65535).astype(np.uint16))
    if img.mode == "F":
        return _array_to_rgb(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _composite_on_white(img.convert("RGBA"))
    return img.convert("RGB") if img.mode != "RGB" else img.copy()


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
