"""MCS losses (SPEC A2.5): multi-scale perceptual reconstruction and shift/affine equivariance,
plus our flow supervision (:func:`flow_loss`: the part-motion flow against a dense target flow).

The official reconstruction loss is an ImageNet VGG-19 pyramid, which is not available here
(SPEC 0). :class:`PerceptualPyramid` therefore takes one of three feature nets:

* ``"random"`` (default): a frozen, randomly initialised VGG-like conv stack (fixed seed);
  random conv features give a usable perceptual signal without any pretrained weights.
* ``"vgg19"``: torchvision VGG-19 relu1_1..relu5_1 with ImageNet normalisation, read from a
  local weight file the user provides; nothing is ever downloaded.
* ``"none"``: no features; with ``pixel_weight > 0`` a plain L1 pyramid on pixels, and/or with
  ``ssim_weight > 0`` a structural-similarity (SSIM, kornia) pyramid.
* ``"encoder"`` (:class:`EmaEncoderFeatures`, built by the training task): the generator's own
  encoder, as a frozen copy updated as an exponential moving average of the trained one.
* or any ``nn.Module`` mapping ``[B, 3, H, W]`` in [0, 1] to a list of feature maps (or one
  map), e.g. a frozen timm ``features_only`` model with its own normalisation.

The default adds a pixel L1 term (weight 10) to the random features; the official setting is
``feature_net="vgg19", pixel_weight=0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from kornia.losses import ssim_loss
from timm.utils import ModelEmaV3
from torch import Tensor, nn

from ..models.mcs import MCSGenerator, MCSSegmentation, part_flows
from ..ops.antialias import PYRAMID_SCALES, Border, image_pyramid
from ..ops.coordinates import coordinate_grid
from ..ops.warps import TPSTransform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))  # relu1_1 .. relu5_1
RANDOM_CHANNELS = (32, 64, 128, 256, 256)


@dataclass
class McsLossWeights:
    """Loss weights (SPEC A2.5): all five perceptual layers 10, both equivariance terms 10.

    ``perceptual`` and ``pixel`` are passed to :class:`PerceptualPyramid`, whose output is the
    weighted reconstruction loss; ``pixel`` (0 in the official code) is our addition for the
    random-feature default, as are ``ssim`` (an SSIM pyramid term, :class:`PerceptualPyramid`),
    ``flow`` (:func:`flow_loss`), ``still_background`` (:func:`still_background_loss`),
    ``still_parts`` (:func:`still_parts_loss`) and ``background`` (SCOPS's saliency
    constraint, :func:`~copart_hub.losses.scops.background_loss`, on the target's masks against
    an unsupervised foreground); 0 = off, the official setting.
    """

    perceptual: tuple[float, ...] = (10.0, 10.0, 10.0, 10.0, 10.0)
    pixel: float = 10.0
    ssim: float = 0.0
    equivariance_shift: float = 10.0
    equivariance_affine: float = 10.0
    flow: float = 0.0
    still_background: float = 0.0
    background: float = 0.0
    still_parts: float = 0.0

    OPTIONAL_TERMS: ClassVar[tuple[str, ...]] = (
        "flow",
        "still_background",
        "background",
        "still_parts",
    )

    def total(
        self, reconstruction: Tensor, shift: Tensor, affine: Tensor, **terms: Tensor | None
    ) -> Tensor:
        """``reconstruction + w_shift shift + w_affine affine`` plus each of the optional
        ``terms`` (keyword = its weight's name: ``flow``, ``still_background``, ``background``,
        ``still_parts``) times its weight; a term given as None is skipped."""
        unknown = set(terms) - set(self.OPTIONAL_TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {self.OPTIONAL_TERMS}")
        total = reconstruction + self.equivariance_shift * shift + self.equivariance_affine * affine
        for name, term in terms.items():
            if term is not None:
                total = total + getattr(self, name) * term
        return total


def run_stages(stages: nn.ModuleList, x: Tensor) -> list[Tensor]:
    """Apply ``stages`` in turn to ``x``; every stage's output, in order."""
    features = []
    for stage in stages:
        x = stage(x)
        features.append(x)
    return features


