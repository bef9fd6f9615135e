"""Motion-supervised co-part segmentation, "MCS" (Siarohin, Roy et al., ICPR 2020; SPEC A2, C).

A segmenter predicts, from one RGB frame in ``[0, 1]``, K+1 soft masks (channel 0 =
background) and one affine motion ``(p_k, A_k)`` per part, at 1/4 of the input resolution. A
generator reconstructs a target frame T from a source frame S by warping the *encoded* source
with the part motions, mixed by the target's soft masks:

    T_k(z) = A_k^S (A_k^T)^-1 (z - p_k^T) + p_k^S,   T_0(z) = z,   T(z) = sum_k M_T^k(z) T_k(z)

with ``z`` on the inclusive ``[-1, 1]`` grid and ``grid_sample(..., align_corners=True)`` (the
semantics the official code was trained with, SPEC A2.7). Part swap (SPEC C) blends encoder
features, ``enc_T (1 - m) + warp(enc_S) m``, and re-decodes the whole frame. Losses live in
:mod:`copart_hub.losses.mcs`. Unlike the official code, nothing needs a FOMM checkpoint: any K
trains from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hub.base import CopartModel
from ..hub.registry import register_architecture, register_model
from ..ops.antialias import AntiAliasDownsample
from ..ops.coordinates import coordinate_grid, soft_argmax, spatial_softmax
from .mcs_blocks import DownBlock, Hourglass, ResBlock, SameBlock, UpBlock, level_channels
from .part_base import MAX_PARTS, MAX_WIDTH, PartModel, check_input_size, check_int

__all__ = [
    "MCSGenerator",
    "MCSModel",
    "MCSSegmentation",
    "MCSSegmenter",
    "part_flows",
    "part_motion_grid",
    "swap_mask",
    "visibility_mask",
    "warp_with_grid",
]

PAPER_URL = "https://arxiv.org/abs/2004.03234"
IDENTITY_2X2 = (1.0, 0.0, 0.0, 1.0)


@dataclass
class MCSSegmentation:
    """Segmenter output at the mask resolution ``h x w`` (1/4 of the input by default).

    Attributes:
        masks: ``[B, K+1, h, w]`` soft masks (softmax over channels, channel 0 = background).
        shift: ``[B, K, 2]`` part centres ``p_k`` ``(x, y)`` in ``[-1, 1]`` (inclusive grid).
        affine: ``[B, K, 2, 2]`` part affines ``A_k`` acting on ``(x, y)``.
    """

    masks: Tensor
    shift: Tensor
    affine: Tensor


@register_architecture("mcs_segmenter")
class MCSSegmenter(PartModel, paper_url=PAPER_URL, tags=["mcs", "motion-cosegmentation"]):
    """MCS segmentation module (SPEC A2.2): anti-aliased 1/4 downsample, Hourglass, 3 heads.

    Inputs are RGB in ``[0, 1]`` (``image_mean = 0``, ``image_std = 1``). ``forward`` returns
    the segmentation logits ``[B, K+1, ceil(H/4), ceil(W/4)]`` so that the generic part pipeline
    and CLI work; :meth:`segment` returns masks, shifts and affines.

    Args:
        num_parts: K (any K; the official configs use 5, 10 or 15).
        input_size: ``(H, W)`` images are resized to by the pipelines.
        block_expansion, max_features, num_blocks: Hourglass widths and depth (official 32,
            1024, 5); ``H * scale_factor`` must be at least ``2**num_blocks``.
        scale_factor: anti-aliased downsampling before the Hourglass (official 0.25).
        temperature: of the spatial softmax of the shift heatmaps (official 0.1).
    """

    image_mean = (0.0, 0.0, 0.0)
    image_std = (1.0, 1.0, 1.0)

    def __init__(
        self,
        num_parts: int = 10,
        input_size: tuple[int, int] = (256, 256),
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        scale_factor: float = 0.25,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        num_parts = check_int("num_parts", num_parts, 1, MAX_PARTS)
        check_int("block_expansion", block_expansion, 1, MAX_WIDTH)
        check_int("max_features", max_features, 1, MAX_WIDTH)
        check_int("num_blocks", num_blocks, 1, 12)
        self.num_parts = num_parts
        self.input_size = check_input_size(input_size)
        self.temperature = temperature
        self.downsample = AntiAliasDownsample(scale_factor)
        self.predictor = Hourglass(3, block_expansion, max_features, num_blocks)
        channels = self.predictor.out_channels
        self.segmentation_head = nn.Conv2d(channels, num_parts + 1, 7, padding=3)
        self.shift_head = nn.Conv2d(channels, num_parts, 7, padding=3)
        self.affine_head = nn.Conv2d(channels, 4 * num_parts, 7, padding=3)
        nn.init.zeros_(self.affine_head.weight)
        with torch.no_grad():
            self.affine_head.bias.copy_(torch.tensor(IDENTITY_2X2).repeat(num_parts))

    def forward_features(self, images: Tensor) -> Tensor:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> Hourglass features ``[B, C, h, w]``."""
        return self.predictor(self.downsample(images))

    def forward(self, pixel_values: Tensor) -> Tensor:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> segmentation logits ``[B, K+1, h, w]``."""
        return self.segmentation_head(self.forward_features(pixel_values))

    def segment(self, images: Tensor) -> MCSSegmentation:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> masks, shifts and affines (SPEC A2.2).

        ``A_k = sum_z H_k(z) a_k(z)`` with ``H_k`` the spatially softmaxed shift heatmap.
        """
        features = self.forward_features(images)
        b, _, h, w = features.shape
        heatmaps = spatial_softmax(self.shift_head(features), self.temperature)  # [B, K, h, w]
        local_affine = self.affine_head(features).view(b, self.num_parts, 4, h, w)
        affine = torch.einsum("bkhw,bkchw->bkc", heatmaps, local_affine)
        return MCSSegmentation(
            masks=self.segmentation_head(features).softmax(dim=1),
            shift=soft_argmax(heatmaps, "inclusive"),
            affine=affine.view(b, self.num_parts, 2, 2),
        )


