"""Readers for the image collections with annotations used to train and score part models.

Splits are fixed and documented so that held-out scores never touch training data:
``faces300w``: every 5th face (sorted by name) is ``val``; ``weizmann_horse``: horses 181-228
are ``val``. Annotations are used only for evaluation, never for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .paths import shared_data_root

FIVE_POINTS = "eye centres (mean of 36-41, 42-47), nose tip 30, mouth corners 48 and 54"


def _root(name: str, root: str | Path | None) -> Path:
    """``root/name`` (``root`` defaults to the shared data folder)."""
    base = Path(root) if root is not None else shared_data_root()
    if base is None or not (base / name).is_dir():
        raise FileNotFoundError(f"{name} data not found under {base or 'the shared data folder'}")
    return base / name


@dataclass
class Collection:
    """Image paths of one split plus optional per-image annotations."""

    name: str
    split: str
    images: list[Path]
    masks: list[Path] | None = None  # foreground masks (evaluation only)
    landmarks: np.ndarray | None = None  # [N, L, 2] pixel (x, y) in the image frame

    def load_image(self, i: int) -> Image.Image:
        """RGB image; when masks exist it is resized to its mask's size (Weizmann horses ship
        larger photos than masks, with the same aspect ratio)."""
        image = Image.open(self.images[i]).convert("RGB")
        if self.masks is not None:
            size = Image.open(self.masks[i]).size
            if image.size != size:
                image = image.resize(size, Image.Resampling.BICUBIC)
        return image

    def load_mask(self, i: int) -> np.ndarray:
        """``[H, W]`` bool foreground mask (JPEG masks thresholded at 127)."""
        if self.masks is None:
            raise ValueError(f"{self.name} has no masks")
        return np.asarray(Image.open(self.masks[i]).convert("L")) > 127


def _check_split(split: str) -> None:
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be train, val or all, got {split!r}")


def faces300w(split: str = "train", root: str | Path | None = None) -> Collection:
    """300-W faces (256x256 crops) with their 68 landmarks; ``val`` = every 5th by name."""
    _check_split(split)
    folder = _root("faces300w", root)
    data = np.load(folder / "landmarks68.npz")
    names = [str(n) for n in data["names"]]
    order = np.argsort(names)
    pick = [i for r, i in enumerate(order) if split == "all" or (r % 5 == 4) == (split == "val")]
    return Collection(
        "faces300w",
        split,
        [folder / "images" / names[i] for i in pick],
        landmarks=data["landmarks"][pick].astype(np.float32),
    )


def five_landmarks(landmarks68: np.ndarray) -> np.ndarray:
    """iBUG-68 ``[..., 68, 2]`` -> the SCOPS five points ``[..., 5, 2]``."""
    left = landmarks68[..., 36:42, :].mean(-2)
    right = landmarks68[..., 42:48, :].mean(-2)
    idx = [30, 48, 54]
    return np.concatenate([left[..., None, :], right[..., None, :], landmarks68[..., idx, :]], -2)


def weizmann_horses(split: str = "train", root: str | Path | None = None) -> Collection:
    """Weizmann horses with figure-ground masks; ``val`` = horses 181-228."""
    _check_split(split)
    folder = _root("weizmann_horse", root)
    images = sorted((folder / "rgb").glob("horse*.jpg"))
    number = [int(p.stem[5:]) for p in images]
    keep = [
        p
        for p, n in zip(images, number, strict=True)
        if split == "all" or (n > 180) == (split == "val")
    ]
    return Collection(
        "weizmann_horse", split, keep, masks=[folder / "figure_ground" / p.name for p in keep]
    )


@dataclass
class ZoomShiftCollection(Collection):
    """A collection seen through a fixed random zoom and shift per image (objects anywhere in
    the frame, not only centred); landmarks move with the pixels. Outside is black."""

    scale_range: tuple[float, float] = (0.6, 1.0)
    seed: int = 0

    @classmethod
    def of(
        cls, base: Collection, scale_range: tuple[float, float] = (0.6, 1.0), seed: int = 0
    ) -> ZoomShiftCollection:
        return cls(
            base.name + "-zoomshift",
            base.split,
            base.images,
            base.masks,
            base.landmarks,
            scale_range=scale_range,
            seed=seed,
        )

    def _params(self, i: int, size: tuple[int, int]) -> tuple[float, float, float]:
        rng = np.random.default_rng([self.seed, i])
        s = rng.uniform(*self.scale_range)
        w, h = size
        tx, ty = rng.uniform(-1, 1, size=2) * (1 - s) * np.array([w, h]) / 2
        return s, tx, ty

    def load_image(self, i: int) -> Image.Image:
        image = super().load_image(i)
        s, tx, ty = self._params(i, image.size)
        w, h = image.size
        # output pixel p comes from input (p - c - t) / s + c
        cx, cy = w / 2, h / 2
        coeffs = (1 / s, 0, cx - (cx + tx) / s, 0, 1 / s, cy - (cy + ty) / s)
        return image.transform(
            image.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
        )

    def moved_landmarks(self) -> np.ndarray:
        """Landmarks ``[N, L, 2]`` in the zoomed and shifted frames."""
        if self.landmarks is None:
            raise ValueError(f"{self.name} has no landmarks")
        out = self.landmarks.copy()
        for i, path in enumerate(self.images):
            w, h = Image.open(path).size
            s, tx, ty = self._params(i, (w, h))
            c = np.array([w / 2, h / 2])
            out[i] = (self.landmarks[i] - c) * s + c + np.array([tx, ty])
        return out