class _FrozenFeatures(nn.Module):
    """Stages applied in turn to normalised images; frozen, returns every stage's output."""

    def __init__(self, stages: nn.ModuleList, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.stages = stages.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> one ``[B, C_i, H_i, W_i]`` map per stage."""
        return run_stages(self.stages, (images - self.mean) / self.std)


def random_feature_net(channels: Sequence[int] = RANDOM_CHANNELS, seed: int = 0) -> nn.Module:
    """Frozen random VGG-like pyramid: stage 0 ``conv3x3-ReLU``; stage i ``conv-ReLU-maxpool2
    (ceil)-conv-ReLU``. He-normal weights from ``seed``, zero biases; inputs mapped to [-1, 1].
    Ceil-mode pooling keeps every stage defined for tiny images."""
    generator = torch.Generator().manual_seed(seed)
    stages = nn.ModuleList()
    previous = 3
    for i, width in enumerate(channels):
        layers: list[nn.Module] = []
        if i > 0:
            layers += [nn.Conv2d(previous, previous, 3, padding=1), nn.ReLU()]
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU()]
        stages.append(nn.Sequential(*layers))
        previous = width
    with torch.no_grad():
        for conv in stages.modules():
            if isinstance(conv, nn.Conv2d):
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
                conv.weight.mul_((2 / fan_in) ** 0.5)
                conv.bias.zero_()
    return _FrozenFeatures(stages, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class EmaEncoderFeatures(nn.Module):
    """The generator's own encoder as perceptual features: a frozen copy of its first block and
    down blocks, moved towards the trained ones by :meth:`update` (timm's ``ModelEmaV3``:
    ``decay`` per call, weights and BatchNorm statistics averaged alike).

    Returns one map per block (``1 + num_down_blocks``: full, 1/2, 1/4 resolution); inputs are
    RGB in [0, 1], as the generator's.
    """

    def __init__(self, generator: MCSGenerator, decay: float = 0.999) -> None:
        super().__init__()
        if not 0 <= decay <= 1:
            raise ValueError(f"decay must be in [0, 1] (1: never updated), got {decay}")
        self.ema = ModelEmaV3(self._stages(generator), decay=decay)
        self.ema.module.requires_grad_(False)

    @staticmethod
    def _stages(generator: MCSGenerator) -> nn.ModuleList:
        return nn.ModuleList([generator.first, *generator.down])

    @property
    def stages(self) -> nn.ModuleList:
        """The averaged copy of the encoder's blocks."""
        return self.ema.module

    @property
    def decay(self) -> float:
        return self.ema.decay

    @decay.setter
    def decay(self, value: float) -> None:
        self.ema.decay = value

    def forward(self, images: Tensor) -> list[Tensor]:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> one ``[B, C_i, H / 2**i, W / 2**i]`` map per block."""
        return run_stages(self.stages, images)

    @torch.no_grad()
    def update(self, generator: MCSGenerator) -> None:
        """``teacher <- decay teacher + (1 - decay) generator`` (weights and statistics)."""
        self.ema.update(self._stages(generator))


def _load_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def vgg19_feature_net(weights: str | Path) -> nn.Module:
    """Frozen torchvision VGG-19 relu1_1..relu5_1 (slices [0:2], [2:7], [7:12], [12:21],
    [21:30]) with ImageNet normalisation, from a local state dict (``.pth`` or
    ``.safetensors``) of the full model (``features.*``, ``classifier.*`` ignored) or of
    ``features`` alone. Never downloads. Needs at least 16 px at the smallest pyramid scale."""
    from torchvision.models import vgg19

    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG-19 weight file {str(path)!r} does not exist; copart_hub never downloads "
            "weights: pass the path of a local torchvision vgg19 state dict, or use "
            "feature_net='random'"
        )
    state = {}
    for key, value in _load_state(path).items():
        key = key.removeprefix("features.")
        index = key.split(".")[0]
        if key.startswith("classifier.") or (index.isdigit() and int(index) >= VGG19_SLICES[-1][1]):
            continue
        state[key] = value
    with torch.device("meta"):
        features = vgg19(weights=None).features[: VGG19_SLICES[-1][1]]
    features.load_state_dict(state, strict=True, assign=True)
    stages = nn.ModuleList(features[a:b] for a, b in VGG19_SLICES)
    return _FrozenFeatures(stages, IMAGENET_MEAN, IMAGENET_STD)


class PerceptualPyramid(nn.Module):
    """``sum_s [ w_px mean|P_s - T_s| + sum_l w_l mean|phi_l(P_s) - phi_l(T_s)| ]`` -> scalar.

    ``P_s`` / ``T_s``: prediction / target at each scale (anti-aliased, built from the full
    images); the target is detached and its features computed without gradient. With
    ``ssim_weight``, ``+ w_ssim (1 - SSIM(P_s, T_s)) / 2`` per scale (``ssim_window`` px;
    scales not larger than the window are skipped).

    Args:
        feature_net: ``"random"``, ``"vgg19"``, ``"none"`` or a module (see the module docs).
        vgg_weights: local VGG-19 weight file (required for ``"vgg19"``).
        scales: pyramid scales (official 1, 0.5, 0.25, 0.125).
        layer_weights: one weight per feature map (official: five times 10).
        pixel_weight: weight of the pixel L1 term (0 disables it).
        ssim_weight, ssim_window: weight (0 disables it) and window of the SSIM term.
        random_channels, seed: widths and seed of the ``"random"`` net.
        border: padding of the anti-aliasing blur.
    """

    def __init__(
        self,
        feature_net: str | nn.Module = "random",
        *,
        vgg_weights: str | Path | None = None,
        scales: Sequence[float] = PYRAMID_SCALES,
        layer_weights: Sequence[float] = McsLossWeights.perceptual,
        pixel_weight: float = McsLossWeights.pixel,
        ssim_weight: float = McsLossWeights.ssim,
        ssim_window: int = 5,
        random_channels: Sequence[int] = RANDOM_CHANNELS,
        seed: int = 0,
        border: Border = "replicate",
    ) -> None:
        super().__init__()
        if isinstance(feature_net, nn.Module):
            self.features: nn.Module | None = feature_net.requires_grad_(False)
        elif feature_net == "random":
            if len(random_channels) != len(layer_weights):
                raise ValueError(
                    f"{len(random_channels)} random stages but {len(layer_weights)} layer weights"
                )
            self.features = random_feature_net(random_channels, seed)
        elif feature_net == "vgg19":
            if vgg_weights is None:
                raise ValueError("feature_net='vgg19' needs vgg_weights (a local file path)")
            if len(layer_weights) != len(VGG19_SLICES):
                raise ValueError(f"VGG-19 has 5 feature layers, got {len(layer_weights)} weights")
            self.features = vgg19_feature_net(vgg_weights)
        elif feature_net == "none":
            if pixel_weight <= 0 and ssim_weight <= 0:
                raise ValueError("feature_net='none' needs pixel_weight > 0 or ssim_weight > 0")
            self.features = None
        else:
            raise ValueError(
                f"feature_net must be 'random', 'vgg19', 'none' or a module, got {feature_net!r}"
            )
        self.scales = tuple(scales)
        self.layer_weights = tuple(layer_weights)
        self.pixel_weight = pixel_weight
        self.ssim_weight, self.ssim_window = ssim_weight, ssim_window
        self.border = border

    def train(self, mode: bool = True) -> PerceptualPyramid:
        """The feature net always stays in eval mode (frozen statistics)."""
        super().train(mode)
        if self.features is not None:
            self.features.eval()
        return self

    def _features(self, images: Tensor) -> Sequence[Tensor]:
        features = self.features(images)
        return [features] if isinstance(features, Tensor) else features

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> scalar loss (gradient into ``prediction`` only)."""
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ"
            )
        total = prediction.new_zeros(())
        pyramids = zip(
            image_pyramid(prediction, self.scales, self.border),
            image_pyramid(target.detach(), self.scales, self.border),
            strict=True,
        )
        for pred, tgt in pyramids:
            if self.pixel_weight:
                total = total + self.pixel_weight * (pred - tgt).abs().mean()
            if self.ssim_weight and min(pred.shape[-2:]) > self.ssim_window:  # not on tiny maps
                with torch.autocast(pred.device.type, enabled=False):  # E[x^2] - mu^2 in fp32
                    ssim = ssim_loss(pred.float(), tgt.float(), self.ssim_window)
                total = total + self.ssim_weight * ssim
            if self.features is None:
                continue
            with torch.no_grad():
                target_features = self._features(tgt)
            layers = zip(self.layer_weights, self._features(pred), target_features, strict=True)
            for weight, a, b in layers:
                total = total + weight * (a - b).abs().mean()
        return total


