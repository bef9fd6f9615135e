"""Video frames with PyAV, and the Tai-Chi clips with their MediaPipe pseudo ground truth.

PyAV's wheels bundle FFmpeg (H.264 decoding and encoding included), so reading and writing
videos needs no system library.

Tai-Chi split (fixed): ``clip_00`` .. ``clip_11`` are ``train``, ``clip_12`` and ``clip_13``
are ``val``. The pseudo ground truth (MediaPipe Pose output, not human labels) is used only for
evaluation, never for training.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from .collections import _check_split, _root

TAICHI_VAL_CLIPS = (12, 13)
NUM_POSE_KEYPOINTS = 33  # MediaPipe Pose
TAICHI_EVAL_EVERY = 10  # evaluation protocol: every 10th frame of each clip
#: file suffixes taken for videos when a folder is searched (any container PyAV reads)
VIDEO_SUFFIXES = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".flv",
    ".wmv",
    ".3gp",
    ".ogv",
    ".gif",
)


def _target_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as ``(H, W)`` (an int is square)."""
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def _crop_box(width: int, height: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred ``(left, top, right, bottom)`` box of a ``width x height`` frame with the
    aspect ratio of ``target`` ``(H, W)``."""
    scale = min(width / target[1], height / target[0])
    w, h = round(target[1] * scale), round(target[0] * scale)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def read_video(
    path: str | Path,
    size: int | tuple[int, int] | None = None,
    max_frames: int | None = None,
    crop: bool = False,
) -> tuple[np.ndarray, float]:
    """Decode every frame of a video (or animated image) -> ``(frames, fps)``.

    ``frames`` is ``uint8 [T, H, W, 3]`` RGB, resized (bilinear, antialiased) to ``size``
    (``(H, W)`` or an int for a square) when given; with ``crop`` the centre of each frame is
    cut to the aspect ratio of ``size`` first (no stretching). ``fps`` is the stream's average
    rate, else its guessed rate, else 0.0 (unknown). Raises ``FileNotFoundError`` for a missing
    file and ``ValueError`` for a file PyAV cannot decode, one without frames, or one with more
    than ``max_frames`` frames (decoding stops there, so a long video costs no more than the
    limit).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {str(path)!r} does not exist")
    target = _target_size(size)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{str(path)!r} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            for frame in container.decode(stream):
                if max_frames is not None and len(frames) == max_frames:
                    raise ValueError(
                        f"video {str(path)!r} has more than {max_frames} frames"
                        + (f" ({max_frames / fps:.1f} s at {fps:g} fps)" if fps > 0 else "")
                    )
                image = frame.to_image()
                box = _crop_box(*image.size, target) if crop and target is not None else None
                if box == (0, 0, *image.size):
                    box = None
                if target is not None and (box is not None or image.size != target[::-1]):
                    image = image.resize(target[::-1], Image.Resampling.BILINEAR, box=box)
                frames.append(np.asarray(image.convert("RGB")))
    except av.error.EOFError:
        pass  # some containers without packets end this way: the frame check below reports it
    except av.FFmpegError as err:
        raise ValueError(f"cannot decode video {str(path)!r}: {err}") from err
    if not frames:
        raise ValueError(f"video {str(path)!r} has no frames")
    return np.stack(frames), fps


def find_videos(folder: str | Path) -> list[Path]:
    """Every video under ``folder`` (recursive, sorted): files with a :data:`VIDEO_SUFFIXES`
    suffix that PyAV opens and that hold a video stream (only headers are read; the others are
    skipped with a warning). Raises ``FileNotFoundError`` for a missing folder and
    ``ValueError`` when it has no such video."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder {str(folder)!r} does not exist")
    found, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES):
        try:
            with av.open(str(path)) as container:
                (found if container.streams.video else skipped).append(path)
        except (av.FFmpegError, OSError):
            skipped.append(path)
    if not found:
        unread = f"; {len(skipped)} could not be read" if skipped else ""
        raise ValueError(
            f"{str(folder)!r} has no readable videos (looked for {' '.join(VIDEO_SUFFIXES)} "
            f"files in it and its subfolders{unread})"
        )
    if skipped:
        names = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        warnings.warn(
            f"skipped {len(skipped)} unreadable videos in {folder}: {names}", stacklevel=2
        )
    return found


@dataclass(frozen=True)
class TaichiClip:
    """One Tai-Chi clip: its video and its pseudo-GT file (read on demand, it can be large)."""

    video: Path
    pseudo_gt: Path

    @property
    def name(self) -> str:
        return self.video.stem

    def frames(self, size: int | tuple[int, int] | None = None) -> np.ndarray:
        """``uint8 [T, H, W, 3]`` frames (see :func:`read_video`)."""
        return read_video(self.video, size)[0]

    def keypoints(self) -> np.ndarray:
        """``float32 [T, 33, 3]`` MediaPipe keypoints ``(x px, y px, visibility)``; NaN where
        the pose was not detected."""
        with np.load(self.pseudo_gt) as d:
            return d["keypoints"].astype(np.float32)

    def masks(self, frames: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Person masks ``bool [T, H, W]`` of all frames, or of the ``frames`` indices only."""
        with np.load(self.pseudo_gt) as d:
            packed, width = d["masks"], int(d["shape"][2])
        if frames is not None:
            packed = packed[np.asarray(frames, dtype=int)]
        return np.unpackbits(packed, axis=-1)[..., :width].astype(bool)


def taichi_clips(split: str = "train", root: str | Path | None = None) -> list[TaichiClip]:
    """The ``taichi/videos/clip_XX.mp4`` clips of ``split`` (``train``, ``val`` or ``all``;
    ``val`` = clips 12 and 13), sorted by name, each with ``taichi/pseudo_gt/clip_XX.npz``."""
    _check_split(split)
    base = _root("taichi", root)
    clips = []
    for video in sorted((base / "videos").glob("clip_*.mp4")):
        held_out = int(video.stem.split("_")[1]) in TAICHI_VAL_CLIPS
        if split == "all" or held_out == (split == "val"):
            clips.append(TaichiClip(video, base / "pseudo_gt" / f"{video.stem}.npz"))
    if not clips:
        raise FileNotFoundError(f"no {split} clips in {base / 'videos'}")
    return clips


@dataclass
class TaichiFrames:
    """Every ``every``-th frame of a split's Tai-Chi clips with their person masks and pose
    keypoints, in memory (evaluation only). Reads like a :class:`Collection`: ``images``,
    ``load_image(i)``, ``load_mask(i)``; ``landmarks`` is ``None`` (the keypoints are not
    face landmarks), ``keypoints`` is ``float32 [N, 33, 2]`` pixels, NaN where undetected."""

    name: str
    split: str
    images: list[np.ndarray]  # uint8 [H, W, 3]
    person_masks: list[np.ndarray]  # bool [H, W]
    keypoints: np.ndarray
    landmarks: None = None

    def load_image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])

    def load_mask(self, i: int) -> np.ndarray:
        return self.person_masks[i]


def taichi_frames(
    split: str = "val", root: str | Path | None = None, every: int = TAICHI_EVAL_EVERY
) -> TaichiFrames:
    """Frames ``0, every, 2*every, ...`` of every clip of ``split`` (see :func:`taichi_clips`)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    images, masks, points = [], [], []
    for clip in taichi_clips(split, root):
        frames = clip.frames()
        idx = np.arange(0, len(frames), every)
        images += list(frames[idx])
        masks += list(clip.masks(idx))
        points.append(clip.keypoints()[idx, :, :2])
    return TaichiFrames("taichi", split, images, masks, np.concatenate(points))
