"""Part swap on full-resolution images and videos with an MCS model (SPEC C, plus paste-back).

The official script resizes whole frames to 256x256 and returns only the re-synthesised frame.
Here each target frame is cropped around its foreground (segmentation argmax != 0, bounding box
plus a margin, made square), swapped at the model's ``input_size`` with
:meth:`MCSModel.part_swap` semantics, and pasted back into the full-resolution target with a
feathered version of the swap mask: outside the mask (and outside the crop) the target pixels are
unchanged, bit for bit. The mask is feathered at the model's resolution; the swapped crop and
its mask are upsampled and pasted a band of rows at a time, so memory does not grow with the
photo beyond its own pixels.

``render``: ``"generator"`` re-draws the swapped region with the model's generator (the paper:
``decode(enc_T (1 - m) + V warp(enc_S) m)``), as blurred as the generator is at its input size;
``"pixels"`` warps the **full-resolution source pixels** by the same part motion (the grid the
generator would warp its features with, upsampled to the target crop) and pastes them under the
same mask: as sharp as the source photo, with the source's own lighting, and without the
generator's in-painting where the source part was hidden.

Any part segmenter swaps with ``render="pixels"`` (e.g. a SCOPS model, whose parts are finer
than an MCS model's): its soft masks make the swap mask, its part centres are the anchors
``p_k`` of the part motion ``T(z) = sum_k M_T^k(z) (L (z - p_T^k) + p_S^k)``, and the linear
map ``L``, shared by the parts, is fitted per (source, target) pair by weighted least squares
on the centres (:func:`centre_alignment`). An MCS segmenter alone keeps its learned motion.

>>> swapper = PartSwapper("path/to/mcs_checkpoint")            # doctest: +SKIP
>>> swapper.swap_image("source.jpg", "target.jpg", [1, 3])     # doctest: +SKIP
>>> swapper.swap_video("source.jpg", "target.mp4", [2], "out.mp4")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from .correspondence import DescriptorMatcher, descriptor_alignment
from .data.videos import read_video
from .hub import CopartModel
from .models.dve import DenseDescriptorNet
from .models.mcs import (
    MCSModel,
    MCSSegmentation,
    MCSSegmenter,
    blend_mask,
    part_motion_grid,
)
from .models.part_base import PartModel
from .ops.coordinates import coordinate_axis, coordinate_grid, part_centres
from .pipelines import _prepare
from .processing import ImageInput, image_to_tensor, load_image, upsample_bands
from .visualize import render_legend

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "PartSwapper",
    "part_legend",
    "smooth_boxes",
    "write_video",
]

VIDEO_SUFFIXES = (".mp4", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_FPS = 25.0
#: bounding-box margin on each side, as a fraction of the box's longer side
CROP_MARGIN = 0.25
#: feather width (Gaussian sigma and border taper) as a fraction of the crop side
FEATHER = 1 / 32
#: videos: crop boxes are averaged over a centred window of this many seconds (no jitter)
BOX_SMOOTHING_S = 0.5

Box = tuple[int, int, int, int]  # (top, left, height, width)
RENDERS = ("generator", "pixels")


@dataclass
class _Source:
    """A source prepared once for every target frame."""

    crop: Tensor  # [1, 3, h, w] at the model's input size
    region: Image.Image  # the located crop of the photo
    segmentation: MCSSegmentation
    features: list[Tensor]  # the generator's encoder levels of ``crop``
    pixels: Tensor  # [1, 3, H, W] the same crop at the photo's resolution, in [0, 1]


def _check_parts(parts: Sequence[int], num_parts: int) -> list[int]:
    """``parts`` as a list of distinct channel indices in ``0..num_parts`` (0 = background).

    An empty list is rejected: a swap of nothing is almost always a user mistake (e.g. an empty
    ``--parts``), and :func:`swap_mask` needs at least one channel.
    """
    parts = list(parts)
    if not parts:
        raise ValueError(f"parts must name at least one part index in 0..{num_parts}")
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
            raise ValueError(f"part indices must be integers, got {p!r}")
        if not 0 <= p <= num_parts:
            raise ValueError(
                f"part index {p} out of range: this model has indices 0..{num_parts} "
                "(0 = background)"
            )
    if len(set(parts)) != len(parts):
        raise ValueError(f"duplicate part indices in {parts}")
    return [int(p) for p in parts]


def _square_box(fg: np.ndarray | None, height: int, width: int, margin: float) -> Box:
    """Square crop around the ``True`` pixels of ``fg [H, W]`` (expanded by ``margin``), kept
    inside the image; without foreground the centre square. A side that does not fit the image
    is cut to the image's size (the crop is then not square)."""
    if fg is None or not fg.any():
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side
    rows, cols = np.nonzero(fg)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = max(bottom - top, right - left) * (1 + 2 * margin)
    box_h, box_w = min(height, math.ceil(side)), min(width, math.ceil(side))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    y0 = int(np.clip(round(cy - box_h / 2), 0, height - box_h))
    x0 = int(np.clip(round(cx - box_w / 2), 0, width - box_w))
    return y0, x0, box_h, box_w


