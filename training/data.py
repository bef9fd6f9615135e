"""Training collections as Hugging Face ``datasets`` (cached Arrow tables)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from copart_hub.data import bsds500
from copart_hub.data.videos import read_video
from copart_hub.pipelines import PartSegmenter
from copart_hub.saliency import FOREGROUND_METHODS, unsupervised_foreground

#: part of every video cache key: bump it when the stored frames change for the same inputs
VIDEO_CACHE_VERSION = 1
#: part of every foreground cache key (images and video frames): bump it when the foreground
#: methods or the code that stores their maps change
FOREGROUND_CACHE_VERSION = 1


def image_rows(data_dir: str | None = None, paths: list[Path] | None = None) -> datasets.Dataset:
    """A ``datasets`` image table: every image under ``data_dir`` (recursive, the
    ``imagefolder`` builder; a ``metadata.jsonl`` with ``file_name`` and ``mask_file_name``
    adds user masks as a ``mask`` column) or the given ``paths``. Arrow-backed and cached, so
    what is computed from it is cached by ``datasets`` fingerprints."""
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"data_dir {data_dir} is not a folder")
        return datasets.load_dataset("imagefolder", data_dir=str(data_dir), split="train")
    files = {"train": [str(p) for p in paths or []]}
    return datasets.load_dataset("imagefolder", data_files=files, split="train")


def _file_digest(path: str | Path) -> str:
    """BLAKE2b of a file's bytes (about 1 s a GB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


def _content_digests(rows: datasets.Dataset, column: str) -> list[str | None]:
    """One digest per row of the files (or stored bytes) of an image ``column``, without
    decoding them; None for an empty cell."""
    cells = rows.cast_column(column, datasets.Image(decode=False))[column]
    return [
        None
        if cell is None
        else hashlib.blake2b(cell["bytes"]).hexdigest()
        if cell["bytes"] is not None
        else _file_digest(cell["path"])
        for cell in cells
    ]


def _foreground_rows(
    rows: datasets.Dataset, saliency: str, mask_dir: str | None
) -> Iterator[dict[str, Image.Image]]:
    """The ``foreground`` map of each row of ``rows`` (see :func:`add_foreground`)."""
    for row in rows:
        image = np.array(row["image"].convert("RGB"))
        if saliency in FOREGROUND_METHODS:
            fg = unsupervised_foreground(image, saliency)
        elif saliency == "masks":
            mask = row.get("mask")
            if mask is None:
                stem = Path(row["image"].filename).stem
                matches = sorted(Path(mask_dir).glob(stem + ".*")) if mask_dir else []
                if not matches:
                    raise FileNotFoundError(f"no mask for {stem} in {mask_dir}")
                mask = Image.open(matches[0])
            mask = mask.convert("L").resize(image.shape[1::-1])
            fg = np.asarray(mask, dtype=np.float32) / 255
        else:
            fg = np.ones(image.shape[:2], dtype=np.float32)
        yield {"foreground": Image.fromarray(np.round(fg * 255).astype(np.uint8))}


def add_foreground(rows: datasets.Dataset, saliency: str, mask_dir: str | None) -> datasets.Dataset:
    """``rows`` with a ``foreground`` map per image (grey PNG), computed once into a
    ``datasets`` table keyed by content: the bytes of every image (and mask) in row order, the
    source, :data:`FOREGROUND_CACHE_VERSION` and the names and bytes of the files in
    ``mask_dir``. A copied, touched or moved collection reuses it; an edited file recomputes it.

    ``saliency``: an unsupervised method (:data:`FOREGROUND_METHODS`), ``masks`` (the rows'
    ``mask`` column, else a file of the same stem in ``mask_dir``) or ``none``.
    """
    key = [FOREGROUND_CACHE_VERSION, saliency, _content_digests(rows, "image")]
    if saliency == "masks":
        if "mask" in rows.column_names:
            key.append(_content_digests(rows, "mask"))
        if mask_dir:
            files = sorted(f for f in Path(mask_dir).resolve().iterdir() if f.is_file())
            key.append([(f.name, _file_digest(f)) for f in files])
    maps = datasets.Dataset.from_generator(
        _foreground_rows,
        features=datasets.Features({"foreground": datasets.Image()}),
        gen_kwargs={"rows": rows, "saliency": saliency, "mask_dir": mask_dir},
        fingerprint=datasets.fingerprint.Hasher.hash(key),
    )
    return datasets.concatenate_datasets([rows, maps], axis=1)


