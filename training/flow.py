"""Flow targets for MCS flow supervision: a classical dense optical flow (OpenCV DIS) between the
two frames of a pair, in the normalised units of :func:`copart_hub.losses.mcs.flow_loss`, with a
forward-backward consistency weight (Sundaram et al., ECCV 2010) that masks where DIS fails
(occlusions, motion too large for its pyramid)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import cv2
import numpy as np
import torch
from torch import Tensor

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def normalised_flow(flow_px: np.ndarray) -> Tensor:
    """``[H, W, 2]`` pixel displacements -> ``[2, H, W]`` in inclusive-grid units
    (``2 / (W - 1)`` per pixel in x, ``2 / (H - 1)`` in y)."""
    h, w = flow_px.shape[:2]
    scale = np.array([2 / max(w - 1, 1), 2 / max(h - 1, 1)], dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray((flow_px * scale).transpose(2, 0, 1)))


def consistency_weight(
    forward: np.ndarray, backward: np.ndarray, alpha: float = 0.01, beta: float = 0.5
) -> np.ndarray:
    """``[H, W]`` float32: 1 where the flow ``forward`` (``[H, W, 2]`` px, frame a -> b) is undone
    by ``backward`` (b -> a) taken at ``z + forward(z)``, up to ``alpha |f|^2 + beta`` px^2,
    and ``z + forward(z)`` lies inside the frame."""
    h, w = forward.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = xs + forward[..., 0], ys + forward[..., 1]
    back = cv2.remap(backward, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    error = ((forward + back) ** 2).sum(-1)
    bound = alpha * ((forward**2).sum(-1) + (back**2).sum(-1)) + beta
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)  # lands in the other frame
    return ((error <= bound) & inside).astype(np.float32)


def hflip_flow(flow: Tensor) -> Tensor:
    """The flow ``[2, H, W]`` of the horizontally mirrored pair: mirrored, x component negated."""
    flipped = flow.flip(-1).clone()
    flipped[0].neg_()
    return flipped


class FlowTargets:
    """Target -> source flow of frame pairs (DIS on grey levels, both ways), cached per pair key.

    ``targets(key, source, target)`` with ``uint8 [H, W, 3]`` frames returns ``(flow [2, H, W],
    weight [1, H, W])`` float: ``target(z) ~ source(z + flow(z))`` where ``weight`` is 1 (the
    forward-backward check, :func:`consistency_weight`). With ``min_motion`` (pixels) the
    weight also ramps from 0 (no motion) to 1 (``min_motion`` or more): only what moves is
    supervised, so that a part is never pulled onto a nearly still background to follow its
    jitter (camera shake, compression noise), which MCS's static background cannot. The
    ``cache_size`` most recent pairs
    are kept (float16, 6 bytes x H x W each) so a pair drawn again is not estimated again;
    ``computed`` and ``reused`` count misses and hits. One instance per data-loader worker.
    """

    def __init__(
        self, preset: str = "medium", cache_size: int = 2048, min_motion: float = 0.0
    ) -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f"flow preset must be one of {sorted(DIS_PRESETS)}, got {preset!r}")
        if cache_size < 0 or min_motion < 0:
            raise ValueError(
                f"cache_size and min_motion must be >= 0, got {cache_size, min_motion}"
            )
        self.preset, self.cache_size, self.min_motion = preset, cache_size, min_motion
        self._dis: cv2.DISOpticalFlow | None = None  # built lazily: not picklable
        self._cache: OrderedDict[Hashable, Tensor] = OrderedDict()
        self.computed = self.reused = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_dis": None}

    def __call__(
        self, key: Hashable, source: np.ndarray, target: np.ndarray
    ) -> tuple[Tensor, Tensor]:
        if key in self._cache:
            self._cache.move_to_end(key)
            self.reused += 1
            both = self._cache[key]
        else:
            both = self._estimate(source, target)
            self.computed += 1
            if self.cache_size:
                self._cache[key] = both
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        both = both.float()  # float16, cached or not: every call gives the same
        return both[:2], both[2:]

    def _estimate(self, source: np.ndarray, target: np.ndarray) -> Tensor:
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
        grey_t, grey_s = (
            np.ascontiguousarray(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)) for f in (target, source)
        )
        forward = self._dis.calc(grey_t, grey_s, None)  # target -> source
        backward = self._dis.calc(grey_s, grey_t, None)
        weight = consistency_weight(forward, backward)
        if self.min_motion > 0:
            weight *= np.clip(np.linalg.norm(forward, axis=-1) / self.min_motion, 0, 1)
        weight = torch.from_numpy(weight)[None]
        return torch.cat([normalised_flow(forward), weight]).half()
