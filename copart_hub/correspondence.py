"""Points carried from one image to another by matching dense descriptors
(:class:`~copart_hub.models.dve.DenseDescriptorNet`), and part motions fitted on those matches.

:class:`DescriptorMatcher` has the ``transfer_points`` of
:class:`~copart_hub.part_swap.PartSwapper`, so
:func:`~copart_hub.evaluation.swaps.landing_distances` scores it on the same held-out pairs as
a swap: does a target landmark land on the source's same landmark?
:func:`descriptor_alignment` gives a part swap the motion of those matches: one affine per part
of the target, fitted on where its pixels match in the source (``PartSwapper(correspondence=)``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .models.dve import DenseDescriptorNet
from .models.mcs import MCSSegmentation
from .ops.coordinates import coordinate_grid
from .pipelines import pick_device
from .processing import load_image

#: temperature of the soft-argmax over the source positions (unit descriptors)
MATCH_TEMPERATURE = 0.02
#: weight, as a fraction of the descriptor positions, that pulls a small part's affine towards
#: the one fitted on the whole foreground
PART_RIDGE = 0.01


def match_points(
    source: Tensor, target: Tensor, points: Tensor, temperature: float = MATCH_TEMPERATURE
) -> Tensor:
    """Where ``points`` ``[N, 2]`` of the target land in the source: ``[N, 2]``.

    ``source``, ``target``: ``[C, h, w]`` unit descriptors of the two images; ``points`` in
    normalised ``(x, y)`` of the target (``align_corners=True``: -1 and 1 are the centres of
    the corner pixels), the result likewise in the source. Each point's descriptor (bilinear)
    is matched by a soft-argmax over every source position."""
    if source.ndim != 3 or target.ndim != 3 or source.shape[0] != target.shape[0]:
        raise ValueError(
            f"source {tuple(source.shape)} and target {tuple(target.shape)} must be [C, h, w]"
        )
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be [N, 2], got shape {tuple(points.shape)}")
    where = points.to(target.dtype).view(1, 1, -1, 2)
    query = F.grid_sample(target[None], where, align_corners=True)[0, :, 0].T  # [N, C]
    query = F.normalize(query, dim=1)
    weights = torch.softmax(query @ source.flatten(1) / temperature, -1)  # [N, h w]
    positions = coordinate_grid(*source.shape[1:], "inclusive", source.device, source.dtype)
    return weights @ positions.reshape(-1, 2)


class DescriptorMatcher:
    """Carry points between two images of any size by a :class:`DenseDescriptorNet`: each
    image is resized (anisotropically) to the model's ``input_size``."""

    def __init__(self, model: DenseDescriptorNet, device: str | torch.device | None = None):
        if not isinstance(model, DenseDescriptorNet):
            raise TypeError(f"model must be a DenseDescriptorNet, got {type(model).__name__}")
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self._recent: list[tuple[Image.Image, Tensor]] = []  # the last two, most recent last

    @torch.no_grad()
    def describe(self, image: Image.Image) -> Tensor:
        """``[C, h, w]`` unit descriptors of ``image`` (the same image object again, e.g. a
        swap's source for every frame of a video, is described once)."""
        for i, (seen, described) in enumerate(self._recent):
            if seen is image:
                self._recent.append(self._recent.pop(i))
                return described
        h, w = self.model.input_size
        rgb = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), np.float32) / 255
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(self.device)
        mean = x.new_tensor(self.model.image_mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.model.image_std).view(1, 3, 1, 1)
        described = self.model((x - mean) / std)[0]
        self._recent = [*self._recent[-1:], (image, described)]
        return described

    def transfer_points(
        self, source: Image.Image, target: Image.Image, points: np.ndarray, motion: bool = True
    ) -> np.ndarray:
        """``points`` ``[N, 2]`` ``(x, y)`` in target pixels -> ``[N, 2]`` in source pixels, by
        matching descriptors (``motion=False``: the images mapped onto each other, the
        baseline)."""
        source, target = load_image(source), load_image(target)
        xy = torch.as_tensor(np.asarray(points, dtype=np.float32))
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"points must be [N, 2] (x, y), got shape {tuple(xy.shape)}")
        t_size = xy.new_tensor([max(target.width - 1, 1), max(target.height - 1, 1)])
        s_size = xy.new_tensor([max(source.width - 1, 1), max(source.height - 1, 1)])
        where = 2 * xy / t_size - 1
        if motion:
            where = match_points(
                self.describe(source), self.describe(target), where.to(self.device)
            ).cpu()
        return ((where + 1) / 2 * s_size).numpy()


def _weighted_affine(z: Tensor, m: Tensor, weight: Tensor, prior: Tensor, ridge: float) -> Tensor:
    """``[3, 2]`` ``X`` minimising ``sum w |[z, 1] X - m|^2 + ridge |X - prior|^2``."""
    z1 = torch.cat([z, torch.ones_like(z[:, :1])], 1)  # [N, 3]
    eye = torch.eye(3, dtype=z.dtype, device=z.device)
    lhs = z1.T @ (weight[:, None] * z1) + ridge * eye
    return torch.linalg.solve(lhs, z1.T @ (weight[:, None] * m) + ridge * prior)


def descriptor_alignment(
    seg_source: MCSSegmentation,
    seg_target: MCSSegmentation,
    source: Tensor,
    target: Tensor,
    ridge: float = PART_RIDGE,
) -> MCSSegmentation:
    """``seg_source`` with keypoints and affines that make
    :func:`~copart_hub.models.mcs.part_motion_grid` move each target part by the affine
    ``z -> A_k z + b_k`` fitted (weighted least squares, weights: the part's target mask) on
    where each target descriptor position matches in the source (:func:`match_points`).

    ``source``, ``target``: ``[B, C, h, w]`` unit descriptors of the two crops. A part with
    little mass is pulled (``ridge`` times the number of positions) towards the affine fitted
    on the whole foreground, itself pulled slightly towards the identity.
    """
    b, _, h, w = target.shape
    masks = F.interpolate(
        seg_target.masks.float(), size=(h, w), mode="bilinear", align_corners=True
    ).flatten(2)  # [B, K+1, N]
    z = coordinate_grid(h, w, "inclusive", target.device, torch.float32).reshape(-1, 2)
    identity = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], device=target.device)
    strength = ridge * z.shape[0]
    shifts, affines = [], []
    for i in range(b):
        m = match_points(source[i].float(), target[i].float(), z)  # [N, 2]
        whole = _weighted_affine(z, m, masks[i, 1:].sum(0), identity, 1e-3 * z.shape[0])
        fits = torch.stack(
            [_weighted_affine(z, m, part, whole, strength) for part in masks[i, 1:]]
        )  # [K, 3, 2]
        linear, offset = fits[:, :2].transpose(1, 2), fits[:, 2]  # A_k [K, 2, 2], b_k [K, 2]
        p_t, a_t = seg_target.shift[i].float(), seg_target.affine[i].float()
        shifts.append((linear @ p_t[..., None])[..., 0] + offset)
        affines.append(linear @ a_t)
    shift = torch.stack(shifts).to(seg_source.shift.dtype)
    affine = torch.stack(affines).to(seg_source.affine.dtype)
    return MCSSegmentation(seg_source.masks, shift, affine)