def bsds500_dataset(
    split: str, root: str | Path | None = None, cache_dir: str | None = None
) -> datasets.Dataset:
    """BSDS500 ``split`` with one row per image: ``id``, ``image`` and every annotator's
    ``segmentations`` (16-bit PNG images)."""
    root = bsds500.bsds500_root(root)

    def rows():
        for image_id in bsds500.list_ids(root, split):
            segs = bsds500.load_segmentations(root, split, image_id)
            yield {
                "id": image_id,
                "image": Image.fromarray(bsds500.load_image(root, split, image_id)),
                "segmentations": [Image.fromarray(s.astype(np.uint16)) for s in segs],
            }

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "segmentations": datasets.List(datasets.Image()),
        }
    )
    tag = hashlib.md5(str(root.resolve()).encode()).hexdigest()[:8]
    return datasets.Dataset.from_generator(
        rows, features=features, cache_dir=cache_dir, config_name=f"bsds500-{split}-{tag}"
    )


def pil_tensor(image: Image.Image) -> Tensor:
    """PIL image -> ``float [C, H, W]`` in [0, 1]."""
    array = np.array(image, dtype=np.float32) / 255
    return torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1)


class BackgroundCrops:
    """Random square background crops for copy-paste augmentation: ``crops(rng)`` is
    ``[1, 3, size, size]`` in [0, 1], a crop of half to all of the shorter side of a random
    image of ``source`` (``"bsds500"``: its train split under ``data_root``; else a folder of
    images, recursive), randomly mirrored."""

    def __init__(self, source: str, size: int, data_root: str | None = None) -> None:
        if source == "bsds500":
            root = Path(data_root) / "bsds500" if data_root else None
            self.rows = image_rows(paths=bsds500.image_paths(root, "train"))
        else:
            self.rows = image_rows(data_dir=source)
        self.size = size

    def __call__(self, rng: np.random.Generator) -> Tensor:
        row = self.rows[int(rng.integers(len(self.rows)))]
        bg = pil_tensor(row["image"].convert("RGB"))
        h, w = bg.shape[-2:]
        side = max(1, round(min(h, w) * rng.uniform(0.5, 1.0)))
        top, left = rng.integers(h - side + 1), rng.integers(w - side + 1)
        bg = bg[:, top : top + side, left : left + side]
        if rng.random() < 0.5:
            bg = bg.flip(-1)
        return F.interpolate(bg[None], (self.size, self.size), mode="bilinear", antialias=True)


class ClipFrames:
    """The frames of one video in a memory-mapped ``datasets`` table (one row per frame):
    ``len(clip)`` frames; ``clip[t]`` is ``uint8 [H, W, 3]``, ``clip[[t, u]]`` ``[2, H, W, 3]``
    (copies, like indexing a ``uint8 [T, H, W, 3]`` array)."""

    def __init__(self, table: datasets.Dataset) -> None:
        self.table = table.with_format("numpy", dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int | Sequence[int] | np.ndarray) -> np.ndarray:
        return np.array(self.table[np.asarray(index).tolist()]["frame"])


