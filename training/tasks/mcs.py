"""MCS training task (SPEC A2.5-A2.6): frame pairs of videos, perceptual reconstruction of the
target from the source, and shift/affine equivariance of the target's part motions.

Data: the Tai-Chi clips, or every video under ``video_dir`` (recursive, any container PyAV
reads, any size: the centre of each frame is cut to a square and resized to ``size``). Each clip
is decoded once into a memory-mapped ``datasets`` table that later runs reuse (keyed by path,
modification time and byte size: :func:`..data.video_frames`). One epoch is ``repeats`` passes
over the training clips (the official ``num_repeats``). A sample is two random frames of one
clip sorted in time, with the official augmentations (horizontal flip of both frames, time flip,
ColorJitter 0.1 with the same parameters for both frames) and, with ``paste_backgrounds``
(beyond the paper), copy-paste of both frames onto one background photo, all drawn from
:func:`..sampling.sample_rng`. Validation (SPEC B4, adapted to the MediaPipe pseudo ground
truth): foreground IoU on the held-out clips 12 and 13, and the sum of the 66 per-coordinate
MAEs of 33 pose keypoints regressed from part centres (fitted on training clips, tested on val).
A user's videos have no ground truth: no scores, and the samples show their own clips, unless
``val_dataset`` names a protocol of ``copart-hub eval parts`` (e.g. ``faces300w`` for a face
model trained on still-image pairs and a talking-head clip: then the samples are pairs made from
its held-out images).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from copart_hub import create_model
from copart_hub.data import collections, shared_data_root
from copart_hub.data.provenance import SOURCES, card_facts
from copart_hub.data.videos import (
    TaichiClip,
    find_videos,
    taichi_clips,
    taichi_frames,
)
from copart_hub.evaluation.parts import DATASETS, evaluate
from copart_hub.losses.mcs import (
    RANDOM_CHANNELS,
    EmaEncoderFeatures,
    McsLossWeights,
    PerceptualPyramid,
    equivariance_losses,
    flow_loss,
    still_background_loss,
    still_parts_loss,
)
from copart_hub.losses.scops import background_loss
from copart_hub.models.mcs import MCSModel, MCSSegmentation, part_motion_grid
from copart_hub.ops.coordinates import coordinate_grid, part_centres
from copart_hub.ops.warps import random_mcs_tps, random_scops_tps
from copart_hub.saliency import FOREGROUND_METHODS

from ..data import (
    BackgroundCrops,
    ClipFrames,
    TeacherForeground,
    add_foreground,
    image_rows,
    teacher_part_maps,
    video_foregrounds,
    video_frames,
)
from ..flow import DIS_PRESETS, FlowTargets, hflip_flow
from ..sampling import sample_rng
from .base import LR_SCHEDULES, OptimizerPair, Task, lr_scheduler, register_task

STILL_COLLECTIONS = {"faces300w": collections.faces300w}
#: ``video_dir`` names of the shared data's clip folders (under ``data_root``)
VIDEO_COLLECTIONS = {"talking_face": "talking_face"}
CENTRE_EPS = 1e-6  # added to each part map before normalising (MCS evaluate.py)


def _jitter(frames: Tensor, rng: np.random.Generator, strength: float) -> Tensor:
    """ColorJitter (brightness, contrast, saturation, hue = ``strength``) of ``[N, 3, H, W]``
    in [0, 1], in a random order, with one parameter draw shared by all frames."""
    factors = rng.uniform(max(0.0, 1 - strength), 1 + strength, size=3)
    hue = rng.uniform(-strength, strength)
    ops = [
        lambda x: TF.adjust_brightness(x, factors[0]),
        lambda x: TF.adjust_contrast(x, factors[1]),
        lambda x: TF.adjust_saturation(x, factors[2]),
        lambda x: TF.adjust_hue(x, hue),
    ]
    for i in rng.permutation(len(ops)):
        frames = ops[i](frames)
    return frames.clamp(0, 1)


class McsFramePairs(Dataset):
    """``(index, epoch)`` -> two frames of clip ``index % len(clips)``, augmented.

    Items: ``source``, ``target`` (``float [3, H, W]`` in [0, 1]), ``clip``, ``times`` (the
    source and target frame indices) and ``time_flip`` (whether S and T were swapped, so
    ``times`` is sorted unless it is set). With ``flow`` (:class:`FlowTargets`), also ``flow``
    ``[2, H, W]`` (target -> source, estimated on the stored frames, then mirrored with them) and
    its consistency weight ``flow_weight`` ``[1, H, W]``. With ``foregrounds`` (``uint8 [T, H, W]``
    per clip, :func:`~training.data.video_foregrounds`), also the target frame's ``foreground``
    ``[1, H, W]`` in [0, 1], mirrored with it. With ``backgrounds`` (and ``foregrounds``), a
    pair is, with probability ``paste_prob``, both frames' foregrounds (their maps as alpha)
    pasted onto one random background crop ("copy-paste"): the scene around the object is
    new and exactly still, so the object cannot be learnt from its clip's scenery.
    """

    def __init__(
        self,
        clips: list[np.ndarray] | list[ClipFrames],
        repeats: int = 50,
        seed: int = 0,
        jitter: float = 0.1,
        flip_p: float = 0.5,
        flow: FlowTargets | None = None,
        foregrounds: list[np.ndarray] | None = None,
        backgrounds: BackgroundCrops | None = None,
        paste_prob: float = 0.0,
    ) -> None:
        if not clips or repeats < 1:
            raise ValueError("need at least one clip and repeats >= 1")
        if backgrounds is not None and foregrounds is None:
            raise ValueError("copy-paste needs the foreground maps of the frames to paste")
        if foregrounds is not None and [len(f) for f in foregrounds] != [len(c) for c in clips]:
            raise ValueError("need one foreground map per frame of every clip")
        self.clips, self.repeats, self.seed = clips, repeats, seed
        self.jitter, self.flip_p, self.flow = jitter, flip_p, flow
        self.foregrounds, self.backgrounds, self.paste_prob = foregrounds, backgrounds, paste_prob

    def __len__(self) -> int:
        return len(self.clips) * self.repeats

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        rng = sample_rng(self.seed, epoch, index)
        clip = index % len(self.clips)
        frames = self.clips[clip]
        times = np.sort(rng.choice(len(frames), size=2, replace=True))  # official: with replace
        raw = frames[times]
        pair = torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255
        mirror = rng.random() < self.flip_p
        if mirror:
            pair = pair.flip(-1)
        time_flip = bool(rng.random() < self.flip_p)
        if time_flip:
            pair, times, raw = pair.flip(0), times[::-1].copy(), raw[::-1]
        if self.jitter > 0:
            pair = _jitter(pair, rng, self.jitter)
        if self.backgrounds is not None and rng.random() < self.paste_prob:
            alpha = torch.from_numpy(self.foregrounds[clip][times]).float()[:, None] / 255
            alpha = alpha.flip(-1) if mirror else alpha  # [2, 1, H, W], as the pair
            pair = alpha * pair + (1 - alpha) * self.backgrounds(rng)
        item = {
            "source": pair[0],
            "target": pair[1],
            "clip": clip,
            "times": torch.from_numpy(times),
            "time_flip": time_flip,
        }
        if self.flow is not None:  # estimated on the frames as stored, then mirrored
            flow, weight = self.flow((clip, int(times[0]), int(times[1])), raw[0], raw[1])
            item["flow"] = hflip_flow(flow) if mirror else flow
            item["flow_weight"] = weight.flip(-1) if mirror else weight
        if self.foregrounds is not None:
            fg = torch.from_numpy(self.foregrounds[clip][int(times[1])]).float()[None] / 255
            item["foreground"] = fg.flip(-1) if mirror else fg
        return item


#: the keys of task_args.still_part_motion (:class:`McsStillPairs` arguments)
STILL_PART_MOTION = ("part_rotation_deg", "part_scale", "part_translation", "part_move_prob")


class McsStillPairs(Dataset):
    """``(index, epoch)`` -> a frame pair made from one still image: the source is the image
    (mirrored with ``flip_p``), the target is the source warped by a random TPS with a
    similarity part (:func:`random_scops_tps`, moderate ranges), ``target(z) = source(T(z))``,
    and the exact flow ``T(z) - z`` comes with it (``flow``, ``[2, H, W]``).

    With ``foregrounds`` (one ``[H, W]`` map in [0, 1] per image), only the foreground moves, in
    front of the static source background that MCS's model assumes (SPEC A2.3): with the warped
    map ``m``, ``target = m source(T(z)) + (1 - m) source(z)`` and ``flow = m (T(z) - z)``.
    ``flow_weight`` is 0 where the moving part samples outside the source frame; ``foreground``
    ``[1, H, W]`` is ``m`` (the target's foreground). Both frames get the same colour jitter.
    Items have the keys of :class:`McsFramePairs` (``clip`` = -1, ``times`` = (0, 0)).

    With ``part_masks`` (one ``[J+1, h, w]`` soft map per image, channel 0 the background, e.g.
    a SCOPS model's parts), each part also moves by its own random affine about its
    centre (:func:`part_motion_grid` of the maps, rotation ``part_rotation_deg``, scale
    ``1 +- part_scale``, shift ``part_translation``; each part moves with probability
    ``part_move_prob``, else not) before the warp: ``T(z) = G(z) + D(G(z))`` with
    ``D(p) = sum_j m_j(p) ((A_j - I)(p - c_j) + t_j)``. One smooth warp is explained by one
    part; parts that move independently inside the object are what splits it.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        foregrounds: list[np.ndarray] | None = None,
        seed: int = 0,
        jitter: float = 0.1,
        flip_p: float = 0.5,
        max_rotation_deg: float = 15.0,
        scale_range: tuple[float, float] = (0.85, 1.2),
        max_translation: float = 0.1,
        local_jitter: float = 0.04,
        part_masks: list[np.ndarray] | None = None,
        part_rotation_deg: float = 20.0,
        part_scale: float = 0.2,
        part_translation: float = 0.15,
        part_move_prob: float = 0.3,
    ) -> None:
        if not images:
            raise ValueError("need at least one image")
        for name, maps in (("foreground", foregrounds), ("part", part_masks)):
            if maps is not None and len(maps) != len(images):
                raise ValueError(f"{len(maps)} {name} maps for {len(images)} images")
        if part_masks is not None and any(m.ndim != 3 or m.shape[0] < 2 for m in part_masks):
            raise ValueError("part_masks must be [J+1, h, w] maps with at least one part")
        if not 0 <= part_move_prob <= 1:
            raise ValueError(f"part_move_prob must be in [0, 1], got {part_move_prob}")
        self.images, self.foregrounds, self.part_masks = images, foregrounds, part_masks
        self.part_motion = (math.radians(part_rotation_deg), part_scale, part_translation)
        self.part_move_prob = part_move_prob
        self.seed, self.jitter, self.flip_p = seed, jitter, flip_p
        self.warp = {
            "max_rotation_deg": max_rotation_deg,
            "scale_range": scale_range,
            "max_translation": max_translation,
            "jitter": local_jitter,
        }

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        rng = sample_rng(self.seed, epoch, index)
        source = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1).float() / 255
        h, w = source.shape[-2:]
        if self.foregrounds is None:
            foreground = torch.ones(1, h, w)
        else:
            fg = np.asarray(self.foregrounds[index])
            if fg.shape != (h, w):
                raise ValueError(f"foreground {fg.shape} != image {(h, w)}")
            scale = 255.0 if fg.dtype == np.uint8 else 1.0
            foreground = torch.as_tensor(fg, dtype=torch.float32)[None] / scale
        flip = rng.random() < self.flip_p
        if flip:
            source, foreground = source.flip(-1), foreground.flip(-1)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        transform = random_scops_tps(1, generator=generator, **self.warp)
        grid = transform.grid(h, w)  # [1, H, W, 2]: T(z), inclusive
        if self.part_masks is not None:
            masks = torch.as_tensor(self.part_masks[index], dtype=torch.float32)[None]
            field = self._part_displacement(masks.flip(-1) if flip else masks, rng)
            moved = F.grid_sample(field, grid, padding_mode="border", align_corners=True)
            grid = grid + moved.permute(0, 2, 3, 1)
        warped = F.grid_sample(source[None], grid, padding_mode="border", align_corners=True)[0]
        inside = (grid.abs() <= 1).all(-1).float()  # [1, H, W]
        if self.foregrounds is None:
            moving = foreground[None]
        else:
            moving = F.grid_sample(foreground[None], grid, align_corners=True)
        moving = moving[0]  # [1, H, W]: the warped foreground (zero outside the frame)
        target = moving * warped + (1 - moving) * source
        flow = moving * (grid - coordinate_grid(h, w, "inclusive"))[0].permute(2, 0, 1)
        pair = torch.stack([source, target])
        if self.jitter > 0:
            pair = _jitter(pair, rng, self.jitter)
        return {
            "source": pair[0],
            "target": pair[1],
            "clip": -1,
            "times": torch.zeros(2, dtype=torch.int64),
            "time_flip": False,
            "flow": flow.contiguous(),
            "flow_weight": 1 - moving * (1 - inside),
            "foreground": moving,
        }

    def _part_displacement(self, masks: Tensor, rng: np.random.Generator) -> Tensor:
        """Soft part maps ``[1, J+1, h, w]`` -> displacement ``D`` ``[1, 2, h, w]`` (inclusive
        ``(x, y)``) of one random affine per part about its centre (background still)."""
        j = masks.shape[1] - 1
        rotation, scale, translation = self.part_motion
        moves = torch.from_numpy(rng.random(j) < self.part_move_prob).float()
        theta = torch.from_numpy(rng.uniform(-rotation, rotation, j)).float() * moves
        zoom = 1 + torch.from_numpy(rng.uniform(-scale, scale, j)).float() * moves
        shift = torch.from_numpy(rng.uniform(-translation, translation, (j, 2))).float()
        shift = shift * moves[:, None]
        cos, sin = theta.cos() * zoom, theta.sin() * zoom
        affine = torch.stack([cos, -sin, sin, cos], -1).view(1, j, 2, 2)
        masks = masks / masks.sum(1, keepdim=True).clamp_min(1e-6)
        centres = part_centres(masks[:, 1:], convention="inclusive")
        still = MCSSegmentation(masks, centres, torch.eye(2).expand(1, j, 2, 2))
        moved = MCSSegmentation(masks, centres + shift[None], affine)
        grid = part_motion_grid(still, moved)  # [1, h, w, 2]: L(p)
        base = coordinate_grid(*masks.shape[-2:], "inclusive")
        return (grid - base).permute(0, 3, 1, 2)