def part_flows(seg_target: MCSSegmentation, seg_source: MCSSegmentation) -> Tensor:
    """Each segment's own target -> source map ``[B, K+1, h, w, 2]`` on the inclusive grid of
    the target masks: the identity ``z`` for the background (channel 0), ``A_S A_T^-1 (z - p_T)
    + p_S`` for part k."""
    masks = seg_target.masks
    b, k1, h, w = masks.shape
    if seg_source.shift.shape != seg_target.shift.shape or seg_target.shift.shape[1] != k1 - 1:
        raise ValueError(
            f"shifts {tuple(seg_source.shift.shape)} / {tuple(seg_target.shift.shape)} must both "
            f"be [B, K, 2] with K + 1 = {k1} mask channels"
        )
    z = coordinate_grid(h, w, "inclusive", masks.device, masks.dtype)  # [h, w, 2]
    motion = seg_source.affine @ torch.linalg.inv(seg_target.affine)  # [B, K, 2, 2]
    relative = z - seg_target.shift[:, :, None, None]  # [B, K, h, w, 2]
    parts = torch.einsum("bkij,bkhwj->bkhwi", motion, relative)
    parts = parts + seg_source.shift[:, :, None, None]
    return torch.cat([z.expand(b, 1, h, w, 2), parts], dim=1)


def part_motion_grid(seg_target: MCSSegmentation, seg_source: MCSSegmentation) -> Tensor:
    """Target -> source sampling grid ``[B, h, w, 2]`` at the target mask resolution (A2.3).

    ``T(z) = M_T^0(z) z + sum_{k>=1} M_T^k(z) (A_S A_T^-1 (z - p_T) + p_S)``, with ``z`` on the
    inclusive grid: use it with ``grid_sample(..., align_corners=True)`` (:func:`warp_with_grid`).
    """
    flows = part_flows(seg_target, seg_source)
    return (seg_target.masks.unsqueeze(-1) * flows).sum(1)


