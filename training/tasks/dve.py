"""Dense descriptors from an unlabelled image collection: dense equivariance with descriptor
vector exchange (Thewlis et al., ICCV 2019; :mod:`copart_hub.losses.dense_equivariance`).

Each image and a random TPS + similarity warp of it (the shared SCOPS warp, milder), both
colour-jittered, are described; each descriptor of the warp, re-expressed in the descriptors of
the next image of the batch (another object of the category), must match where it came from.
Validation carries the 68 landmarks of held-out 300-W faces from one person to another by
descriptor matching (:class:`~copart_hub.correspondence.DescriptorMatcher`) and
scores where they land, in % of the inter-ocular distance, against the crops mapped onto each
other (no motion).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset

from copart_hub import create_model
from copart_hub.correspondence import DescriptorMatcher
from copart_hub.data import collections
from copart_hub.data.provenance import card_facts
from copart_hub.evaluation.swaps import landing_distances
from copart_hub.losses.dense_equivariance import dense_equivariance_loss
from copart_hub.ops.warps import random_scops_tps

from ..sampling import sample_rng
from .base import LR_SCHEDULES, OptimizerPair, Task, lr_scheduler, register_task

#: collections with a held-out split carrying landmarks
COLLECTIONS = {"faces300w": collections.faces300w}
VAL_PAIRS = 200


class DescriptorImages(Dataset):
    """``uint8 [N, 3, S, S]`` images -> ``{"image": float [3, S, S] in [0, 1]}``, mirrored with
    probability 1/2 (sample keys ``(index, epoch)``)."""

    def __init__(self, images: Tensor, seed: int) -> None:
        self.images, self.seed = images, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, epoch = key
        image = self.images[index].float() / 255
        if sample_rng(self.seed, epoch, index).random() < 0.5:
            image = image.flip(-1)
        return {"image": image}


def _load(paths: list[Path], size: int) -> Tensor:
    return torch.stack(
        [
            torch.from_numpy(
                np.array(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
            ).permute(2, 0, 1)
            for p in paths
        ]
    )


def colour_jitter(images: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Per-image channel gains ``1 +- strength / 2`` and a brightness shift ``+- strength / 3``
    of ``[B, 3, H, W]`` in [0, 1], clamped."""
    b = images.shape[0]
    gain = 1 + strength * (torch.rand(b, 3, 1, 1, generator=generator) - 0.5)
    shift = strength / 1.5 * (torch.rand(b, 1, 1, 1, generator=generator) - 0.5)
    return (images * gain.to(images) + shift.to(images)).clamp(0, 1)


