"""Drawing helpers: part palette, part / superpixel overlays, legends and contact sheets."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

BACKGROUND_COLOR = (0, 0, 0)
BOUNDARY_COLOR = (255, 255, 0)
_MAX_HUE = 0.83  # red -> magenta, like matplotlib's gist_rainbow
_BAND_PIXELS = 1 << 20  # overlay_parts works on bands of about this many pixels


def part_colors(n: int) -> np.ndarray:
    """Palette ``uint8 [n, 3]``: index 0 (background) black, 1..n-1 bright evenly spaced hues."""
    if n < 1:
        raise ValueError(f"need at least one colour, got n={n}")
    colors = np.zeros((n, 3), dtype=np.uint8)
    for i in range(1, n):
        hue = _MAX_HUE * (i - 1) / max(n - 2, 1)
        colors[i] = np.rint(np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0)) * 255)
    return colors


def part_names(num_parts: int, names: Sequence[str] | None = None) -> list[str]:
    """``["background", *names]``; by default the K names are ``part 1`` ... ``part K``."""
    if num_parts < 0:
        raise ValueError(f"num_parts must be >= 0, got {num_parts}")
    if names is not None and len(names) != num_parts:
        raise ValueError(f"got {len(names)} names for {num_parts} parts")
    return ["background", *(names or [f"part {k}" for k in range(1, num_parts + 1)])]


def _rgb_array(image: Image.Image) -> np.ndarray:
    """A writable ``uint8 [H, W, 3]`` copy of ``image`` (one copy, whatever its mode)."""
    return np.array(image if image.mode == "RGB" else image.convert("RGB"))


def _check_labels(image: Image.Image, labels: np.ndarray) -> None:
    if labels.shape != (image.height, image.width):
        raise ValueError(
            f"labels of shape {labels.shape} do not match the {image.width}x{image.height} image "
            f"(expected {(image.height, image.width)})"
        )


def overlay_parts(
    image: Image.Image, labels: np.ndarray, alpha: float = 0.5, num_parts: int | None = None
) -> Image.Image:
    """Blend part colours over ``image`` where ``labels [H, W]`` > 0; background is unchanged.

    ``num_parts`` (K) fixes the palette so that colours agree across images of one model;
    by default it is ``labels.max()``. Works a band of rows at a time (no float copy of the image).
    """
    _check_labels(image, labels)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    top = int(labels.max(initial=0))
    palette = part_colors(max(num_parts or 0, top) + 1).astype(np.float32)
    rgb = _rgb_array(image)
    step = max(1, _BAND_PIXELS // max(image.width, 1))
    for start in range(0, image.height, step):
        band, lab = rgb[start : start + step], labels[start : start + step]
        parts = lab > 0
        mixed = (1 - alpha) * band[parts].astype(np.float32) + alpha * palette[lab[parts]]
        band[parts] = np.rint(mixed).astype(np.uint8)
    return Image.fromarray(rgb)


def overlay_superpixels(
    image: Image.Image, labels: np.ndarray, color: tuple[int, int, int] = BOUNDARY_COLOR
) -> Image.Image:
    """Paint 1-pixel boundaries of ``labels [H, W]`` in ``color`` (the pixel whose right or
    bottom neighbour has another label, as in the boundary metrics)."""
    from .metrics.superpixels import boundary_map

    _check_labels(image, labels)
    rgb = _rgb_array(image)
    rgb[boundary_map(labels)] = color
    return Image.fromarray(rgb)


def render_legend(
    num_parts: int, names: Sequence[str] | None = None, swatch: int = 16
) -> Image.Image:
    """A white image listing ``index  name`` with its colour swatch, for background + K parts.

    ``names`` gives the K part names (default ``part 1`` ... ``part K``).
    """
    labels = part_names(num_parts, names)
    texts = [f"{k}  {name}" for k, name in enumerate(labels)]
    font = ImageFont.load_default()
    pad = swatch // 2
    text_width = max(int(font.getbbox(t)[2]) for t in texts)
    row = swatch + pad
    legend = Image.new("RGB", (3 * pad + swatch + text_width, pad + row * len(texts)), "white")
    draw = ImageDraw.Draw(legend)
    for k, (text, color) in enumerate(zip(texts, part_colors(num_parts + 1), strict=True)):
        y = pad + k * row
        box = [pad, y, pad + swatch - 1, y + swatch - 1]
        draw.rectangle(box, fill=tuple(int(c) for c in color), outline=(128, 128, 128))
        _, top, _, bottom = font.getbbox(text)
        text_y = y + (swatch - (bottom - top)) // 2 - top
        draw.text((2 * pad + swatch, text_y), text, fill="black", font=font)
    return legend


def contact_sheet(
    images: Sequence[Image.Image], cols: int = 4, cell_size: int = 160, gap: int = 4
) -> Image.Image:
    """Grid of ``images`` (each fitted into a ``cell_size`` square, centred) on white."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if cols < 1 or cell_size < 1 or gap < 0:
        raise ValueError(f"invalid grid: cols={cols}, cell_size={cell_size}, gap={gap}")
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    step = cell_size + gap
    sheet = Image.new("RGB", (gap + cols * step, gap + rows * step), "white")
    for i, img in enumerate(images):
        cell = ImageOps.contain(img.convert("RGB"), (cell_size, cell_size))
        x = gap + (i % cols) * step + (cell_size - cell.width) // 2
        y = gap + (i // cols) * step + (cell_size - cell.height) // 2
        sheet.paste(cell, (x, y))
    return sheet