def equivariance_losses(
    seg_target: MCSSegmentation, seg_transformed: MCSSegmentation, transform: TPSTransform
) -> tuple[Tensor, Tensor]:
    """Unweighted MCS/FOMM equivariance terms (SPEC A2.5) -> ``(shift, affine)`` scalars.

    ``seg_transformed`` is the segmentation of the target warped by ``transform``
    (``transform.warp(target)``), so a point ``p'`` found there lies at ``T(p')`` in the target:

    * shift: ``mean |p_T - T(p_T')|``;
    * affine: ``mean |I - A_T^-1 (J_T(p_T') A_T')|`` with ``J_T`` the transform's Jacobian
      (differentiable with respect to ``p_T'``).
    """
    shift_t, shift_tt = seg_target.shift, seg_transformed.shift
    transform = transform.to(shift_t.device, shift_t.dtype)
    shift = (shift_t - transform.transform_points(shift_tt)).abs().mean()
    moved = transform.jacobian(shift_tt) @ seg_transformed.affine  # [B, K, 2, 2]
    relative = torch.linalg.solve(seg_target.affine, moved)
    eye = torch.eye(2, device=relative.device, dtype=relative.dtype)
    return shift, (eye - relative).abs().mean()


def flow_loss(
    grid: Tensor, flow: Tensor, weight: Tensor | None = None, eps: float = 1e-3
) -> Tensor:
    """Robust L1 (Charbonnier) between the part-motion flow and a dense target flow -> scalar.

    Args:
        grid: ``[B, h, w, 2]`` target -> source sampling grid of the model (inclusive
            ``(x, y)`` in [-1, 1], :func:`~copart_hub.models.mcs.part_motion_grid`).
        flow: ``[B, 2, H, W]`` target -> source displacement in the same normalised units
            (``2 / (W - 1)`` per pixel in x, ``2 / (H - 1)`` in y), e.g. a classical optical
            flow; area-averaged to ``h x w`` (background included: in MCS's model the
            background is static, so its flow should be ~0).
        weight: optional ``[B, 1, H, W]`` per-pixel confidence, resized the same way.
        eps: Charbonnier smoothing, in normalised units.
    """
    if (
        grid.ndim != 4
        or grid.shape[-1] != 2
        or flow.ndim != 4
        or flow.shape[1] != 2
        or flow.shape[0] != grid.shape[0]
    ):
        raise ValueError(
            f"grid must be [B, h, w, 2] and flow [B, 2, H, W], got {tuple(grid.shape)} and "
            f"{tuple(flow.shape)}"
        )
    if weight is not None and weight.shape != (flow.shape[0], 1, *flow.shape[-2:]):
        raise ValueError(
            f"weight must be [B, 1, H, W] = {(flow.shape[0], 1, *flow.shape[-2:])}, got "
            f"{tuple(weight.shape)}"
        )
    _, h, w, _ = grid.shape
    z = coordinate_grid(h, w, "inclusive", grid.device, grid.dtype)
    predicted = (grid - z).permute(0, 3, 1, 2)  # [B, 2, h, w] displacement
    target = F.adaptive_avg_pool2d(flow.to(grid.dtype), (h, w))
    error = ((predicted - target).pow(2).sum(1, keepdim=True) + eps**2).sqrt() - eps
    if weight is None:
        return error.mean()
    weight = F.adaptive_avg_pool2d(weight.to(grid.dtype), (h, w))
    return (error * weight).sum() / weight.sum().clamp_min(1e-6)