def smooth_boxes(boxes: Sequence[Box], height: int, width: int, window: int) -> list[Box]:
    """Centred moving average (``window`` frames, shorter at the ends) of the boxes' centres and
    sides, kept inside the ``height x width`` frame: a steady crop for video part swap."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres = arr[:, :2] + arr[:, 2:] / 2  # (cy, cx)
    values = np.concatenate([centres, arr[:, 2:]], axis=1)
    half = max(0, window) // 2
    out = []
    for t in range(len(arr)):
        cy, cx, h, w = values[max(0, t - half) : t + half + 1].mean(0)
        box_h, box_w = min(height, max(1, round(h))), min(width, max(1, round(w)))
        y0 = int(np.clip(round(cy - box_h / 2), 0, height - box_h))
        x0 = int(np.clip(round(cx - box_w / 2), 0, width - box_w))
        out.append((y0, x0, box_h, box_w))
    return out


def _kernel(sigma: float, x: Tensor) -> Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` (radius ``ceil(3 sigma)``)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def _gaussian_blur(x: Tensor, sigma_y: float, sigma_x: float) -> Tensor:
    """Separable Gaussian blur of ``[B, 1, H, W]`` (replicate padding)."""
    ky, kx = _kernel(sigma_y, x), _kernel(sigma_x, x)
    ry, rx = len(ky) // 2, len(kx) // 2
    x = F.pad(x, (rx, rx, ry, ry), mode="replicate")
    x = F.conv2d(x, kx.view(1, 1, 1, -1))
    return F.conv2d(x, ky.view(1, 1, -1, 1))


def _border_taper(rows: slice, height: int, width: int, ramp: float) -> np.ndarray:
    """``[len(rows), W]`` rows of the ``[H, W]`` weights that are 0 on the outermost pixels and
    rise linearly to 1 over ``ramp`` px."""
    ys = np.arange(height)[rows]
    ys = np.minimum(ys, height - 1 - ys)
    xs = np.minimum(np.arange(width), np.arange(width)[::-1])
    dist = np.minimum(ys[:, None], xs[None, :]).astype(np.float32)
    return np.clip(dist / max(ramp, 1.0), 0.0, 1.0)


def _warp_rows(pixels: Tensor, grid: Tensor, rows: slice, height: int, width: int) -> Tensor:
    """``rows`` of ``pixels`` ``[1, 3, H_s, W_s]`` warped by the part-motion ``grid``
    ``[1, 2, h_m, w_m]`` (target -> source, inclusive convention) onto a ``height x width``
    target -> ``[3, len(rows), width]``. The grid is itself resampled at the band's pixels
    (``align_corners=True``), so an affine motion stays exactly affine at any resolution."""
    ys = coordinate_axis(max(height, 2), "inclusive", pixels.device)[rows]
    xs = coordinate_axis(max(width, 2), "inclusive", pixels.device)[:width]
    where = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), -1)[None]
    motion = F.grid_sample(grid, where, padding_mode="border", align_corners=True)
    return F.grid_sample(
        pixels, motion.permute(0, 2, 3, 1), padding_mode="border", align_corners=True
    )[0]


class CentreParts:
    """A part segmenter seen as an MCS segmentation for part swap: its soft masks, its part
    centres (inclusive grid) as the anchors, identity affines (:func:`centre_alignment` fits
    the motion per pair)."""

    def __init__(self, model: PartModel) -> None:
        self.model = model
        self.num_parts = model.num_parts

    def segment(self, images: Tensor) -> MCSSegmentation:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> masks, centres and identity affines."""
        mean = images.new_tensor(self.model.image_mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.model.image_std).view(1, 3, 1, 1)
        dtype = next(self.model.parameters()).dtype
        masks = self.model((images - mean) / std).float().softmax(1)
        b, k = masks.shape[0], masks.shape[1] - 1
        shift = part_centres(masks[:, 1:], convention="inclusive")
        affine = torch.eye(2, device=masks.device).expand(b, k, 2, 2)
        return MCSSegmentation(masks=masks.to(dtype), shift=shift, affine=affine)


