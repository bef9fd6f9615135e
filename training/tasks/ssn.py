"""SSN training task: BSDS500 patches, soft label reconstruction + compactness (SPEC A3.4-A3.5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from copart_hub import create_model
from copart_hub.data.provenance import card_facts
from copart_hub.losses.ssn import IGNORE_INDEX, ssn_loss
from copart_hub.metrics.superpixels import achievable_segmentation_accuracy, boundary_recall
from copart_hub.processing import image_to_tensor

from ..data import bsds500_dataset
from ..sampling import sample_rng
from .base import OptimizerPair, Task, register_task

MAX_SEGMENTS = 50  # official: at most 50 GT segments per patch, the rest is ignored


def relabel(seg: np.ndarray) -> np.ndarray:
    """Consecutive ids 0..n-1 in order of first appearance size; ids >= 50 become 255."""
    _, inv = np.unique(seg, return_inverse=True)
    inv = inv.reshape(seg.shape)
    return np.where(inv < MAX_SEGMENTS, inv, IGNORE_INDEX).astype(np.int64)


class SSNPatches(Dataset):
    """Random patches of BSDS images with one random annotator's segmentation.

    Augmentation (official): scale ~ N(1, 0.75) clipped to [0.75, 3] (bilinear image, nearest
    labels), horizontal flip p=0.5, random ``patch x patch`` crop.
    """

    def __init__(self, rows, patch: int = 201, seed: int = 0) -> None:
        self.rows, self.patch, self.seed = rows, patch, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, epoch = key
        rng = sample_rng(self.seed, epoch, index)
        row = self.rows[index]
        image = torch.from_numpy(np.array(row["image"].convert("RGB"))).permute(2, 0, 1)
        segs = row["segmentations"]
        seg = torch.from_numpy(np.asarray(segs[rng.integers(len(segs))]).astype(np.int64))
        h, w = seg.shape
        scale = float(np.clip(rng.normal(1.0, 0.75), 0.75, 3.0))
        size = (max(self.patch, round(h * scale)), max(self.patch, round(w * scale)))
        image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[
            0
        ]
        seg = F.interpolate(seg[None, None].float(), size=size, mode="nearest")[0, 0].long()
        if rng.random() < 0.5:
            image, seg = image.flip(-1), seg.flip(-1)
        y = int(rng.integers(size[0] - self.patch + 1))
        x = int(rng.integers(size[1] - self.patch + 1))
        image = image[:, y : y + self.patch, x : x + self.patch]
        seg = seg[y : y + self.patch, x : x + self.patch]
        return {
            "image": (image / 255.0).clamp(0, 1),
            "labels": torch.from_numpy(relabel(seg.numpy())),
        }


@register_task("ssn")
class SSNTask(Task):
    """Args (``task_args``): model (``ssn_deep``), model_kwargs, patch (201), n_spixels (100),
    n_iter (5), pos_scale (0.25; ``null`` = the test-time rule), compact_weight (1e-5),
    lr (1e-4), val_images (20), val_counts ([100, 400]), data_root."""

    defaults: ClassVar[dict[str, Any]] = {
        "model": "ssn_deep",
        "model_kwargs": {},
        "patch": 201,
        "n_spixels": 100,
        "n_iter": 5,
        "pos_scale": 0.25,
        "compact_weight": 1e-5,
        "lr": 1e-4,
        "val_images": 20,
        "val_counts": [100, 400],
        "data_root": None,
    }

    def __init__(self, args: dict[str, Any], seed: int) -> None:
        unknown = set(args) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown ssn task_args: {sorted(unknown)}")
        super().__init__({**self.defaults, **args}, seed)
        self.check_args("positive_int", "patch", "n_spixels", "n_iter", "val_images")
        self.check_args("positive", "lr")
        self.check_args("non_negative", "compact_weight")
        self.check_args("positive_ints", "val_counts")
        if self.args["pos_scale"] is not None:
            self.check_args("positive", "pos_scale")
        self._val = None

    def build_model(self) -> nn.Module:
        return create_model(self.args["model"], **self.args["model_kwargs"])

    def train_dataset(self) -> Dataset:
        rows = bsds500_dataset("train", self.args["data_root"])
        return SSNPatches(rows, self.args["patch"], self.seed)

    def build_optimizers(self, model: nn.Module, max_steps: int) -> list[OptimizerPair]:
        return [(torch.optim.Adam(model.parameters(), lr=self.args["lr"]), None)]

    def training_step(
        self, model: nn.Module, batch: dict[str, Tensor], step: int
    ) -> tuple[Tensor, dict[str, float]]:
        a = self.args
        out = model(
            batch["image"], n_spixels=a["n_spixels"], n_iter=a["n_iter"], pos_scale=a["pos_scale"]
        )
        xy = out.features[:, -5:-3]  # positions: the first two XYLab channels (appended last)
        return ssn_loss(out.association, batch["labels"], xy, a["compact_weight"])

    def _val_rows(self):
        if self._val is None:
            rows = bsds500_dataset("val", self.args["data_root"])
            self._val = rows.select(range(min(self.args["val_images"], len(rows))))
        return self._val

    @torch.no_grad()
    def validate(self, model: nn.Module) -> dict[str, float]:
        """Mean ASA / boundary recall (1 px) over every annotator of the first val images."""
        scores: dict[str, float] = {}
        device = next(iter(model.parameters()), torch.empty(0)).device
        for n in self.args["val_counts"]:
            asa, br = [], []
            for row in self._val_rows():
                sp = model.superpixels(image_to_tensor(row["image"])[None].to(device), n)[0]
                for gt in row["segmentations"]:
                    g = np.asarray(gt)
                    asa.append(achievable_segmentation_accuracy(sp, g))
                    br.append(boundary_recall(sp, g, tolerance=1))
            scores[f"asa@{n}"] = float(np.mean(asa))
            scores[f"br@{n}"] = float(np.mean(br))
        scores["score"] = float(np.mean([scores[f"asa@{n}"] for n in self.args["val_counts"]]))
        return scores

    @torch.no_grad()
    def write_samples(self, model: nn.Module, path: Path) -> None:
        from copart_hub.visualize import contact_sheet, overlay_superpixels

        device = next(iter(model.parameters()), torch.empty(0)).device
        tiles = []
        for row in self._val_rows().select(range(min(4, len(self._val_rows())))):
            image = row["image"].convert("RGB")
            sp = model.superpixels(image_to_tensor(image)[None].to(device), 400)[0]
            tiles.append(overlay_superpixels(image, sp))
        contact_sheet(tiles, cols=2, cell_size=360).save(path)

    def card_info(self) -> dict[str, Any]:
        return {
            "name": "ssn_bsds500",
            "load_name": "ssn_bsds500",
            "summary": (
                "SSN_deep superpixels (differentiable SLIC over learned 20-d pixel features), "
                "trained from scratch on BSDS500; the default superpixel model of copart_hub."
            ),
            "usage": (
                "from copart_hub.pipelines import SuperpixelSegmenter\n"
                'result = SuperpixelSegmenter(model)("photo.jpg", n_spixels=400)\n'
                "result.labels, result.num_superpixels, result.overlay"
            ),
            "limitations": (
                "Trained on CPU for far fewer steps than the paper (~500k); the feature CNN is "
                "half as wide (hidden_dim 32). Scores are on BSDS500 val, not the test split "
                "(absent here). Superpixel counts after connectivity enforcement differ from "
                "the requested count: compare methods at equal actual count."
            ),
            "method": "SSN: Superpixel Sampling Networks (Jampani et al., ECCV 2018)",
            "paper": "https://arxiv.org/abs/1807.10174",
            **card_facts("bsds500"),
            "data_source": "bsds500",
            "tags": ["superpixels", "ssn"],
        }