def still_parts_loss(
    seg_target: MCSSegmentation,
    seg_source: MCSSegmentation,
    min_motion: float,
    size: tuple[int, int],
) -> Tensor:
    """The area of the parts that do not move, as a share of the target frame -> scalar.

    A part whose own motion is the identity re-draws its pixels exactly as the static
    background does, so reconstruction cannot tell them apart, and such a part settles on
    scenery (trees, captions). Each part k's stillness ``1 - min(d_k / min_motion, 1)``, with
    ``d_k`` its mean displacement in pixels over its own soft mask (:func:`part_flows` against
    the identity), weighs its mean mask ``mean_z M_T^k(z)``; the stillness is detached, so the
    term only moves pixels out of still parts (to the background or to moving parts). Unlike
    :func:`still_background_loss` it asks nothing of pixels: a still limb of a moving person
    belongs to a part that moves in other pairs.

    Args:
        seg_target, seg_source: the segmentations of the two frames (``K`` parts).
        min_motion: pixels (at ``size``) from which a part counts as moving.
        size: ``(H, W)`` of the frames, for normalised units -> pixels.
    """
    if min_motion <= 0:
        raise ValueError(f"min_motion must be > 0 pixels, got {min_motion}")
    masks = seg_target.masks[:, 1:]  # [B, K, h, w]
    with torch.no_grad():
        flows = part_flows(seg_target, seg_source)  # channel 0: the identity
        half = torch.tensor([size[1] - 1, size[0] - 1], dtype=flows.dtype, device=flows.device) / 2
        moved = ((flows[:, 1:] - flows[:, :1]) * half).norm(dim=-1)  # px, [B, K, h, w]
        mean_motion = (masks * moved).sum((2, 3)) / masks.sum((2, 3)).clamp_min(1e-6)
    stillness = 1 - (mean_motion / min_motion).clamp(max=1)  # [B, K]
    return (stillness * masks.mean((2, 3))).sum(1).mean()