def weights_fingerprint(model: torch.nn.Module) -> str:
    """16 hex digits of SHA-256 over a model's weight names and values: a cache key that a
    cache made with other weights never shares."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _part_map_rows(
    images: tuple[np.ndarray, ...], segmenter: PartSegmenter, side: int
) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(images), segmenter.batch_size):
        chunk = [Image.fromarray(image) for image in images[start : start + segmenter.batch_size]]
        for result in segmenter(chunk):
            yield {"maps": result.masks_at((side, side)).astype(np.float16)}


def teacher_part_maps(images: list[np.ndarray], teacher: str | Path, side: int) -> list[np.ndarray]:
    """A trained part model's soft part maps ``float16 [J+1, side, side]`` of each ``uint8
    [H, W, 3]`` image, computed once and cached by ``datasets`` (keyed by the model's weights,
    the images' pixels, ``side`` and :data:`FOREGROUND_CACHE_VERSION`)."""
    segmenter = PartSegmenter(teacher, device="cpu", batch_size=64)
    pixels = hashlib.blake2b()
    for image in images:
        pixels.update(np.ascontiguousarray(image).tobytes())
        pixels.update(str(image.shape).encode())
    key = f"{FOREGROUND_CACHE_VERSION}|{weights_fingerprint(segmenter.model)}|{pixels.hexdigest()}"
    channels = segmenter.model.num_parts + 1
    table = datasets.Dataset.from_generator(
        _part_map_rows,
        features=datasets.Features({"maps": datasets.Array3D((channels, side, side), "float16")}),
        # a tuple: datasets would shard a list into one generator call per image
        gen_kwargs={"images": tuple(images), "segmenter": segmenter, "side": side},
        fingerprint=hashlib.sha256(f"{key}|{side}".encode()).hexdigest()[:32],
    )
    return list(np.asarray(table.with_format("numpy")["maps"], dtype=np.float16))


class TeacherForeground:
    """The foreground of a trained part model (label != 0, refined by GrabCut seeded with it:
    :class:`~copart_hub.pipelines.PartSegmenter` with ``grabcut=True``), the self-training
    foreground of :func:`video_foregrounds`. ``fingerprint`` hashes the weights, so a cache made
    with one model is never served for another."""

    def __init__(self, model: str | Path, batch_size: int = 32) -> None:
        self.name = str(model)
        self.segmenter = PartSegmenter(model, device="cpu", batch_size=batch_size, grabcut=True)
        self.fingerprint = weights_fingerprint(self.segmenter.model)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``uint8 [B, H, W, 3]`` -> ``uint8 [B, H, W]`` foreground in {0, 255}."""
        results = self.segmenter([Image.fromarray(f) for f in frames])
        return np.stack([r.labels != 0 for r in results]).astype(np.uint8) * 255


def video_foregrounds(clip: ClipFrames, method: str | TeacherForeground) -> np.ndarray:
    """``uint8 [T, H, W]`` foreground (x 255) of every frame of ``clip``: an unsupervised method
    (:data:`FOREGROUND_METHODS`) or a trained model's (:class:`TeacherForeground`), computed
    once and cached by ``datasets`` (the fingerprint covers the frames, the method or the
    model's weights, and :data:`FOREGROUND_CACHE_VERSION`): the foreground target of MCS's
    ``weights.background`` and the alpha of its copy-paste."""
    if isinstance(method, TeacherForeground):
        compute, tag = method, f"teacher {method.fingerprint}"
    elif method in FOREGROUND_METHODS:

        def compute(frames: np.ndarray) -> np.ndarray:
            maps = [unsupervised_foreground(f, method) for f in frames]
            return np.round(np.stack(maps) * 255).astype(np.uint8)

        tag = method
    else:
        raise ValueError(f"unknown foreground method {method!r}; choose from {FOREGROUND_METHODS}")

    def foreground(batch: dict[str, Any]) -> dict[str, Any]:
        return {"foreground": compute(np.asarray(batch["frame"], dtype=np.uint8))}

    h, w = clip.table.features["frame"].shape[:2]
    features = datasets.Features({"foreground": datasets.Array2D((h, w), "uint8")})
    key = f"{FOREGROUND_CACHE_VERSION}|{clip.table._fingerprint}|{tag}"
    table = clip.table.with_format(None).map(
        foreground,
        batched=True,
        batch_size=32,
        remove_columns=["frame"],
        features=features,
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
        desc=f"video foreground ({tag})",
    )
    return np.asarray(table.with_format("numpy")["foreground"], dtype=np.uint8)


def _frame_rows(path: str, size: int) -> Iterator[dict[str, np.ndarray]]:
    for frame in read_video(path, size, crop=True)[0]:
        yield {"frame": frame}


def video_frames(path: str | Path, size: int, cache_dir: str | None = None) -> ClipFrames:
    """The frames of the video ``path``, centre-cropped to a square and resized to ``size``
    (see :func:`read_video`), decoded once into a ``datasets`` table whose fingerprint is the
    file's content (BLAKE2b of its bytes, about 1 s a GB) and ``size``: later runs reuse it,
    also when the file was copied or touched since, and a changed file is decoded again.
    Decoding errors are raised as :func:`read_video` raises them."""
    path = Path(path).resolve()
    key = f"{VIDEO_CACHE_VERSION}|{_file_digest(path)}|{size}"
    features = datasets.Features({"frame": datasets.Array3D((size, size, 3), "uint8")})
    try:
        table = datasets.Dataset.from_generator(
            _frame_rows,
            features=features,
            gen_kwargs={"path": str(path), "size": size},
            cache_dir=cache_dir,
            fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
        )
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, OSError)):  # read_video's own clear message
            raise cause from None
        raise
    return ClipFrames(table)