class PairMix(Dataset):
    """Datasets of frame pairs one after the other (``(index, epoch)`` keys), optionally without
    some item keys (so video and still-image items collate together)."""

    def __init__(self, parts: list[Dataset], drop: tuple[str, ...] = ()) -> None:
        self.parts, self.drop = parts, drop
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        item = self.parts[part][(index - int(self.offsets[part]), epoch)]
        return {k: v for k, v in item.items() if k not in self.drop}


def _number_at_least_0(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0


def _split_segmentation(seg: MCSSegmentation, chunks: int) -> list[MCSSegmentation]:
    """Split a batched segmentation into ``chunks`` equal batches."""
    parts = (seg.masks.chunk(chunks), seg.shift.chunk(chunks), seg.affine.chunk(chunks))
    return [MCSSegmentation(m, s, a) for m, s, a in zip(*parts, strict=True)]


class McsModule(nn.Module):
    """What is trained: the MCS model, plus the frozen perceptual feature net of the loss."""

    def __init__(self, model: MCSModel, perceptual: PerceptualPyramid) -> None:
        super().__init__()
        self.model, self.perceptual = model, perceptual

    def forward(
        self, source: Tensor, target: Tensor, transformed: Tensor, reconstruct: bool = True
    ) -> dict[str, Any]:
        """One pass (DDP-safe): segment S, T and the warped T together, reconstruct T from S
        (without ``reconstruct``, only the part-motion ``grid``: the generator is not run)."""
        seg_s, seg_t, seg_tt = _split_segmentation(
            self.model.segmenter.segment(torch.cat([source, target, transformed])), 3
        )
        if reconstruct:
            out: dict[str, Any] = dict(self.model.generator(source, seg_s, seg_t))
        else:
            out = {"grid": part_motion_grid(seg_t, seg_s)}
        out.update(seg_source=seg_s, seg_target=seg_t, seg_transformed=seg_tt)
        return out


@register_task("mcs")
class McsTask(Task):
    """Args (``task_args``): see ``defaults``. ``video_dir``: train on every video in this
    folder instead of Tai-Chi (no validation scores). ``train_clips`` restricts the Tai-Chi
    training clips to these clip numbers (tests); ``val_every_nth_frame`` subsamples the
    validation frames."""

    defaults: ClassVar[dict[str, Any]] = {
        "model": "mcs_k10",
        "num_parts": 10,
        "model_kwargs": {},
        "data_root": None,
        "video_dir": None,  # a folder of the user's videos (recursive) instead of Tai-Chi
        "size": 128,
        "repeats": 50,
        "train_clips": None,
        "jitter": 0.1,
        # or "vgg19" with vgg_weights (a local file), "none", or "encoder": the generator's own
        # encoder as an EMA copy (ema_decay per step; one weights.perceptual per encoder block)
        "feature_net": "random",
        "ema_decay": 0.999,
        "vgg_weights": None,
        "random_channels": list(RANDOM_CHANNELS),  # widths of the "random" net's five stages
        "flow_preset": "medium",  # OpenCV DIS preset of the flow targets (weights.flow > 0)
        "flow_min_motion": 0.0,  # px: video flow supervises only what moves this much (ramp)
        "part_min_motion": 1.0,  # px: weights.still_parts shrinks parts that move less (ramp)
        "still_images": None,  # pairs from still images too: faces300w or a folder of images
        # what moves in a still pair: the unsupervised foreground (FOREGROUND_METHODS) in
        # front of a static background, or "none" (the whole image)
        "still_foreground": "boundary",
        # a part model (zoo name, folder or Hub id; e.g. scops_faces300w) whose parts each move
        # by their own random affine inside a still pair (McsStillPairs): motion that
        # differs between the parts of one object, as a video has and one warp has not
        "still_part_teacher": None,
        # how they move (McsStillPairs: part_rotation_deg, part_scale, part_translation in
        # [-1, 1] coordinates, part_move_prob); {} = its defaults
        "still_part_motion": {},
        # each video frame's foreground (FOREGROUND_METHODS; computed once per frame and
        # cached): the target of weights.background and the alpha of copy-paste
        "video_foreground": "grabcut",
        # self-training: a trained part model (zoo name, folder or Hub id) whose foreground,
        # refined by GrabCut, replaces video_foreground (cached per model weights)
        "foreground_teacher": None,
        # copy-paste: both frames' video_foreground onto one crop of these images ("bsds500":
        # its train split, else a folder of images, recursive) with probability paste_prob
        "paste_backgrounds": None,
        "paste_prob": 0.5,
        "weights": {},
        # the first steps train the segmenter on flow + equivariance alone (no generator, no
        # reconstruction: "flow first, then both"; needs weights.flow > 0; one process only)
        "flow_only_steps": 0,
        "lr": 2e-4,
        "lr_schedule": "constant",  # "cosine" (lr to 0 over max_steps), "constant_cosine"
        "lr_anneal_fraction": 0.1,  # constant_cosine: the cosine over this last part of the steps
        "betas": [0.5, 0.999],
        "val_every_nth_frame": 10,
        # held-out protocol of `copart-hub eval parts` (faces300w, faces300w-zoomshift, taichi,
        # weizmann_horse); default: taichi on Tai-Chi, none on a user's videos
        "val_dataset": None,
    }

    def __init__(self, args: dict[str, Any], seed: int) -> None:
        unknown = set(args) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown mcs task_args: {sorted(unknown)}")
        super().__init__({**self.defaults, **args}, seed)
        self.check_args("positive_int", "num_parts", "size", "repeats", "val_every_nth_frame")
        self.check_args("positive", "lr", "part_min_motion")
        self.check_args("non_negative", "jitter", "flow_min_motion")
        self.check_args("fraction", "ema_decay")
        self.check_paste_args()
        self.check_args("non_negative_int", "flow_only_steps")
        self.check_args("fractions", "betas")
        self.check_choice("lr_schedule", LR_SCHEDULES)
        self.check_args("fraction", "lr_anneal_fraction")
        self.check_args("ints", "train_clips", "random_channels")
        if any(c < 1 for c in self.args["random_channels"]):
            raise ValueError(
                f"task_args.random_channels must be positive, got {self.args['random_channels']}"
            )
        self.check_args("file", "vgg_weights")
        self.video_collection = self.args["video_dir"]  # a shared clip folder's name, or None
        if self.video_collection not in VIDEO_COLLECTIONS:
            self.video_collection = None
        else:
            root = Path(self.args["data_root"] or shared_data_root() or "../shared/data")
            self.args["video_dir"] = str(root / VIDEO_COLLECTIONS[self.args["video_dir"]])
        self.check_args("folder", "video_dir")
        self.videos: list[Path] | None = None  # the user's videos, found once
        if self.args["video_dir"]:
            if self.args["train_clips"] is not None:
                raise ValueError("task_args.train_clips selects Tai-Chi clips, not video_dir ones")
            try:
                self.videos = find_videos(self.args["video_dir"])
            except ValueError as err:
                raise ValueError(f"task_args.video_dir {err}") from None
        self.check_choice("feature_net", ("random", "vgg19", "none", "encoder"))
        if self.args["val_dataset"] is not None:
            self.check_choice("val_dataset", DATASETS)
        self.check_choice("flow_preset", DIS_PRESETS)
        self.check_choice("still_foreground", (*FOREGROUND_METHODS, "none"))
        self.check_choice("video_foreground", FOREGROUND_METHODS)
        for key in ("foreground_teacher", "still_part_teacher"):
            teacher = self.args[key]
            if teacher is not None and not (isinstance(teacher, str) and teacher):
                raise ValueError(f"task_args.{key} must be a model name or folder, got {teacher!r}")
        still = self.args["still_images"]
        if self.args["still_part_teacher"] is not None and still is None:
            raise ValueError("task_args.still_part_teacher moves the parts of still_images: set it")
        if still is not None and still not in STILL_COLLECTIONS:
            self.check_args("folder", "still_images")
        self.check_keys("weights", McsLossWeights.__dataclass_fields__)
        self.check_keys("still_part_motion", STILL_PART_MOTION)
        weights = dict(self.args["weights"])
        if "perceptual" in weights:
            weights["perceptual"] = tuple(weights["perceptual"])
        bad = {
            k: v
            for k, v in weights.items()
            if not all(_number_at_least_0(x) for x in (v if isinstance(v, tuple) else (v,)))
        }
        if bad:
            raise ValueError(f"task_args.weights must be numbers >= 0, got {bad}")
        self.weights = McsLossWeights(**weights)
        if self.weights.still_background > 0 and self.args["flow_min_motion"] <= 0:
            raise ValueError(
                "task_args.weights.still_background needs task_args.flow_min_motion > 0 (the "
                "pixels of motion from which a pixel counts as moving)"
            )
        if (
            self.weights.background > 0
            and self.args["still_images"] is not None
            and self.args["still_foreground"] == "none"
        ):
            raise ValueError(
                "task_args.weights.background needs a still_foreground method for still_images"
            )
        if self.args["flow_only_steps"] and self.weights.flow <= 0:
            raise ValueError("task_args.flow_only_steps needs task_args.weights.flow > 0")
        if self.args["flow_only_steps"] and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                "task_args.flow_only_steps leaves the generator unused, which DDP (several "
                "processes) does not allow: train the flow-only steps in one process"
            )
        self._frames: dict[str, list[ClipFrames]] = {}
        self._eval_data: tuple[Any, Any] | None = None
        self._pairs: list[np.ndarray] | None = None  # the sample grid's pairs

    # ----------------------------------------------------------------- data
    def clips(self, split: str) -> list[TaichiClip]:
        """Tai-Chi clips of ``split`` (``train`` filtered by ``train_clips``)."""
        clips = taichi_clips(split, self.args["data_root"])
        keep = self.args["train_clips"]
        if split == "train" and keep is not None:
            clips = [c for c in clips if int(c.name.split("_")[1]) in set(keep)]
        return clips

    def frames(self, split: str) -> list[ClipFrames]:
        """The ``size x size`` frames of each clip of ``split`` (decoded once, cached across
        runs); the user's videos serve every split."""
        if split not in self._frames:
            paths = self.videos or [c.video for c in self.clips(split)]
            self._frames[split] = [video_frames(p, self.args["size"]) for p in paths]
        return self._frames[split]

    def build_model(self) -> nn.Module:
        a = self.args
        model = create_model(
            a["model"],
            num_parts=a["num_parts"],
            input_size=(a["size"], a["size"]),
            **a["model_kwargs"],
        )
        feature_net, layer_weights = a["feature_net"], self.weights.perceptual
        if feature_net == "encoder":
            feature_net = EmaEncoderFeatures(model.generator, a["ema_decay"])
            blocks = len(feature_net.stages)
            if "perceptual" not in a["weights"]:  # the default's weight, once per block
                layer_weights = (McsLossWeights.perceptual[0],) * blocks
            elif len(layer_weights) != blocks:
                raise ValueError(
                    f"feature_net='encoder' gives {blocks} feature maps (the generator's first "
                    f"and down blocks), but task_args.weights.perceptual has {len(layer_weights)}"
                )
        perceptual = PerceptualPyramid(
            feature_net,
            vgg_weights=a["vgg_weights"],
            layer_weights=layer_weights,
            pixel_weight=self.weights.pixel,
            ssim_weight=self.weights.ssim,
            random_channels=tuple(a["random_channels"]),
        )
        return McsModule(model, perceptual)

    def release_model(self, module: nn.Module) -> MCSModel:
        return module.model

    def still_images(self) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """The ``size x size`` RGB images of ``still_images`` (a collection's train split or
        every image under a folder, recursive) and their ``still_foreground`` maps (uint8;
        None for ``none``), computed once and cached by ``datasets``."""
        a, size = self.args, self.args["size"]
        name = a["still_images"]
        if name in STILL_COLLECTIONS:
            paths = STILL_COLLECTIONS[name]("train", a["data_root"]).images
            rows = image_rows(paths=paths)
        else:
            rows = image_rows(data_dir=name)
        method = a["still_foreground"]
        if method != "none":
            rows = add_foreground(rows, method, None)
        images, foregrounds = [], []
        for row in rows:
            image = row["image"].convert("RGB").resize((size, size), Image.BILINEAR)
            images.append(np.array(image))
            if method != "none":
                foregrounds.append(np.array(row["foreground"].resize((size, size), Image.BILINEAR)))
        return images, foregrounds if method != "none" else None

    def still_parts(self, images: list[np.ndarray]) -> list[np.ndarray] | None:
        """``still_part_teacher``'s soft part maps ``float16 [J+1, size/4, size/4]`` of each
        still image (None without a teacher), cached (:func:`~..data.teacher_part_maps`)."""
        teacher = self.args["still_part_teacher"]
        if teacher is None:
            return None
        return teacher_part_maps(images, teacher, max(self.args["size"] // 4, 1))

    def train_dataset(self) -> Dataset:
        """Video frame pairs (with DIS flow targets when ``weights.flow`` or
        ``weights.still_background`` is > 0), plus still-image pairs when ``still_images`` is
        set, concatenated."""
        a = self.args
        flow = None
        if self.weights.flow > 0 or self.weights.still_background > 0:
            flow = FlowTargets(a["flow_preset"], min_motion=a["flow_min_motion"])
        clips = self.frames("train")
        foregrounds, backgrounds = None, self.background_crops()
        if self.weights.background > 0 or backgrounds is not None:
            method = a["video_foreground"]
            if a["foreground_teacher"]:
                method = TeacherForeground(a["foreground_teacher"])
            foregrounds = [video_foregrounds(c, method) for c in clips]
        videos = McsFramePairs(
            clips,
            a["repeats"],
            self.seed,
            a["jitter"],
            flow=flow,
            foregrounds=foregrounds,
            backgrounds=backgrounds,
            paste_prob=a["paste_prob"],
        )
        if a["still_images"] is None:
            return videos
        images, still_foregrounds = self.still_images()
        stills = McsStillPairs(
            images,
            still_foregrounds,
            self.seed,
            a["jitter"],
            part_masks=self.still_parts(images),
            **a["still_part_motion"],
        )
        drop = () if flow is not None else ("flow", "flow_weight")
        if foregrounds is None:
            drop = (*drop, "foreground")
        return PairMix([videos, stills], drop=drop)

    def build_optimizers(self, module: nn.Module, max_steps: int) -> list[OptimizerPair]:
        """Adam (official: lr 2e-4, betas (0.5, 0.999), no scheduler) for both modules;
        ``lr_schedule`` may decay it (:func:`~.base.lr_scheduler`)."""
        a = self.args
        opt = torch.optim.Adam(module.model.parameters(), lr=a["lr"], betas=tuple(a["betas"]))
        return [(opt, lr_scheduler(opt, a["lr_schedule"], max_steps, a["lr_anneal_fraction"]))]

    # ----------------------------------------------------------------- losses
    def training_step(
        self, module: nn.Module, batch: dict[str, Tensor], step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Perceptual pyramid of the reconstructed target plus shift/affine equivariance under a
        random MCS transform of the target (border padding) drawn from ``(seed, step)``, plus
        the flow term when ``weights.flow > 0``; before ``flow_only_steps`` no reconstruction
        (logged as 0). ``feature_net="encoder"`` first moves its EMA copy of the encoder."""
        inner = module.module if hasattr(module, "module") else module  # DDP wrapper
        if isinstance(inner.perceptual.features, EmaEncoderFeatures):
            # before the loss: its backward needs the teacher's weights as they were used
            inner.perceptual.features.update(inner.model.generator)
        source, target = batch["source"], batch["target"]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        transform = random_mcs_tps(
            target.shape[0], generator=generator, device=target.device, dtype=target.dtype
        )
        reconstruct = step >= self.args["flow_only_steps"]
        out = module(source, target, transform.warp(target, padding_mode="border"), reconstruct)
        if reconstruct:
            reconstruction = inner.perceptual(out["prediction"], target)
        else:
            reconstruction = torch.zeros((), device=target.device)
        shift, affine = equivariance_losses(out["seg_target"], out["seg_transformed"], transform)
        seg = out["seg_target"]
        terms: dict[str, Tensor] = {}
        if self.weights.flow > 0:
            terms["flow"] = flow_loss(out["grid"], batch["flow"], batch["flow_weight"])
        if self.weights.still_background > 0:
            terms["still_background"] = still_background_loss(
                seg.masks[:, :1], batch["flow"], self.args["flow_min_motion"]
            )
        if self.weights.background > 0:
            fg = F.interpolate(batch["foreground"], size=seg.masks.shape[-2:], mode="area")
            terms["background"] = background_loss(seg.masks, fg)
        if self.weights.still_parts > 0:
            terms["still_parts"] = still_parts_loss(
                seg, out["seg_source"], self.args["part_min_motion"], tuple(target.shape[-2:])
            )
        loss = self.weights.total(reconstruction, shift, affine, **terms)
        logs = {
            "reconstruction": reconstruction.item(),
            "equivariance_shift": shift.item(),
            "equivariance_affine": affine.item(),
            **{name: term.item() for name, term in terms.items()},
        }
        return loss, logs

    # ----------------------------------------------------------------- validation
    def val_protocol(self) -> str | None:
        """The ``copart-hub eval parts`` dataset validation uses (None: no scores)."""
        return self.args["val_dataset"] or (None if self.videos else "taichi")

    def validate(self, model: nn.Module) -> dict[str, float]:
        """The held-out protocol of ``copart-hub eval parts`` (:meth:`val_protocol`): on Tai-Chi
        ``fg_iou`` against the person masks and keypoint ``mae_sum`` over ``mae_coords``
        coordinates on every ``val_every_nth_frame``-th frame and the reconstruction scores
        (:mod:`copart_hub.evaluation.reconstruction`), ``score`` = ``fg_iou``; on faces
        the landmark error (% IOD), ``score`` = its negative. None (``{}``) for a user's videos
        without ``val_dataset``: then the final model is the one exported."""
        dataset = self.val_protocol()
        if dataset is None:
            return {}
        if self._eval_data is None:
            root = self.args["data_root"]
            if dataset == "taichi":
                every = self.args["val_every_nth_frame"]
                splits = taichi_frames("train", root, every), taichi_frames("val", root, every)
            else:
                splits = DATASETS[dataset]("train", root), DATASETS[dataset]("val", root)
            self._eval_data = splits
        scores = evaluate(model, dataset, data=self._eval_data)
        if "fg_iou" in scores:
            return {**scores, "score": scores["fg_iou"]}
        return {**scores, "score": -scores["landmark_error_iod_pct"]}

    @torch.no_grad()
    def write_samples(self, model: nn.Module, path: Path) -> None:
        """Rows of source | target | prediction | part overlay on the target, for 2 pairs (frames
        1 s apart, or the first and last) of 2 val clips (of 2 of the user's clips), or for 4
        still-image pairs of the held-out images of a ``val_dataset`` of images."""
        from copart_hub.visualize import contact_sheet, overlay_parts

        device = next(model.parameters()).device
        tiles = []
        for pair in self._sample_pairs():
            x = torch.from_numpy(pair).to(device).permute(0, 3, 1, 2).float() / 255
            out = model(x[:1], x[1:])
            pred = (out["prediction"][0].permute(1, 2, 0).cpu().numpy() * 255).round()
            masks = F.interpolate(out["seg_target"].masks, size=pair.shape[1:3], mode="bilinear")
            labels = masks.argmax(1)[0].cpu().numpy()
            target = Image.fromarray(pair[1])
            tiles += [
                Image.fromarray(pair[0]),
                target,
                Image.fromarray(pred.astype(np.uint8)),
                overlay_parts(target, labels, num_parts=model.num_parts),
            ]
        contact_sheet(tiles, cols=4, cell_size=self.args["size"]).save(path)

    def _sample_pairs(self) -> list[np.ndarray]:
        """``uint8 [2, H, W, 3]`` (source, target) pairs for :meth:`write_samples` (built once)."""
        if self._pairs is None:
            self._pairs = self._build_sample_pairs()
        return self._pairs

    def _build_sample_pairs(self) -> list[np.ndarray]:
        dataset, size = self.val_protocol(), self.args["size"]
        if dataset is not None and dataset != "taichi":
            val = DATASETS[dataset]("val", self.args["data_root"])
            pick = np.linspace(0, len(val.images) - 1, 4).astype(int)
            images = [
                np.array(val.load_image(int(i)).convert("RGB").resize((size, size))) for i in pick
            ]
            stills = McsStillPairs(images, seed=0, jitter=0.0, flip_p=0.0)  # whole image moves
            pairs = [stills[(i, 0)] for i in range(len(images))]
            return [
                (torch.stack([p["source"], p["target"]]).permute(0, 2, 3, 1).numpy() * 255)
                .round()
                .astype(np.uint8)
                for p in pairs
            ]
        clips, pairs = self.frames("val"), []
        for i in np.linspace(0, len(clips) - 1, min(2, len(clips))).astype(int):
            frames = clips[i]
            for t in np.linspace(0, max(0, len(frames) - 31), 2).astype(int):
                pairs.append(frames[[t, min(t + 30, len(frames) - 1)]])
        return pairs

    def card_info(self) -> dict[str, Any]:
        a = self.args
        backgrounds = self.paste_sources()
        summary = (
            "Motion-supervised co-part segmentation (segmenter + generator) trained {} "
            "`segmenter_only()` gives the part segmenter."
        )
        if a["still_images"] in STILL_COLLECTIONS:
            name, clips = a["still_images"], self.video_collection
            if not self.videos:
                clips = "taichi"
            sources = [name] + ([clips] if clips else [])
            videos = f"{clips} clips" if clips else "the videos of a local folder"
            facts: dict[str, Any] = {
                **card_facts(*sources, *backgrounds),
                "summary": summary.format(
                    f"from scratch on frame pairs made from {name} images (random TPS + "
                    f"similarity warps of the foreground, with their exact flow) and on {videos};"
                ),
                "data_source": [*sources, *backgrounds],
                "limitations": (
                    "Trained from scratch (no FOMM initialisation, no ImageNet VGG-19) on CPU; "
                    "most pairs are synthetic warps of still images, so large real motions "
                    "(head turns, open mouths) are rarer in training than in video."
                ),
            }
        elif self.videos:
            stills = f" and pairs made from the images of {a['still_images']}"
            facts = {
                "summary": summary.format(
                    f"on the videos of {a['video_dir']}{stills if a['still_images'] else ''};"
                ),
                "data": "; ".join(
                    [f"{len(self.videos)} videos in {a['video_dir']}"]
                    + [SOURCES[b].description for b in backgrounds]
                ),
                "data_licence": "; ".join(
                    ["the user's data"] + [SOURCES[b].terms for b in backgrounds]
                ),
                "limitations": "No held-out scores: the videos have no ground truth.",
            }
        else:
            facts = {
                "summary": summary.format("from scratch on Tai-Chi clips;"),
                **card_facts("taichi", *backgrounds),
                "data_source": ["taichi", *backgrounds],
                "limitations": (
                    "Trained from scratch (no FOMM initialisation, no ImageNet VGG-19) on 12 "
                    "short clips; scores use MediaPipe pseudo ground truth (33 keypoints, person "
                    "masks), so they are not comparable with the paper's Tai-Chi-HD numbers."
                ),
            }
        return {
            **facts,
            "method": (
                "MCS: Motion-supervised Co-Part Segmentation (Siarohin, Roy et al., ICPR 2020)"
            ),
            "paper": "https://arxiv.org/abs/2004.03234",
            "num_parts": a["num_parts"],
            "reference_features": f"perceptual loss: {a['feature_net']} features",
            "tags": ["mcs", "motion-cosegmentation", "part-segmentation"],
        }