def still_background_loss(
    background: Tensor, flow: Tensor, min_motion: float, eps: float = 1e-6
) -> Tensor:
    """Cross-entropy towards the background channel where a dense target flow is ~0 -> scalar.

    MCS's background is static (identity motion), but so is a part with identity affine: where
    nothing moves, reconstruction cannot tell them apart and a part may take the background.
    This term favours the background there, weighted by the stillness
    ``1 - min(|flow| / min_motion, 1)`` (1 for no motion, 0 from ``min_motion`` pixels on).

    Args:
        background: ``[B, 1, h, w]`` background probability (``masks[:, :1]`` of the target's
            :class:`~copart_hub.models.mcs.MCSSegmentation`).
        flow: ``[B, 2, H, W]`` target -> source displacement in normalised units
            (``2 / (W - 1)`` per pixel in x), area-averaged to ``h x w``.
        min_motion: pixels (at ``H x W``) of motion from which a pixel counts as moving.
    """
    if background.ndim != 4 or background.shape[1] != 1 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"background must be [B, 1, h, w] and flow [B, 2, H, W], got "
            f"{tuple(background.shape)} and {tuple(flow.shape)}"
        )
    if min_motion <= 0:
        raise ValueError(f"min_motion must be > 0 pixels, got {min_motion}")
    h, w = flow.shape[-2:]
    px = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=flow.device, dtype=flow.dtype)
    speed = (flow * px.view(1, 2, 1, 1)).norm(dim=1, keepdim=True)
    stillness = 1 - (speed / min_motion).clamp(max=1)
    stillness = F.adaptive_avg_pool2d(stillness.to(background.dtype), background.shape[-2:])
    cross_entropy = -background.clamp_min(eps).log()
    return (cross_entropy * stillness).sum() / stillness.sum().clamp_min(1e-6)