@register_task("dve")
class DescriptorTask(Task):
    """Args (``task_args``): model (``dve_small``), model_kwargs, collection (``faces300w``),
    data_root, size (64), exchange (true: DVE; false: plain dense equivariance), temperature
    (0.05), max_rotation_deg (20), scale_range ([0.85, 1.2]), max_translation (0.1), jitter
    (0.3), lr (1e-3), lr_schedule, lr_anneal_fraction."""

    defaults: ClassVar[dict[str, Any]] = {
        "model": "dve_small",
        "model_kwargs": {},
        "collection": "faces300w",
        "data_root": None,
        "size": 64,
        "exchange": True,
        "temperature": 0.05,
        "max_rotation_deg": 20.0,
        "scale_range": [0.85, 1.2],
        "max_translation": 0.1,
        "jitter": 0.3,
        "lr": 1e-3,
        "lr_schedule": "constant",
        "lr_anneal_fraction": 0.1,
    }

    def __init__(self, args: dict[str, Any], seed: int) -> None:
        unknown = set(args) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown dve task_args: {sorted(unknown)}")
        super().__init__({**self.defaults, **args}, seed)
        self.check_args("positive_int", "size")
        self.check_args("positive", "lr", "temperature")
        self.check_args("non_negative", "max_rotation_deg", "max_translation", "jitter")
        self.check_args("range", "scale_range")
        self.check_args("fraction", "lr_anneal_fraction")
        self.check_choice("collection", COLLECTIONS)
        self.check_choice("lr_schedule", LR_SCHEDULES)
        if self.args["size"] % 8:
            raise ValueError(f"task_args.size must be a multiple of 8, got {self.args['size']}")

    def build_model(self) -> nn.Module:
        s = self.args["size"]
        return create_model(self.args["model"], input_size=(s, s), **self.args["model_kwargs"])

    def _collection(self, split: str) -> collections.Collection:
        return COLLECTIONS[self.args["collection"]](split, self.args["data_root"])

    def train_dataset(self) -> Dataset:
        return DescriptorImages(
            _load(self._collection("train").images, self.args["size"]), self.seed
        )

    def build_optimizers(self, model: nn.Module, max_steps: int) -> list[OptimizerPair]:
        a = self.args
        opt = torch.optim.Adam(model.parameters(), lr=a["lr"])
        return [(opt, lr_scheduler(opt, a["lr_schedule"], max_steps, a["lr_anneal_fraction"]))]

    def training_step(
        self, model: nn.Module, batch: dict[str, Tensor], step: int
    ) -> tuple[Tensor, dict[str, float]]:
        a, images = self.args, batch["image"]
        b, _, h, w = images.shape
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        warp = random_scops_tps(
            b,
            max_rotation_deg=a["max_rotation_deg"],
            scale_range=tuple(a["scale_range"]),
            max_translation=a["max_translation"],
            generator=generator,
            device=images.device,
            dtype=images.dtype,
        )
        grid = warp.grid(h, w)  # where each warped pixel comes from in the image
        warped = F.grid_sample(images, grid, align_corners=True, padding_mode="border")
        mean = images.new_tensor(model.image_mean).view(1, 3, 1, 1)
        std = images.new_tensor(model.image_std).view(1, 3, 1, 1)
        source, target = (
            model((colour_jitter(x, a["jitter"], generator) - mean) / std) for x in (images, warped)
        )
        small = F.interpolate(
            grid.permute(0, 3, 1, 2), size=source.shape[-2:], mode="bilinear", align_corners=True
        ).permute(0, 2, 3, 1)
        bank = source.roll(1, 0) if a["exchange"] and b > 1 else None  # another image's
        loss = dense_equivariance_loss(source, target, small, a["temperature"], exchange=bank)
        return loss, {"dense_equivariance": loss.item()}

    @cached_property
    def _val(self) -> tuple[list[tuple[Image.Image, Image.Image]], list, np.ndarray]:
        """Held-out (source, target) pairs of other people, their landmarks and the source's
        inter-ocular distance / 100."""
        test = self._collection("val")
        rng = np.random.default_rng(0)
        index = [(int(s), int(t)) for s, t in rng.integers(0, len(test.images), (VAL_PAIRS, 2))]
        index = [(s, t) for s, t in index if s != t]
        images = {i: test.load_image(i) for pair in index for i in pair}
        eyes = collections.five_landmarks(test.landmarks[[s for s, _ in index]])[:, :2]
        return (
            [(images[s], images[t]) for s, t in index],
            [(test.landmarks[s], test.landmarks[t]) for s, t in index],
            np.linalg.norm(eyes[:, 0] - eyes[:, 1], axis=1) / 100,
        )

    @torch.no_grad()
    def validate(self, model: nn.Module) -> dict[str, float]:
        """Landing of held-out landmarks carried to another face by descriptor matching
        (% IOD, mean over pairs), against no motion; ``score`` = minus the landing."""
        pairs, points, scale = self._val
        matcher = DescriptorMatcher(model, device=next(model.parameters()).device)
        scores = {}
        for name, motion in (("landing_iod_pct", True), ("landing_iod_pct_no_motion", False)):
            distances = landing_distances(matcher, pairs, points, scale, motion)
            scores[name] = float(np.nanmean(np.nanmean(distances, 1)))
        return {**scores, "score": -scores["landing_iod_pct"]}

    @torch.no_grad()
    def write_samples(self, model: nn.Module, path: Path) -> None:
        """Four held-out faces and their descriptors' first three principal components as RGB
        (one projection for all four: the same colour is the same descriptor)."""
        from copart_hub.visualize import contact_sheet

        pairs = self._val[0][:2]
        images = [im for pair in pairs for im in pair]
        matcher = DescriptorMatcher(model, device=next(model.parameters()).device)
        maps = torch.stack([matcher.describe(im) for im in images]).cpu()  # [4, C, h, w]
        flat = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
        flat = flat - flat.mean(0)
        _, _, v = torch.linalg.svd(flat, full_matrices=False)
        rgb = (flat @ v[:3].T).reshape(*maps.shape[:1], *maps.shape[2:], 3)
        low, high = rgb.amin((0, 1, 2)), rgb.amax((0, 1, 2))
        rgb = ((rgb - low) / (high - low).clamp_min(1e-8) * 255).round().byte().numpy()
        tiles = []
        for image, colours in zip(images, rgb, strict=True):
            tiles += [image, Image.fromarray(colours).resize(image.size, Image.NEAREST)]
        contact_sheet(tiles, cols=4, cell_size=160).save(path)

    def card_info(self) -> dict[str, Any]:
        return {
            "name": f"dve_{self.args['collection']}",
            "load_name": f"dve_{self.args['collection']}",
            "summary": (
                "Dense descriptors learnt from scratch by dense equivariance with descriptor "
                "vector exchange: matching them carries a point of one object onto the same "
                "point of another."
            ),
            "usage": (
                "from copart_hub.correspondence import DescriptorMatcher\n"
                "points_in_source = DescriptorMatcher(model).transfer_points(source, target, "
                "points_in_target)"
            ),
            "limitations": (
                "Trained from scratch on one small collection on a CPU; descriptors at half the "
                "input resolution, 64x64 input."
            ),
            "method": "DVE: descriptor vector exchange (Thewlis et al., ICCV 2019)",
            "paper": "https://arxiv.org/abs/1908.06427",
            **card_facts(self.args["collection"]),
            "data_source": self.args["collection"],
            "tags": ["descriptors", "dve"],
        }