def visibility_mask(masks_source: Tensor, masks_target: Tensor) -> Tensor:
    """``V = 1 - fg_S (1 - sg(fg_T))`` ``[B, 1, h, w]`` from masks ``[B, K+1, h, w]`` (A2.4).

    ``fg = sum_{k>=1} M^k``. The stop-gradient is on the target foreground only: V switches off
    source-foreground features where the target is background, for the decoder to inpaint.
    """
    fg_source = masks_source[:, 1:].sum(1, keepdim=True)
    fg_target = masks_target[:, 1:].sum(1, keepdim=True).detach()
    return 1 - fg_source * (1 - fg_target)


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear (``align_corners=True``) resize of ``[B, C, h, w]`` maps; no-op at equal size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def warp_with_grid(x: Tensor, grid: Tensor) -> Tensor:
    """``grid_sample(x, grid, align_corners=True)`` with ``grid`` ``[B, h, w, 2]`` first resized
    (bilinearly, as coordinates) to the size of ``x`` ``[B, C, H, W]``; zero padding."""
    grid = _resize(grid.permute(0, 3, 1, 2), x.shape[-2:]).permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def swap_mask(masks: Tensor, swap_index: Sequence[int], hard: bool = False) -> Tensor:
    """Blend mask ``m = sum_{c in swap_index} masks_c`` ``[B, 1, h, w]`` (SPEC C; 0 = background).

    ``hard`` thresholds it at 0.5.
    """
    k1 = masks.shape[1]
    if not swap_index or any(not 0 <= c < k1 for c in swap_index):
        raise ValueError(
            f"swap_index must be a non-empty list of channels in [0, {k1}), got {list(swap_index)}"
        )
    mask = masks[:, list(swap_index)].sum(1, keepdim=True)
    return (mask > 0.5).to(mask.dtype) if hard else mask


def blend_mask(
    seg_source: MCSSegmentation,
    seg_target: MCSSegmentation,
    swap_index: Sequence[int],
    hard: bool = False,
    use_source_segmentation: bool = False,
) -> Tensor:
    """The swap mask ``[B, 1, h, w]`` in the target frame (SPEC C): the swapped parts' masks of
    the target, or of the source warped with the part motion (``use_source_segmentation``)."""
    if use_source_segmentation:
        mask = swap_mask(seg_source.masks, swap_index, hard)
        return warp_with_grid(mask, part_motion_grid(seg_target, seg_source))
    return swap_mask(seg_target.masks, swap_index, hard)