def centre_alignment(
    seg_source: MCSSegmentation, seg_target: MCSSegmentation, ridge: float = 0.01
) -> MCSSegmentation:
    """``seg_source`` with every part's affine set to one linear map ``L`` ``[2, 2]`` that takes
    the target's centred part centres to the source's (weighted least squares, weights
    ``min`` of the two part areas, ``ridge`` times the mean variance added towards ``L = 0``
    for stability); with identity target affines, :func:`part_motion_grid` then maps each
    target part onto the same source part: ``L (z - p_T^k) + p_S^k``."""
    area_s, area_t = (seg.masks[:, 1:].float().mean((2, 3)) for seg in (seg_source, seg_target))
    weight = torch.minimum(area_s, area_t)
    weight = weight / weight.sum(1, keepdim=True).clamp_min(1e-12)  # [B, K]
    d_t, d_s = (
        shift.float() - (weight[..., None] * shift.float()).sum(1, keepdim=True)
        for shift in (seg_target.shift, seg_source.shift)
    )
    c_tt = torch.einsum("bk,bki,bkj->bij", weight, d_t, d_t)
    c_st = torch.einsum("bk,bki,bkj->bij", weight, d_s, d_t)
    reg = ridge * c_tt.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-8)
    eye = torch.eye(2, device=c_tt.device, dtype=c_tt.dtype)
    linear = c_st @ torch.linalg.inv(c_tt + reg[:, None, None] * eye)  # [B, 2, 2]
    affine = linear[:, None].expand_as(seg_source.affine).to(seg_source.affine.dtype)
    return MCSSegmentation(seg_source.masks, seg_source.shift, affine)


