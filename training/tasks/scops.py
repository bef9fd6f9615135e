"""SCOPS training task (SPEC A1): concentration, equivariance, semantic consistency with a
saliency-masked, learned non-negative part basis, and orthonormality.

Reference features for semantic consistency (SPEC 0: no ImageNet VGG here), ``reference``:
- ``"colour"``: Lab colour and gradient energy at two scales (8 channels; fixed);
- ``"histogram"``: local soft histograms of L, a, b (6 bins each) and of gradient orientation
  (8 bins, magnitude-weighted) at two scales (52 channels; fixed). A non-negative basis whose
  row-normalised rows are orthonormal needs many channels: with 8 the rows can only be one-hot;
- ``"position"``: where a pixel lies in the object's own frame: Gaussian bumps (5 x 5 grid) on
  coordinates centred on the foreground's centroid and scaled by its spread (25 channels; fixed).
  A geometric prior that follows the object under zoom and shift, not the image frame;
- ``"oriented_position"``: the same with the x axis turned towards the object's higher end, so
  a side-viewed animal's head gets the same descriptors facing left or right;
- fixed sources joined by ``+`` (e.g. ``"histogram+position"``) are concatenated;
- ``"ema"``: the model's own backbone, as a slowly updated (EMA) frozen copy;
- ``"model:<checkpoint>"``: a two-stage bootstrap: the frozen ``forward_features`` of a SCOPS
  model trained before (a folder, zoo name or Hub id) are the targets of the next one;
- ``"timm:<name>:<weights file>"``: any frozen timm model from a local weight file.
Images come through ``datasets`` (``imagefolder``: a user folder, recursive, optional masks via
``metadata.jsonl``). Foreground (``saliency``), computed once per image and cached by
``datasets``: ``"grabcut"`` (boundary-connectivity saliency refined by GrabCut, binary),
``"boundary"`` (the soft saliency alone), ``"masks"`` (a ``mask`` column from the metadata, or
files of the same stem in ``mask_dir``) or ``"none"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from kornia.filters import gaussian_blur2d, sobel, spatial_gradient
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from copart_hub import create_model
from copart_hub.data import collections
from copart_hub.data.provenance import SOURCES, card_facts
from copart_hub.losses.scops import (
    PartBasis,
    ScopsLossWeights,
    background_loss,
    equivariance_loss,
    orthonormality_loss,
    semantic_consistency_loss,
)
from copart_hub.models.backbone import TimmBackbone
from copart_hub.ops.coordinates import concentration_loss
from copart_hub.ops.warps import random_scops_tps
from copart_hub.processing import upsample_logits
from copart_hub.saliency import FOREGROUND_METHODS

from ..data import BackgroundCrops, add_foreground, image_rows, pil_tensor
from ..sampling import sample_rng
from .base import LR_SCHEDULES, OptimizerPair, Task, lr_scheduler, register_task

COLLECTIONS = {"faces300w": collections.faces300w, "weizmann_horse": collections.weizmann_horses}


class ScopsImages(Dataset):
    """Images and foreground maps at ``size``, randomly zoomed, shifted and mirrored.

    The zoom ``s ~ U(scale_range)`` (< 1 zooms out) and a shift that keeps the image centre
    inside the frame let objects appear anywhere, not only centred. With ``backgrounds``, a
    sample is, with probability ``paste_prob``, its foreground pasted (the map as alpha) onto
    a random crop of a random background image: the object in scenes it was not photographed
    in ("copy-paste" augmentation), so the foreground cannot be learnt from the scene.
    """

    def __init__(
        self,
        rows: datasets.Dataset,
        size: int,
        scale_range: tuple[float, float],
        seed: int,
        augment: bool = True,
        backgrounds: BackgroundCrops | None = None,
        paste_prob: float = 0.0,
    ) -> None:
        self.rows, self.size, self.scale_range = rows, size, scale_range
        self.seed, self.augment = seed, augment
        self.backgrounds, self.paste_prob = backgrounds, paste_prob

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, epoch = key
        row = self.rows[index]
        img = pil_tensor(row["image"].convert("RGB"))
        fg = pil_tensor(row["foreground"].convert("L"))
        img = F.interpolate(img[None], (self.size, self.size), mode="bilinear", antialias=True)
        fg = F.interpolate(fg[None], (self.size, self.size), mode="bilinear", antialias=True)
        if self.augment:
            rng = sample_rng(self.seed, epoch, index)
            s = rng.uniform(*self.scale_range)
            flip = -1.0 if rng.random() < 0.5 else 1.0
            reach = abs(1 - s)  # the image centre stays in the frame
            tx, ty = rng.uniform(-reach, reach, size=2)
            theta = torch.tensor([[[flip / s, 0, -tx / s], [0, 1 / s, -ty / s]]], dtype=img.dtype)
            grid = F.affine_grid(theta, list(img.shape), align_corners=False)
            img = F.grid_sample(img, grid, padding_mode="border", align_corners=False)
            fg = F.grid_sample(fg, grid, padding_mode="zeros", align_corners=False)
            if self.backgrounds is not None and rng.random() < self.paste_prob:
                alpha = fg.clamp(0, 1)
                img = alpha * img + (1 - alpha) * self.backgrounds(rng)
        return {"image": img[0].clamp(0, 1), "foreground": fg[0].clamp(0, 1)}


def colour_texture_features(image: Tensor) -> Tensor:
    """Fixed non-negative descriptors ``[B, 12, H, W]`` of RGB in [0, 1] at two scales (Gaussian
    sigma 1 and 4 px): lightness ``L / 100``, opponent chroma as four half-wave channels
    ``relu(+-a) / 50``, ``relu(+-b) / 50`` (so a non-negative basis can express any hue), and the
    Sobel gradient energy of L."""
    lab = rgb_to_lab(image)
    chroma = lab[:, 1:] / 50
    lab = torch.cat([lab[:, :1] / 100, F.relu(chroma), F.relu(-chroma)], 1)
    feats = []
    for sigma in (1.0, 4.0):
        k = 2 * round(3 * sigma) + 1
        blurred = gaussian_blur2d(lab, (k, k), (sigma, sigma))
        feats += [blurred, (sobel(blurred[:, :1]) * 4).clamp(0, 1)]
    return torch.cat(feats, 1)


def unit_energy(features: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each channel of ``[B, C, H, W]`` to unit mean square over the batch and pixels, so
    that the semantic-consistency weight means the same for any reference source."""
    rms = features.pow(2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
    return features / (rms + eps)


def _soft_bins(x: Tensor, bins: int, low: float, high: float) -> Tensor:
    """``[B, 1, H, W]`` values -> ``[B, bins, H, W]`` triangular soft assignment (sums to 1)."""
    centres = torch.linspace(low, high, bins, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    width = (high - low) / (bins - 1)
    return (1 - (x - centres).abs() / width).clamp_min(0)


def histogram_features(image: Tensor) -> Tensor:
    """Fixed non-negative local histograms ``[B, 52, H, W]`` of RGB in [0, 1]: L, a, b (6 soft
    bins each) and gradient orientation (8 bins, weighted by gradient magnitude), each pooled
    with Gaussian windows of sigma 2 and 6 px."""
    lab = rgb_to_lab(image)
    colour = torch.cat(
        [
            _soft_bins(lab[:, :1], 6, 0.0, 100.0),
            _soft_bins(lab[:, 1:2].clamp(-60, 60), 6, -60.0, 60.0),
            _soft_bins(lab[:, 2:3].clamp(-60, 60), 6, -60.0, 60.0),
        ],
        1,
    )
    grad = spatial_gradient(lab[:, :1] / 100)[:, 0]  # [B, 2, H, W]
    magnitude = grad.norm(dim=1, keepdim=True)
    angle = torch.atan2(grad[:, 1:2], grad[:, :1]) % torch.pi  # unsigned orientation
    bins = 8
    centres = torch.arange(bins, device=image.device, dtype=image.dtype).view(1, -1, 1, 1)
    dist = (angle * bins / torch.pi - centres).abs()
    dist = torch.minimum(dist, bins - dist)  # circular
    orientation = (1 - dist).clamp_min(0) * (magnitude * 10).clamp(max=1)
    feats = []
    for sigma in (2.0, 6.0):
        k = 2 * round(3 * sigma) + 1
        feats.append(gaussian_blur2d(torch.cat([colour, orientation], 1), (k, k), (sigma, sigma)))
    return torch.cat(feats, 1)


def object_frame_position_features(
    foreground: Tensor, grid: int = 5, reach: float = 1.5, oriented: bool = False
) -> Tensor:
    """Fixed non-negative position descriptors ``[B, grid * grid, H, W]`` of a foreground map
    ``[B, 1, H, W]`` in [0, 1]: Gaussian bumps on a ``grid x grid`` lattice over
    ``[-reach, reach]^2`` of coordinates ``(p - centroid) / spread``, where the centroid and the
    spread (root mean squared distance to it) are the foreground-weighted moments (the whole
    frame where the foreground is empty). They translate and scale with the object.

    ``oriented``: the x axis is turned towards the end whose side is higher (the sign of the
    foreground's x-y covariance), so a mirrored object gets mirrored descriptors: a raised
    head is at +x whichever way a side-viewed animal faces."""
    b, _, h, w = foreground.shape
    ys = torch.linspace(-1, 1, h, device=foreground.device, dtype=foreground.dtype)
    xs = torch.linspace(-1, 1, w, device=foreground.device, dtype=foreground.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    weight = foreground.flatten(1) + 1e-6  # empty map: the whole frame, uniformly
    weight = weight / weight.sum(1, keepdim=True)
    coords = torch.stack([xx.flatten(), yy.flatten()], 1)  # [HW, 2]
    centre = weight @ coords  # [B, 2]
    offset = coords[None] - centre[:, None]  # [B, HW, 2]
    spread = (weight[..., None] * offset.pow(2)).sum((1, 2)).sqrt().clamp_min(1e-3)
    u = offset / spread[:, None, None]  # [B, HW, 2]
    if oriented:  # image y points down: covariance > 0 when the left end is the higher one
        covariance = (weight * offset[..., 0] * offset[..., 1]).sum(1)
        facing = torch.where(covariance > 0, -1.0, 1.0).to(u.dtype)
        u = torch.stack([u[..., 0] * facing[:, None], u[..., 1]], -1)
    centres = torch.linspace(-reach, reach, grid, device=u.device, dtype=u.dtype)
    sigma = 2 * reach / (grid - 1) * 0.6
    bump_x = torch.exp(-0.5 * ((u[..., :1] - centres) / sigma).pow(2))  # [B, HW, grid]
    bump_y = torch.exp(-0.5 * ((u[..., 1:] - centres) / sigma).pow(2))
    bumps = (bump_y[..., :, None] * bump_x[..., None, :]).flatten(2)  # [B, HW, grid * grid]
    return bumps.transpose(1, 2).reshape(b, grid * grid, h, w)


BASIS_KINDS = ("relu", "unit_rows")  # PartBasis: official free row norms, or one shared norm
# source -> channels
FIXED_REFERENCES = {"colour": 12, "histogram": 52, "position": 25, "oriented_position": 25}


def fixed_reference_features(sources: list[str], image01: Tensor, foreground: Tensor) -> Tensor:
    """The fixed descriptors of ``sources`` (names of ``FIXED_REFERENCES``), concatenated:
    ``[B, sum of their channels, H, W]``."""
    make = {
        "colour": lambda: colour_texture_features(image01),
        "histogram": lambda: histogram_features(image01),
        "position": lambda: object_frame_position_features(foreground),
        "oriented_position": lambda: object_frame_position_features(foreground, oriented=True),
    }
    return torch.cat([make[name]() for name in sources], 1)


class ScopsModule(nn.Module):
    """What is trained: the SCOPS model, its part basis and, for a network reference, a teacher:
    the model's moving average (``ema``, timm's ``ModelEmaV3``) or a frozen network."""

    def __init__(
        self, model: nn.Module, reference: str, ema_decay: float, basis: str = "relu"
    ) -> None:
        super().__init__()
        self.model = model
        self.reference = reference
        self.ema: ModelEmaV3 | None = None
        self.frozen: nn.Module | None = None
        self.fixed_sources = reference.split("+")
        if all(name in FIXED_REFERENCES for name in self.fixed_sources):
            channels = sum(FIXED_REFERENCES[name] for name in self.fixed_sources)
        elif reference == "ema":  # the whole segmenter; its forward_features are the targets
            self.ema = ModelEmaV3(model, decay=ema_decay).requires_grad_(False)
            # weights loaded into the model alone (init_from) restart the teacher from them; a
            # whole-module load (resume) loads the saved teacher after this hook has run
            model.register_load_state_dict_post_hook(lambda m, _: self.ema.set(m))
            probe = torch.zeros(1, 3, *model.input_size)
            channels = self.teacher.eval().forward_features(probe).shape[1]
        elif reference.startswith("model:"):  # bootstrap: a first model's features
            from copart_hub import from_pretrained

            self.frozen = from_pretrained(reference.split(":", 1)[1]).requires_grad_(False)
            if not hasattr(self.teacher, "forward_features"):
                raise ValueError(f"reference {reference!r} has no forward_features (not SCOPS)")
            probe = torch.zeros(1, 3, *model.input_size)
            channels = self.teacher.eval().forward_features(probe).shape[1]
        elif reference.startswith("timm:"):
            _, name, weights = reference.split(":", 2)
            self.frozen = TimmBackbone(name, (-1,), weights).requires_grad_(False).eval()
            channels = self.teacher.channels[0]
        else:
            raise ValueError(
                f"unknown reference {reference!r}: colour, histogram, position, oriented_position "
                "(or fixed sources joined by '+', e.g. histogram+position), ema, model:CHECKPOINT "
                "or timm:NAME:FILE"
            )
        if basis not in BASIS_KINDS:
            raise ValueError(f"basis must be one of {BASIS_KINDS}, got {basis!r}")
        self.basis = PartBasis(model.num_parts, channels, unit_rows=basis == "unit_rows")
        self._register_load_state_dict_pre_hook(self._rename_old_teacher_keys)

    def _rename_old_teacher_keys(self, state_dict: dict[str, Tensor], prefix: str, *_: Any) -> None:
        """Checkpoints written before the teacher moved to ``ema.module`` / ``frozen`` kept it
        under ``teacher.``: rename those keys so the runs still resume."""
        old = prefix + "teacher."
        new = prefix + ("ema.module." if self.ema is not None else "frozen.")
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[new + key[len(old) :]] = state_dict.pop(key)

    @property
    def teacher(self) -> nn.Module | None:
        """The network whose features are the targets (None for fixed references)."""
        return self.ema.module if self.ema is not None else self.frozen

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Part logits of a batch and the part basis ``W`` (so DDP sees every trained parameter
        used by the outputs)."""
        return self.model(x), self.basis()

    @torch.no_grad()
    def reference_features(
        self,
        image01: Tensor,
        normalised: Tensor,
        size: tuple[int, int] | None = None,
        foreground: Tensor | None = None,
    ) -> Tensor:
        """``[B, C, h, w]`` reference features; a teacher's are upsampled straight to ``size``
        (default: the image size), fixed descriptors come at the image size. ``foreground``
        ``[B, 1, H, W]`` places the object frame of ``position`` (default: the whole image)."""
        size = size or tuple(image01.shape[-2:])
        if self.teacher is None:
            if foreground is None:
                foreground = torch.ones_like(image01[:, :1])
            return fixed_reference_features(self.fixed_sources, image01, foreground)
        self.teacher.eval()
        if self.reference == "ema":
            feats = self.teacher.forward_features(normalised)
        elif self.reference.startswith("model:"):  # in the teacher's own normalisation
            mean = torch.tensor(self.teacher.image_mean, device=image01.device).view(1, 3, 1, 1)
            std = torch.tensor(self.teacher.image_std, device=image01.device).view(1, 3, 1, 1)
            feats = self.teacher.forward_features((image01 - mean) / std)
        else:
            mean = torch.tensor(self.teacher.mean, device=image01.device).view(1, 3, 1, 1)
            std = torch.tensor(self.teacher.std, device=image01.device).view(1, 3, 1, 1)
            feats = self.teacher((image01 - mean) / std)[0]
        return F.interpolate(F.relu(feats), size=size, mode="bilinear", align_corners=False)

    def update_teacher(self) -> None:
        """Move the ``ema`` teacher towards the model (weights and statistics); a frozen
        teacher never changes."""
        if self.ema is not None:
            self.ema.update(self.model)


@register_task("scops")
class ScopsTask(Task):
    """Args (``task_args``): see ``defaults``; loss weights default to the official JSON."""

    defaults: ClassVar[dict[str, Any]] = {
        "model": "scops_resnet18",
        "model_kwargs": {},
        "collection": "faces300w",  # or weizmann_horse, or a folder of images (data_dir)
        "data_dir": None,
        "mask_dir": None,
        "data_root": None,
        "size": 128,
        "scale_range": [0.6, 1.1],
        "saliency": "grabcut",
        # copy-paste: the foreground onto crops of these images ("bsds500": its train split,
        # else a folder of images, recursive) with probability paste_prob; None = never
        "paste_backgrounds": None,
        "paste_prob": 0.5,
        "reference": "colour",
        "reference_norm": "unit_energy",  # or "none" (raw feature scale, as the official code)
        # "relu" (official: free row norms) or "unit_rows" (one shared norm: PartBasis)
        "basis": "relu",
        "loss_size": None,  # side of the maps the losses see; None = the input size (official)
        "ema_decay": 0.999,
        "lr": 1e-4,
        "lr_schedule": "constant",  # "cosine" (lr to 0 over max_steps), "constant_cosine"
        "lr_anneal_fraction": 0.1,  # constant_cosine: the cosine over this last part of the steps
        "basis_lr": 0.01,
        "weights": {},
        "val_fit_images": 400,
        "val_dataset": None,  # default: faces300w-zoomshift for faces, else the collection
    }

    def __init__(self, args: dict[str, Any], seed: int) -> None:
        unknown = set(args) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown scops task_args: {sorted(unknown)}")
        super().__init__({**self.defaults, **args}, seed)
        choices = (*FOREGROUND_METHODS, "masks", "none")
        if self.args["saliency"] not in choices:
            raise ValueError(f"saliency must be one of {choices}, got {self.args['saliency']!r}")
        norm = self.args["reference_norm"]
        if norm not in ("unit_energy", "none"):
            raise ValueError(f"reference_norm must be 'unit_energy' or 'none', got {norm!r}")
        self.check_args("positive_int", "size", "val_fit_images", "loss_size")
        self.check_args("positive", "lr", "basis_lr")
        self.check_args("fraction", "ema_decay")
        self.check_paste_args()
        self.check_args("range", "scale_range")
        self.check_args("folder", "data_dir", "mask_dir")
        self.check_choice("basis", BASIS_KINDS)
        self.check_choice("lr_schedule", LR_SCHEDULES)
        self.check_args("fraction", "lr_anneal_fraction")
        if not self.args["data_dir"]:
            self.check_choice("collection", COLLECTIONS)
        paste = self.args["paste_backgrounds"]
        if paste and self.args["saliency"] == "none":
            raise ValueError("paste_backgrounds needs a foreground to paste: saliency is 'none'")
        self.check_keys("weights", ScopsLossWeights.__dataclass_fields__)
        self.weights = ScopsLossWeights(**self.args["weights"])
        self.jitter = v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.2)

    # ----------------------------------------------------------------- data
    def _train_rows(self) -> datasets.Dataset:
        """The training images: every image under ``data_dir`` (recursive), or the collection's
        train split. A user folder has no annotations, so no held-out scores (``validate``
        -> {})."""
        a = self.args
        if a["data_dir"]:
            return image_rows(data_dir=a["data_dir"])
        return image_rows(paths=COLLECTIONS[a["collection"]]("train", a["data_root"]).images)

    def build_model(self) -> nn.Module:
        a = self.args
        kwargs = {"input_size": (a["size"], a["size"]), **a["model_kwargs"]}
        model = create_model(a["model"], **kwargs)
        self.num_parts = model.num_parts
        return ScopsModule(model, a["reference"], a["ema_decay"], a["basis"])

    def release_model(self, module: nn.Module) -> nn.Module:
        return module.model

    def train_dataset(self) -> Dataset:
        a = self.args
        rows = add_foreground(self._train_rows(), a["saliency"], a["mask_dir"])
        backgrounds = self.background_crops()
        scale = tuple(a["scale_range"])
        return ScopsImages(rows, a["size"], scale, self.seed, True, backgrounds, a["paste_prob"])

    def build_optimizers(self, module: nn.Module, max_steps: int) -> list[OptimizerPair]:
        """Adam for the network (from scratch; the official SGD 1e-5/1e-4 fine-tunes an ImageNet
        ResNet) and the official SGD for the basis. Clip gradients (``clip_grad_norm``, 5 in the
        configs): an unclipped first basis step with the 1e4 weight kills rows of ReLU(w).
        ``lr_schedule`` may decay the network's lr (:func:`~.base.lr_scheduler`)."""
        model_opt = torch.optim.Adam(module.model.parameters(), lr=self.args["lr"])
        basis_opt = torch.optim.SGD(
            module.basis.parameters(), lr=self.args["basis_lr"], momentum=0.9, weight_decay=5e-4
        )
        a = self.args
        schedule = lr_scheduler(model_opt, a["lr_schedule"], max_steps, a["lr_anneal_fraction"])
        return [(model_opt, schedule), (basis_opt, None)]

    # ----------------------------------------------------------------- losses
    def _normalise(self, model: nn.Module, image01: Tensor) -> Tensor:
        mean = torch.tensor(model.image_mean, device=image01.device).view(1, 3, 1, 1)
        std = torch.tensor(model.image_std, device=image01.device).view(1, 3, 1, 1)
        return (image01 - mean) / std

    def training_step(
        self, module: nn.Module, batch: dict[str, Tensor], step: int
    ) -> tuple[Tensor, dict[str, float]]:
        inner = module.module if hasattr(module, "module") else module  # DDP wrapper
        model = inner.model
        image, fg = batch["image"], batch["foreground"]
        size = image.shape[-2:]
        if self.args["loss_size"]:
            size = (int(self.args["loss_size"]),) * 2
        x = self._normalise(model, image)
        warp = random_scops_tps(image.shape[0], device=image.device, dtype=image.dtype)
        jittered = torch.stack([self.jitter(im) for im in image])  # colour: warped branch only
        # warped in normalised space: the frame is padded with the mean colour, not black
        x_t = warp.warp(self._normalise(model, jittered), padding_mode="zeros")
        both, basis = module(torch.cat([x, x_t]))  # one forward: DDP-safe
        both = upsample_logits(both, size)  # as PartSegmenter does
        logits, logits_t = both.chunk(2)
        probs = logits.softmax(1)
        kl, centre_mse = equivariance_loss(logits, logits_t, warp)
        ref = inner.reference_features(image, x, size, fg)
        if ref.shape[-2:] != size:
            ref = F.interpolate(ref, size=size, mode="area")
        if self.args["reference_norm"] == "unit_energy":
            ref = unit_energy(ref)
        if fg.shape[-2:] != size:
            fg = F.interpolate(fg, size=size, mode="area")
        terms = {
            "concentration": concentration_loss(probs[:, 1:]),
            "equivariance": kl,
            "landmark_equivariance": centre_mse,
            "semantic_consistency": semantic_consistency_loss(probs[:, 1:], ref, basis, fg),
            "orthonormality": orthonormality_loss(basis),
        }
        if self.weights.background:
            terms["background"] = background_loss(probs, fg)
        loss = self.weights.total(terms)
        inner.update_teacher()
        return loss, {k: v.item() for k, v in terms.items()}

    # ----------------------------------------------------------------- validation
    def _val_collection(self):
        a = self.args
        if a["data_dir"]:
            return None
        return COLLECTIONS[a["collection"]]("val", a["data_root"])

    @torch.no_grad()
    def validate(self, model: nn.Module) -> dict[str, float]:
        """The held-out protocol (``copart-hub eval parts``) of ``val_dataset``, by default of the
        collection (none for a user folder): landmark error (% IOD) for faces, foreground IoU for
        horses and Tai-Chi."""
        from copart_hub.evaluation.parts import evaluate

        a = self.args
        dataset = a["val_dataset"]
        if dataset is None and not a["data_dir"]:
            dataset = "faces300w-zoomshift" if a["collection"] == "faces300w" else a["collection"]
        if dataset is None:
            return {}
        scores = evaluate(model, dataset, a["data_root"], a["val_fit_images"])
        key = "fg_iou" if "fg_iou" in scores else "landmark_error_iod_pct"
        return {**scores, "score": scores[key] if key == "fg_iou" else -scores[key]}

    @torch.no_grad()
    def write_samples(self, model: nn.Module, path: Path) -> None:
        from copart_hub.pipelines import PartSegmenter
        from copart_hub.visualize import contact_sheet

        val = self._val_collection()  # held-out images; a user folder shows training images
        rows = None if val is not None else self._train_rows()
        count = len(val.images) if val is not None else len(rows)
        pick = np.linspace(0, count - 1, min(16, count)).astype(int)
        images = [
            val.load_image(i) if val is not None else rows[int(i)]["image"].convert("RGB")
            for i in pick
        ]
        seg = PartSegmenter(model, device=next(model.parameters()).device)
        contact_sheet([r.overlay for r in seg(images)], cols=8, cell_size=128).save(path)

    def card_info(self) -> dict[str, Any]:
        a = self.args
        backgrounds = self.paste_sources()
        if a["data_dir"]:
            facts: dict[str, Any] = {"data": str(a["data_dir"]), "data_licence": "the user's data"}
            for source in (SOURCES[b] for b in backgrounds):
                facts["data"] += f"; {source.description}"
                facts["data_licence"] += f"; {source.terms}"
        else:
            facts = card_facts(a["collection"], *backgrounds)
        return {
            **facts,
            "method": "SCOPS: Self-supervised Co-Part Segmentation (Hung et al., CVPR 2019)",
            "paper": "https://arxiv.org/abs/1905.01298",
            "data_source": None if a["data_dir"] else [a["collection"], *backgrounds],
            "num_parts": getattr(self, "num_parts", None),
            "reference_features": a["reference"],
            "tags": ["scops", "part-segmentation"],
        }