class MCSGenerator(nn.Module):
    """MCS reconstruction module (SPEC A2.4): encoder, part-motion warp, visibility, decoder.

    Encoder: SameBlock 7x7 then ``num_down_blocks`` DownBlocks (3 -> 64 -> 128 -> 256, 1/4
    resolution); bottleneck: pre-activation ResBlocks; decoder: UpBlocks back to
    ``block_expansion`` channels, conv 7x7, sigmoid.

    ``skips=True`` (beyond the paper, as later warping generators do): every encoder level's
    features are warped by the same part motion, masked by V, and added to the decoder's
    output at that level, so detail of the source reaches the prediction without passing the
    1/4-resolution bottleneck. No extra parameters: the same weights load either way.
    """

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        estimate_visibility: bool = True,
        skips: bool = False,
    ) -> None:
        super().__init__()
        check_int("block_expansion", block_expansion, 1, MAX_WIDTH)
        check_int("max_features", max_features, 1, MAX_WIDTH)
        check_int("num_down_blocks", num_down_blocks, 0, 8)
        check_int("num_bottleneck_blocks", num_bottleneck_blocks, 0, 64)
        width = [
            level_channels(block_expansion, max_features, i) for i in range(num_down_blocks + 1)
        ]
        self.first = SameBlock(num_channels, width[0], 7)
        self.down = nn.ModuleList(DownBlock(width[i], width[i + 1]) for i in range(num_down_blocks))
        self.bottleneck = nn.Sequential(
            *(ResBlock(width[-1]) for _ in range(num_bottleneck_blocks))
        )
        self.up = nn.ModuleList(
            UpBlock(width[i + 1], width[i]) for i in reversed(range(num_down_blocks))
        )
        self.final = nn.Conv2d(width[0], num_channels, 7, padding=3)
        self.estimate_visibility = estimate_visibility
        self.skips = skips

    def encode_levels(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> the features of every level, ``[B, C_l, H / 2**l, W / 2**l]``
        for ``l = 0 .. num_down_blocks`` (floored per block); the last is :meth:`encode`'s."""
        levels = [self.first(images)]
        for block in self.down:
            levels.append(block(levels[-1]))
        return levels

    def encode(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> features ``[B, C, H / 2**n, W / 2**n]`` (floored per block)."""
        return self.encode_levels(images)[-1]

    def decode(
        self,
        features: Tensor,
        output_size: Sequence[int] | None = None,
        skips: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Bottleneck + decoder + sigmoid: ``[B, C, h, w]`` -> images ``[B, 3, H, W]`` in (0, 1).

        ``output_size`` ``(H, W)`` restores sizes the encoder floored (odd sizes); the default
        doubles per block. ``skips`` (levels ``0 .. n - 1`` as :meth:`encode_levels` orders
        them) are added to the decoder's output at their level.
        """
        x = self.bottleneck(features)
        n = len(self.up)
        for i, block in enumerate(self.up):
            size = None
            if output_size is not None:
                factor = 2 ** (n - 1 - i)
                size = (output_size[0] // factor, output_size[1] // factor)
            x = block(x, size)
            if skips is not None:
                x = x + skips[n - 1 - i]
        return torch.sigmoid(self.final(x))

    def warp_source(
        self, source_features: Tensor, seg_source: MCSSegmentation, seg_target: MCSSegmentation
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Warp encoded source features into the target frame and mask them by V.

        Returns ``(features [B, C, h, w], grid [B, h_m, w_m, 2], visibility [B, 1, h_m, w_m])``;
        the grid and V are at the mask resolution and resized to the features' if needed.
        V is all ones without ``estimate_visibility``.
        """
        grid, visibility = self.motion(seg_source, seg_target)
        return self._warp_level(source_features, grid, visibility), grid, visibility

    def motion(
        self, seg_source: MCSSegmentation, seg_target: MCSSegmentation
    ) -> tuple[Tensor, Tensor]:
        """The part-motion sampling grid ``[B, h_m, w_m, 2]`` (target -> source) and the
        visibility V ``[B, 1, h_m, w_m]`` (all ones without ``estimate_visibility``)."""
        grid = part_motion_grid(seg_target, seg_source)
        if self.estimate_visibility:
            return grid, visibility_mask(seg_source.masks, seg_target.masks)
        return grid, torch.ones_like(seg_target.masks[:, :1])

    @staticmethod
    def _warp_level(features: Tensor, grid: Tensor, visibility: Tensor) -> Tensor:
        """One encoder level warped by the part-motion ``grid`` and masked by V."""
        return warp_with_grid(features, grid) * _resize(visibility, features.shape[-2:])

    def forward(
        self, source: Tensor, seg_source: MCSSegmentation, seg_target: MCSSegmentation
    ) -> dict[str, Tensor]:
        """Reconstruct the target from the source ``[B, 3, H, W]``.

        Returns ``prediction`` ``[B, 3, H, W]``, ``deformed`` (the source image warped by the
        flow, for visualisation) ``[B, 3, H, W]``, ``visibility`` ``[B, 1, h, w]`` and the
        part-motion sampling ``grid`` ``[B, h, w, 2]`` (for flow supervision).
        """
        levels = self.encode_levels(source)
        features, grid, visibility = self.warp_source(levels[-1], seg_source, seg_target)
        skips = [self._warp_level(x, grid, visibility) for x in levels[:-1]] if self.skips else None
        return {
            "prediction": self.decode(features, source.shape[-2:], skips),
            "deformed": warp_with_grid(source, grid),
            "visibility": visibility,
            "grid": grid,
        }

    def swap(
        self,
        source: Tensor,
        target: Tensor,
        seg_source: MCSSegmentation,
        seg_target: MCSSegmentation,
        mask: Tensor,
        source_features: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Part swap (SPEC C): ``decode(enc_T (1 - m) + V warp(enc_S) m)`` ``[B, 3, H, W]``,
        at every level with ``skips``.

        ``mask`` ``[B, 1, h, w]`` in the target frame (resized to the features).
        ``source_features`` (``encode_levels(source)``) saves re-encoding one source for many
        targets.
        """
        target_levels = self.encode_levels(target)
        if source_features is None:
            source_features = self.encode_levels(source)
        source_levels = list(source_features)
        grid, visibility = self.motion(seg_source, seg_target)
        blended = []
        levels = range(len(target_levels)) if self.skips else [len(target_levels) - 1]
        for i in levels:
            t = target_levels[i]
            m = _resize(mask, t.shape[-2:])
            blended.append(t * (1 - m) + self._warp_level(source_levels[i], grid, visibility) * m)
        skips = blended[:-1] if self.skips else None
        return self.decode(blended[-1], target.shape[-2:], skips)


@register_architecture("mcs")
class MCSModel(CopartModel, paper_url=PAPER_URL, tags=["mcs", "motion-cosegmentation"]):
    """Segmenter + generator, trained on (source, target) frame pairs of one video (SPEC A2).

    ``seg_*`` arguments configure :class:`MCSSegmenter` and ``gen_*`` :class:`MCSGenerator`
    (defaults: the official Tai-Chi/VoxCeleb sizes). :meth:`segmenter_only` gives the
    segmenter, which saves and loads on its own (``"mcs_segmenter"``).
    """

    def __init__(
        self,
        num_parts: int = 10,
        input_size: tuple[int, int] = (256, 256),
        seg_block_expansion: int = 32,
        seg_max_features: int = 1024,
        seg_num_blocks: int = 5,
        scale_factor: float = 0.25,
        temperature: float = 0.1,
        gen_block_expansion: int = 64,
        gen_max_features: int = 512,
        gen_num_down_blocks: int = 2,
        gen_num_bottleneck_blocks: int = 6,
        estimate_visibility: bool = True,
        gen_skips: bool = False,
    ) -> None:
        super().__init__()
        self.segmenter = MCSSegmenter(
            num_parts=num_parts,
            input_size=input_size,
            block_expansion=seg_block_expansion,
            max_features=seg_max_features,
            num_blocks=seg_num_blocks,
            scale_factor=scale_factor,
            temperature=temperature,
        )
        self.generator = MCSGenerator(
            block_expansion=gen_block_expansion,
            max_features=gen_max_features,
            num_down_blocks=gen_num_down_blocks,
            num_bottleneck_blocks=gen_num_bottleneck_blocks,
            estimate_visibility=estimate_visibility,
            skips=gen_skips,
        )
        self.num_parts = num_parts
        self.input_size = self.segmenter.input_size

    def forward(self, source: Tensor, target: Tensor) -> dict[str, Tensor | MCSSegmentation]:
        """RGB frames ``[B, 3, H, W]`` in [0, 1] -> ``prediction`` (of the target),
        ``deformed``, ``visibility``, ``seg_source`` and ``seg_target``."""
        seg_source = self.segmenter.segment(source)
        seg_target = self.segmenter.segment(target)
        out: dict[str, Tensor | MCSSegmentation] = dict(
            self.generator(source, seg_source, seg_target)
        )
        out.update(seg_source=seg_source, seg_target=seg_target)
        return out

    def segmenter_only(self) -> MCSSegmenter:
        """The segmentation module (shares weights; ``save_pretrained`` writes it alone)."""
        return self.segmenter

    def part_swap(
        self,
        source: Tensor,
        target: Tensor,
        swap_index: Sequence[int],
        hard: bool = False,
        use_source_segmentation: bool = False,
    ) -> Tensor:
        """Swap the ``swap_index`` parts of ``source`` into ``target`` ``[B, 3, H, W]`` (SPEC C).

        The blend mask comes from the target's masks, or from the source's warped into the
        target frame with the part motion (``use_source_segmentation``).
        """
        seg_source = self.segmenter.segment(source)
        seg_target = self.segmenter.segment(target)
        mask = blend_mask(seg_source, seg_target, swap_index, hard, use_source_segmentation)
        return self.generator.swap(source, target, seg_source, seg_target, mask)


register_model("mcs_k10", "mcs", "MCS segmenter + generator, K=10, 256 px (official sizes)")
register_model("mcs_segmenter_k10", "mcs_segmenter", "MCS segmentation module alone, K=10, 256 px")
register_model(  # as timm's test_* models: a few thousand weights, for tests and smoke runs
    "mcs_test",
    "mcs",
    "tiny MCS (hourglass 4 wide, 3 levels; generator 4 wide) for tests and smoke runs",
    seg_block_expansion=4,
    seg_max_features=16,
    seg_num_blocks=3,
    gen_block_expansion=4,
    gen_max_features=8,
    gen_num_bottleneck_blocks=1,
)
