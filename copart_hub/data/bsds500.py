"""Reader for the Berkeley Segmentation Dataset 500 (BSDS500).

Layout under the root: ``images/{split}/<id>.jpg`` and ``groundTruth/{split}/<id>.mat``. Each
``.mat`` file holds a MATLAB struct array ``groundTruth[0, k]`` with one entry per human
annotator (4-9 per image), each with a ``Segmentation`` (uint16, labels ``1..n``) and a
``Boundaries`` (uint8) map of the image size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import loadmat

from .paths import shared_data_root

SPLITS = ("train", "val", "test")


def bsds500_root(root: str | Path | None = None) -> Path:
    """The BSDS500 folder: ``root`` if given, else ``shared_data_root() / "bsds500"``.

    Raises ``FileNotFoundError`` when the folder (or its ``images/`` sub-folder) is missing.
    """
    if root is None:
        data = shared_data_root()
        if data is None:
            raise FileNotFoundError(
                "BSDS500 not found: no shared data folder (set $COPART_DATA or put the data in "
                "../shared/data next to the repository), or pass the BSDS500 folder explicitly"
            )
        root = data / "bsds500"
    path = Path(root).expanduser()
    if not (path / "images").is_dir():
        raise FileNotFoundError(f"BSDS500 not found: {path} has no images/ folder")
    return path


def _split_dir(root: str | Path | None, kind: str, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown BSDS500 split {split!r}; expected one of {', '.join(SPLITS)}")
    folder = bsds500_root(root) / kind / split
    if not folder.is_dir():
        raise FileNotFoundError(f"BSDS500 split {split!r} is not available: {folder} is missing")
    return folder


def _file(root: str | Path | None, kind: str, split: str, image_id: str, suffix: str) -> Path:
    path = _split_dir(root, kind, split) / f"{image_id}{suffix}"
    if not path.is_file():
        raise FileNotFoundError(f"BSDS500 {split}/{image_id}: {path} does not exist")
    return path


def list_ids(root: str | Path | None, split: str) -> list[str]:
    """Sorted image ids (file stems) of a split, e.g. ``["100007", "100039", ...]``."""
    return [p.stem for p in image_paths(root, split)]


def image_paths(root: str | Path | None, split: str) -> list[Path]:
    """The image files of a split, sorted by id."""
    return sorted(_split_dir(root, "images", split).glob("*.jpg"))


def load_image(root: str | Path | None, split: str, image_id: str) -> np.ndarray:
    """RGB image ``uint8 [H, W, 3]`` (481x321 or 321x481)."""
    with Image.open(_file(root, "images", split, image_id, ".jpg")) as im:
        return np.array(im.convert("RGB"))


def _annotations(
    root: str | Path | None, split: str, image_id: str, field: str
) -> list[np.ndarray]:
    mat = loadmat(_file(root, "groundTruth", split, image_id, ".mat"))
    gt = mat["groundTruth"]
    return [gt[0, k][field][0, 0] for k in range(gt.shape[1])]


def load_segmentations(root: str | Path | None, split: str, image_id: str) -> list[np.ndarray]:
    """One segmentation per annotator, ``int32 [H, W]`` with labels ``0..n-1``.

    The files store labels ``1..n``; they are shifted to start at 0.
    """
    segs = _annotations(root, split, image_id, "Segmentation")
    return [s.astype(np.int32) - 1 for s in segs]


def load_boundaries(root: str | Path | None, split: str, image_id: str) -> list[np.ndarray]:
    """One boundary map per annotator, ``bool [H, W]`` (the annotators' own ``Boundaries``)."""
    return [b.astype(bool) for b in _annotations(root, split, image_id, "Boundaries")]