class PartSwapper:
    """Swap parts of a source image into target images or videos at full resolution.

    Args:
        model_or_name: an :class:`MCSModel`, or any part segmenter (e.g. SCOPS, or an MCS
            segmenter alone; ``render="pixels"`` only), or a checkpoint folder / Hub repo id.
        device: torch device (default: CUDA when available).
        render: ``"generator"`` (the paper) or ``"pixels"`` (the source's own pixels warped by
            the part motion; see the module docstring); default: ``"generator"`` for an
            :class:`MCSModel`, else ``"pixels"``.

        correspondence: a :class:`~copart_hub.models.dve.DenseDescriptorNet` (or its
            checkpoint): each part then moves by the affine fitted on where its target pixels'
            descriptors match in the source (:func:`descriptor_alignment`), which holds across
            instances (two people's faces) where a model's own part motion may not.

    Raises ``TypeError`` when the model is not a part model, ``ValueError`` for an unknown
    ``render`` or ``"generator"`` without a generator.
    """

    def __init__(
        self,
        model_or_name: CopartModel | str | Path,
        device: Any = None,
        render: str | None = None,
        correspondence: DenseDescriptorNet | str | Path | None = None,
    ) -> None:
        model = _prepare(model_or_name, CopartModel, device)
        if isinstance(model, MCSModel):
            self.parts, self.generator = model.segmenter, model.generator
        elif isinstance(model, PartModel):
            self.parts = model if isinstance(model, MCSSegmenter) else CentreParts(model)
            self.generator = None
        else:
            raise TypeError(
                f"{model_or_name!s} is a {type(model).__name__}, not an MCSModel or a part model"
            )
        render = render or ("generator" if self.generator is not None else "pixels")
        if render not in RENDERS:
            raise ValueError(f"render must be one of {RENDERS}, got {render!r}")
        if render == "generator" and self.generator is None:
            raise ValueError(
                f"render='generator' needs an MCS model with its generator; "
                f"{type(model).__name__} swaps with render='pixels'"
            )
        self.model, self.render = model, render
        self.device = next(self.model.parameters()).device
        self.matcher = None
        if correspondence is not None:
            descriptors = _prepare(correspondence, DenseDescriptorNet, self.device)
            self.matcher = DescriptorMatcher(descriptors, self.device)
        self.margin = CROP_MARGIN
        self.feather = FEATHER

    @property
    def num_parts(self) -> int:
        return self.model.num_parts

    # -- building blocks ---------------------------------------------------------------------

    def _motion_source(
        self,
        seg_source: MCSSegmentation,
        seg_target: MCSSegmentation,
        source: Image.Image,
        target: Image.Image,
    ) -> MCSSegmentation:
        """The source segmentation whose motion to the target the swap follows (``source``,
        ``target``: the two located crops): fitted on descriptor matches with a
        ``correspondence`` model (:func:`descriptor_alignment`), else as segmented (an MCS
        segmenter's learned affines), or aligned on the part centres."""
        if self.matcher is not None:
            described = (self.matcher.describe(im)[None] for im in (source, target))
            return descriptor_alignment(seg_source, seg_target, *described)
        if isinstance(self.parts, CentreParts):
            return centre_alignment(seg_source, seg_target)
        return seg_source

    def _to_model(self, image: Image.Image) -> Tensor:
        """PIL image -> ``[1, 3, h, w]`` at the model's input size on the model's device."""
        return image_to_tensor(image, self.model.input_size)[None].to(self.device)

    @torch.no_grad()
    def locate(self, image: Image.Image) -> Box:
        """Square crop ``(top, left, height, width)`` around the object's foreground (argmax of
        the masks upsampled bilinearly to the image, a band of rows at a time)."""
        masks = self.parts.segment(self._to_model(image)).masks[0].float().cpu()
        fg = np.empty((image.height, image.width), dtype=bool)
        for rows, band in upsample_bands(masks, (image.height, image.width)):
            fg[rows] = band.max(0).indices.numpy() != 0  # argmax, faster over dim 0
        return _square_box(fg, image.height, image.width, self.margin)

    def _crop(self, image: Image.Image) -> tuple[Box, Image.Image, Tensor]:
        """The located crop: its box, its pixels and its ``[1, 3, h, w]`` model input."""
        top, left, h, w = box = self.locate(image)
        region = image.crop((left, top, left + w, top + h))
        return box, region, self._to_model(region)

    def _prepare_source(self, source: ImageInput) -> _Source:
        """Source -> its located crop, segmentation, encoded features of every level and
        full-resolution pixels (computed once for every target frame)."""
        _, region, crop = self._crop(load_image(source))
        pixels = torch.from_numpy(np.array(region, dtype=np.float32) / 255).permute(2, 0, 1)
        with torch.no_grad():
            features = self.generator.encode_levels(crop) if self.render == "generator" else []
            segmentation = self.parts.segment(crop)
        return _Source(crop, region, segmentation, features, pixels[None].to(self.device))

    @torch.no_grad()
    def transfer_points(
        self, source: ImageInput, target: ImageInput, points: np.ndarray, motion: bool = True
    ) -> np.ndarray:
        """Where a swap takes target pixels from: ``points`` ``[N, 2]`` ``(x, y)`` in target
        pixels -> ``[N, 2]`` in source pixels, under the part motion between the two located
        crops (the motion both renders follow; ``motion=False``: none, crop onto crop, the
        baseline a motion must beat). A swap lands on the same part when a target landmark
        maps onto the source's same landmark."""
        xy = torch.as_tensor(np.asarray(points, dtype=np.float32), device=self.device)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"points must be [N, 2] (x, y), got shape {tuple(xy.shape)}")
        (s_top, s_left, s_h, s_w), s_region, s_crop = self._crop(load_image(source))
        (t_top, t_left, t_h, t_w), t_region, t_crop = self._crop(load_image(target))
        seg_target = self.parts.segment(t_crop)
        seg_source = self._motion_source(self.parts.segment(s_crop), seg_target, s_region, t_region)
        if motion:
            grid = part_motion_grid(seg_target, seg_source).float().permute(0, 3, 1, 2)
        else:
            grid = coordinate_grid(2, 2, "inclusive", self.device).permute(2, 0, 1)[None]
        scale = xy.new_tensor([max(t_w - 1, 1), max(t_h - 1, 1)])
        where = 2 * (xy - xy.new_tensor([t_left, t_top])) / scale - 1
        where = where.view(1, 1, -1, 2)
        moved = F.grid_sample(grid, where, padding_mode="border", align_corners=True)[0, :, 0].T
        # [N, 2] in the source crop's inclusive coordinates
        out = (moved + 1) / 2 * xy.new_tensor([max(s_w - 1, 1), max(s_h - 1, 1)])
        return (out + xy.new_tensor([s_left, s_top])).cpu().numpy()

    @torch.no_grad()
    def _swap_frame(
        self,
        source: _Source,
        target: Image.Image,
        parts: list[int],
        hard: bool,
        use_source_segmentation: bool,
        box: Box | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One target frame -> (``uint8 [H, W, 3]`` result, ``float32 [H, W]`` paste alpha).

        :meth:`MCSModel.part_swap` on the crop ``box`` (default: located in this frame),
        reusing the source segmentation, or the source's pixels warped (``render="pixels"``).
        The mask is feathered at the model's resolution (Gaussian of ``feather`` times the
        crop side, and a border taper at the crop's edge).
        """
        top, left, h, w = box if box is not None else self.locate(target)
        region = target.crop((left, top, left + w, top + h))
        tgt = self._to_model(region)
        seg_target = self.parts.segment(tgt)
        seg_source = self._motion_source(source.segmentation, seg_target, source.region, region)
        mask = blend_mask(seg_source, seg_target, parts, hard, use_source_segmentation)
        if self.render == "pixels":
            grid = part_motion_grid(seg_target, seg_source).float().permute(0, 3, 1, 2)
            mh, mw = self.model.input_size
        else:
            swapped = self.generator.swap(
                source.crop, tgt, seg_source, seg_target, mask, source.features
            )
            mh, mw = swapped.shape[-2:]
        sigma = max(0.5, self.feather * max(h, w))  # in crop pixels
        mask = F.interpolate(mask.clamp(0, 1), size=(mh, mw), mode="bilinear")
        mask = _gaussian_blur(mask, sigma * mh / h, sigma * mw / w)[0].clamp(0, 1)
        if self.render == "generator":
            mask = torch.cat([swapped[0].clamp(0, 1), mask])  # [4, mh, mw]: colour and mask
        result = np.array(target, dtype=np.uint8)
        full_alpha = np.zeros(result.shape[:2], dtype=np.float32)
        for rows, band in upsample_bands(mask.cpu(), (h, w), antialias=True):
            if self.render == "pixels":
                colour = _warp_rows(source.pixels, grid, rows, h, w).cpu()
            else:
                colour = band[:3]
            alpha = band[-1].numpy() * _border_taper(rows, h, w, 2 * sigma)
            alpha[alpha < 1 / 512] = 0.0  # below half a grey level: keep the target exactly
            out_rows = slice(top + rows.start, top + rows.stop)
            region = result[out_rows, left : left + w]
            a = alpha[..., None]
            mixed = region * (1 - a) + (colour * 255).permute(1, 2, 0).numpy() * a
            region[...] = np.where(a > 0, np.clip(np.rint(mixed), 0, 255), region)
            full_alpha[out_rows, left : left + w] = alpha
        return result, full_alpha

    # -- public API --------------------------------------------------------------------------

    def swap_image(
        self,
        source: ImageInput,
        target: ImageInput,
        parts: Sequence[int],
        hard: bool = False,
        use_source_segmentation: bool = False,
        return_alpha: bool = False,
    ) -> Image.Image | tuple[Image.Image, np.ndarray]:
        """Swap ``parts`` (indices 0..K, 0 = background) of ``source`` into ``target``.

        Inputs may have any size; the result has the target's full size and equals it outside
        the feathered swap mask (with ``return_alpha``, also returned: ``float32 [H, W]``, the
        weight of the swapped pixels). Raises ``ValueError`` for bad ``parts``.
        """
        parts = _check_parts(parts, self.num_parts)
        target_image = load_image(target)
        src = self._prepare_source(source)
        result, alpha = self._swap_frame(src, target_image, parts, hard, use_source_segmentation)
        return (Image.fromarray(result), alpha) if return_alpha else Image.fromarray(result)

    def swap_video(
        self,
        source: ImageInput,
        target_video_path: str | Path,
        parts: Sequence[int],
        out_path: str | Path,
        hard: bool = False,
        use_source_segmentation: bool = False,
        progress: bool = True,
        max_frames: int | None = None,
    ) -> Path:
        """Swap ``parts`` of ``source`` into every frame of an mp4/gif and write ``out_path``.

        The crop around the object is located in every frame and smoothed over
        ``BOX_SMOOTHING_S`` seconds, so it does not jitter. The output format follows the
        suffix: ``.mp4`` (H.264 when available, else MPEG-4; input fps; no audio; odd sizes are
        padded by one edge pixel to even), ``.gif``, or
        ``.png``/``.jpg`` for a one-frame target. Raises ``ValueError`` for an unsupported
        suffix, an undecodable video, a video longer than ``max_frames``, or an ``out_path``
        that is an input file.
        """
        parts = _check_parts(parts, self.num_parts)
        target_video_path, out_path = Path(target_video_path), Path(out_path)
        suffix = out_path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
            allowed = ", ".join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)
            raise ValueError(f"unsupported output suffix {out_path.suffix!r} (use {allowed})")
        inputs = [target_video_path] + ([Path(source)] if isinstance(source, (str, Path)) else [])
        for path in inputs:
            if _same_path(out_path, path):
                raise ValueError(f"refusing to overwrite input file {path}")
        frames, fps = read_video(target_video_path, max_frames=max_frames)
        if suffix in IMAGE_SUFFIXES and len(frames) != 1:
            raise ValueError(
                f"{out_path.suffix} output needs a one-frame target, but {target_video_path} "
                f"has {len(frames)} frames (use .mp4 or .gif)"
            )
        results = self.swap_frames(
            source, frames, fps, parts, hard, use_source_segmentation, progress
        )
        write_video(results, fps, out_path)
        return out_path

    def swap_frames(
        self,
        source: ImageInput,
        frames: np.ndarray,
        fps: float,
        parts: Sequence[int],
        hard: bool = False,
        use_source_segmentation: bool = False,
        progress: bool = True,
    ) -> list[np.ndarray]:
        """:meth:`swap_video` on decoded frames ``uint8 [T, H, W, 3]`` -> swapped frames.

        ``fps`` (0 = unknown) sets the crop-box smoothing window.
        """
        parts = _check_parts(parts, self.num_parts)
        src = self._prepare_source(source)
        images = [Image.fromarray(f) for f in frames]
        boxes = [
            self.locate(img)
            for img in tqdm(images, desc="locate", unit="frame", disable=not progress)
        ]
        window = max(1, round((fps if fps > 0 else DEFAULT_FPS) * BOX_SMOOTHING_S))
        boxes = smooth_boxes(boxes, frames.shape[1], frames.shape[2], window)
        return [
            self._swap_frame(src, img, parts, hard, use_source_segmentation, box)[0]
            for img, box in tqdm(
                list(zip(images, boxes, strict=True)),
                desc="part swap",
                unit="frame",
                disable=not progress,
            )
        ]


def _same_path(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_video(frames: list[np.ndarray], fps: float, path: str | Path) -> Path:
    """Frames -> ``path`` by suffix: ``.mp4``, ``.gif`` (``fps`` 0 = 25), or the first frame as
    ``.png`` / ``.jpg``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = fps if fps > 0 else DEFAULT_FPS
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        _write_mp4(frames, fps, path)
    elif suffix == ".gif":
        _write_gif(frames, fps, path)
    else:
        Image.fromarray(frames[0]).save(path)
    return path


def _write_mp4(frames: list[np.ndarray], fps: float, path: Path) -> None:
    """``uint8 [H, W, 3]`` frames -> mp4 (H.264 if PyAV has it, else MPEG-4), yuv420p."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.pad(array, pad, mode="edge"), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _write_gif(frames: list[np.ndarray], fps: float, path: Path) -> None:
    """Frames -> looping GIF (PIL merges consecutive identical frames)."""
    images = [Image.fromarray(f) for f in frames]
    duration = max(10, round(1000 / fps))
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)


def part_legend(model: MCSModel | PartSwapper, names: Sequence[str] | None = None) -> Image.Image:
    """Legend of the part indices (0 = background, 1..K) and colours, to choose ``parts``."""
    if isinstance(model, PartSwapper):
        model = model.model
    return render_legend(model.num_parts, names)
