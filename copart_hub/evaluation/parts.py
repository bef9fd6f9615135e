"""``copart-hub eval parts``: held-out part-segmentation scores with baselines in the same run.

Protocols (SPEC B1, B2b, B3), on the fixed held-out splits of :mod:`copart_hub.data.collections`:
- ``faces300w`` (and ``faces300w-zoomshift``: the same faces under a fixed random zoom in
  [0.6, 1] and shift, so faces appear anywhere and the mean shape is a weak predictor):
  landmark regression from part centres (5 points, affine least squares fitted
  on training-split faces, error in % of the inter-ocular distance), and NMI / ARI of the part
  labels under the 68 landmarks (full: background included; fg: landmarks on parts only);
- ``weizmann_horse``: foreground IoU (label != 0 vs the mask), per image, averaged;
- ``taichi`` (SPEC B4 on MediaPipe pseudo ground truth, every 10th frame; val = clips 12-13):
  foreground IoU against the person masks, and keypoint regression from part centres (one
  affine regressor per coordinate of the 33 keypoints, fitted on the training clips, sum of
  the per-coordinate MAEs in pixels at 256x256; undetected keypoints skipped).
Motion models on faces and Tai-Chi also get the re-drawing of held-out frames
(:mod:`.reconstruction`) and the sharpness of swaps between held-out images, for each render
(:mod:`.swaps`).
Baselines: the mean training shape (faces) or pose (Tai-Chi), the mean training mask
thresholded at 0.5 (horses, Tai-Chi), boundary saliency alone and refined by GrabCut (horses,
Tai-Chi), an untrained model of the same architecture, DFF (NMF of the model's own backbone
features; models with a timm backbone), and any ``--compare`` models. ``--refine SSN`` and
``--grabcut`` add rows for this model's foreground snapped to superpixels / refined by GrabCut.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import collections
from ..data.collections import Collection, ZoomShiftCollection, five_landmarks
from ..data.videos import taichi_clips, taichi_frames
from ..metrics.parts import (
    foreground_iou,
    foreground_scores,
    keypoint_mae,
    landmark_nmi_ari,
    landmark_regression_error,
    mean_pose_mae,
    mean_shape_error,
)
from ..saliency import boundary_connectivity_saliency, grabcut_foreground
from .reconstruction import reconstruction_scores, still_pairs
from .swaps import swap_scores, transfer_error

#: held-out (source, target) pairs whose swaps are scored for motion models
SWAP_PAIRS = 16

DATASETS = {
    "faces300w": collections.faces300w,
    "faces300w-zoomshift": lambda split, root=None: ZoomShiftCollection.of(
        collections.faces300w(split, root), seed=0 if split == "train" else 1
    ),
    "weizmann_horse": collections.weizmann_horses,
    "taichi": taichi_frames,
}
_LANDMARKS = (
    "landmark regression from part centres (5 landmarks, affine least squares fitted on the "
    "training split, error in % of the inter-ocular distance) and NMI / ARI of the "
    "part labels at the 68 landmarks (both x100)"
)
_SWAPS = (
    "part swaps between {pairs} (the target's two largest parts): their sharpness per render "
    "(gradient magnitude under the swap mask against the target photo's: 1 = as sharp; a swap "
    "that changes nothing also reads 1) and where they land ({landing}, against the crops "
    "mapped onto each other without motion: `_no_motion`)"
)
PROTOCOLS = {
    "faces300w": _LANDMARKS,
    "faces300w-zoomshift": _LANDMARKS + " on faces under a fixed random zoom in [0.6, 1] and shift",
    "weizmann_horse": "foreground IoU (label != 0 vs the mask), per image, averaged",
    "taichi": (
        "every 10th frame: foreground IoU against the MediaPipe person masks, and the sum over "
        "the 33 pose keypoints x 2 coordinates of the test MAE (pixels at 256x256) of affine "
        "regressors from part centres fitted on the training clips; for motion models, "
        "reconstruction of frames 30 apart (every 10th frame): L1, SSIM, sharpness (gradient "
        "energy against the real frames) and the copy-the-source baseline, and "
    )
    + _SWAPS.format(
        pairs="the two clips' frames",
        landing="mean distance of each detected target keypoint, carried into the source by "
        "the part motion, to the source's same keypoint, px",
    ),
}
#: what motion models add on faces (:func:`swap_evaluation`)
MOTION_FACES = (
    "; for motion models, the re-drawing of each held-out face from itself under a fixed "
    "random warp (L1, SSIM, sharpness, the copy-the-source baseline), and "
    + _SWAPS.format(
        pairs="held-out faces",
        landing="the 68 target landmarks carried into the source by the part motion, mean "
        "distance to the source's same landmarks in % of its inter-ocular distance",
    )
)


def landmarks_of(data: Collection) -> np.ndarray:
    """Landmarks in the frames the model sees."""
    if isinstance(data, ZoomShiftCollection):
        return data.moved_landmarks()
    return data.landmarks


def _segment(
    model: torch.nn.Module,
    data: Collection,
    index: Sequence[int],
    refine: str | None = None,
    grabcut: bool = False,
) -> list:
    from ..pipelines import PartSegmenter

    device = next(model.parameters()).device
    seg = PartSegmenter(model, device=device, refine=refine, grabcut=grabcut)
    return seg([data.load_image(i) for i in index])


def evaluate_landmarks(
    model: torch.nn.Module, fit: Collection, test: Collection, n_fit: int | None = None
) -> dict[str, float]:
    """Landmark error (% IOD) and NMI/ARI at the 68 landmarks on ``test``."""
    pick = np.arange(len(fit.images))
    if n_fit is not None and n_fit < len(pick):
        pick = np.linspace(0, len(pick) - 1, n_fit).astype(int)
    fit_res = _segment(model, fit, pick)
    test_res = _segment(model, test, range(len(test.images)))
    feats = [
        np.nan_to_num(np.stack([r.centres.reshape(-1) for r in res])) for res in (fit_res, test_res)
    ]
    fit_lm, test_lm = landmarks_of(fit)[pick], landmarks_of(test)
    scores = landmark_regression_error(
        feats[0], five_landmarks(fit_lm), feats[1], five_landmarks(test_lm)
    )
    labels = np.stack([r.labels for r in test_res])
    return {**scores, **landmark_nmi_ari(labels, test_lm)}


def evaluate_foreground(
    model: torch.nn.Module, test: Collection, refine: str | None = None, grabcut: bool = False
) -> dict[str, float]:
    """Foreground IoU (``fg_iou``), precision and recall (``fg_precision``, ``fg_recall``),
    each averaged over images, optionally after SSN snapping and/or GrabCut refinement."""
    results = _segment(model, test, range(len(test.images)), refine, grabcut)
    scores = [foreground_scores(r.labels, test.load_mask(i)) for i, r in enumerate(results)]
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}


def mean_mask_iou(fit: Collection, test: Collection, size: int = 128) -> float:
    """IoU of the mean training mask (resized per image, thresholded at 0.5)."""
    masks = [
        np.asarray(Image.fromarray(fit.load_mask(i)).resize((size, size)))
        for i in range(len(fit.images))
    ]
    prior = np.mean(masks, 0) >= 0.5
    ious = []
    for i in range(len(test.images)):
        gt = test.load_mask(i)
        pred = np.asarray(Image.fromarray(prior).resize(gt.shape[::-1]))
        ious.append(foreground_iou(pred.astype(int), gt))
    return float(np.mean(ious))


def saliency_ious(test: Collection) -> dict[str, float]:
    """Foreground IoU of boundary saliency > 0.5 (``boundary``) and of that saliency refined by
    GrabCut (``grabcut``); the saliency is computed once per image for both."""
    ious: dict[str, list[float]] = {"boundary": [], "grabcut": []}
    for i in range(len(test.images)):
        image, mask = np.array(test.load_image(i)), test.load_mask(i)
        sal = boundary_connectivity_saliency(image)
        for method, fg in (("boundary", sal), ("grabcut", grabcut_foreground(image, sal))):
            ious[method].append(foreground_iou((fg > 0.5).astype(int), mask))
    return {method: float(np.mean(v)) for method, v in ious.items()}


def evaluate_keypoints(model: torch.nn.Module, fit: Any, test: Any) -> dict[str, float]:
    """Tai-Chi keypoint regression from part centres (``mae_sum``, ``mae_coords``)."""
    feats = [
        np.nan_to_num(np.stack([r.centres.reshape(-1) for r in _segment(model, d, range(n))]))
        for d, n in ((fit, len(fit.images)), (test, len(test.images)))
    ]
    return keypoint_mae(feats[0], fit.keypoints, feats[1], test.keypoints)


def evaluate(
    model: torch.nn.Module,
    dataset: str,
    root: str | Path | None = None,
    n_fit: int | None = None,
    refine: str | None = None,
    data: tuple[Any, Any] | None = None,
) -> dict[str, float]:
    """The dataset's protocol for one model (train split fits regressors, val is scored).

    ``refine`` (an SSN name/path) snaps part maps to superpixels; it applies to foreground IoU.
    ``data`` passes already loaded ``(fit, test)`` splits (they are loaded otherwise).
    """
    fit, test = data or (DATASETS[dataset]("train", root), DATASETS[dataset]("val", root))
    if test.landmarks is not None:
        scores = evaluate_landmarks(model, fit, test, n_fit)
        if hasattr(model, "generator"):  # a motion model: how it re-draws held-out faces
            clips = _still_val_pairs(dataset, root, tuple(model.input_size))
            scores.update(reconstruction_scores(model, clips, gap=1, every=1))
            scores.update(swap_evaluation(model, test))
        return scores
    scores = evaluate_foreground(model, test, refine)
    if dataset == "taichi":
        scores.update(evaluate_keypoints(model, fit, test))
        if hasattr(model, "generator"):  # a motion model: how it re-draws held-out frames
            scores.update(reconstruction_scores(model, _taichi_val_clips(root)))
            scores.update(swap_evaluation(model, test))
    return scores


def swap_pairs(n: int, count: int = SWAP_PAIRS) -> list[tuple[int, int]]:
    """``count`` held-out (source, target) index pairs among ``n`` images: image ``i`` of the
    first half with image ``i + n // 2`` (other faces; for Tai-Chi, the other clip), evenly
    spaced."""
    half = n // 2
    if half == 0:
        raise ValueError("swap pairs need at least two held-out images")
    pick = np.unique(np.linspace(0, half - 1, min(count, half)).astype(int))
    return [(int(i), int(i) + half) for i in pick]


def swap_evaluation(model: torch.nn.Module, test: Any) -> dict[str, float]:
    """Part swaps between held-out images (:mod:`.swaps`): their sharpness for each render,
    and where they land: ``swap_landmark_error_iod_pct`` (faces: the 68 landmarks, % of the
    source's inter-ocular distance) or ``swap_keypoint_error_px`` (Tai-Chi: the detected
    keypoints, pixels at 256x256), and the same for the crops mapped onto each other without
    motion (``..._no_motion``), the baseline a part motion must beat."""
    index = swap_pairs(len(test.images))
    images = {i: test.load_image(i) for pair in index for i in pair}
    pairs = [(images[s], images[t]) for s, t in index]
    scores = swap_scores(model, pairs)
    if test.landmarks is not None:
        points = [(test.landmarks[s], test.landmarks[t]) for s, t in index]
        eyes = five_landmarks(test.landmarks[[s for s, _ in index]])[:, :2]
        iod = np.linalg.norm(eyes[:, 0] - eyes[:, 1], axis=1)
        key, scale = "swap_landmark_error_iod_pct", iod / 100
    else:
        points = [(test.keypoints[s], test.keypoints[t]) for s, t in index]
        key, scale = "swap_keypoint_error_px", None
    scores[key] = transfer_error(model, pairs, points, scale)
    scores[key + "_no_motion"] = transfer_error(model, pairs, points, scale, motion=False)
    return scores


@functools.lru_cache(maxsize=2)
def _still_val_pairs(
    dataset: str, root: str | Path | None, size: tuple[int, int]
) -> tuple[np.ndarray, ...]:
    """:func:`still_pairs` of the dataset's held-out images, made once per dataset and size."""
    test = DATASETS[dataset]("val", root)
    return tuple(still_pairs([test.load_image(i) for i in range(len(test.images))], size))


@functools.lru_cache(maxsize=2)
def _taichi_val_clips(root: str | Path | None) -> tuple[np.ndarray, ...]:
    """The held-out Tai-Chi clips' frames (``uint8 [T, 256, 256, 3]`` each), decoded once."""
    return tuple(clip.frames() for clip in taichi_clips("val", root))


def untrained_like(model: torch.nn.Module) -> torch.nn.Module:
    """A randomly initialised model with the same configuration (same seed every time)."""
    cfg = dict(model.config)
    cfg.pop("architecture")
    torch.manual_seed(0)
    return type(model)(**cfg).eval()


def dff_baseline(model: torch.nn.Module, fit: Any) -> torch.nn.Module:
    """DFF with the model's own trained backbone (no ImageNet weights exist here), fitted on
    (up to 200) images of the training split ``fit``."""
    from ..models.dff import DFF
    from ..processing import image_to_tensor

    dff = DFF(
        backbone=model.config["backbone"],
        num_parts=model.num_parts,
        input_size=model.input_size,
        feature_index=-1,
    )
    dff.encoder.load_state_dict(model.encoder.state_dict())
    mean = torch.tensor(dff.image_mean).view(3, 1, 1)
    std = torch.tensor(dff.image_std).view(3, 1, 1)
    pick = np.linspace(0, len(fit.images) - 1, min(200, len(fit.images))).astype(int)
    batch = torch.stack(
        [(image_to_tensor(fit.load_image(i), dff.input_size) - mean) / std for i in pick]
    )
    return dff.eval().fit(batch.split(32))


def baseline_rows(
    model: torch.nn.Module,
    score: Callable[[torch.nn.Module], dict[str, float]],
    dataset: str,
    fit: Any,
    test: Any,
) -> dict[str, dict[str, float]]:
    """The rows a card shows beside the model: the same network untrained and DFF on its own
    backbone (each scored by ``score``, the model's protocol), and the data's priors (mean
    shape; or mean mask, mean pose and saliency)."""
    rows = {"untrained": score(untrained_like(model))}
    if "backbone" in model.config:
        rows["DFF (own backbone)"] = score(dff_baseline(model, fit))
    if test.landmarks is not None:
        err = mean_shape_error(
            five_landmarks(landmarks_of(fit)), five_landmarks(landmarks_of(test))
        )
        rows["mean shape"] = {"landmark_error_iod_pct": err}
        return rows
    rows["mean mask"] = {"fg_iou": mean_mask_iou(fit, test)}
    if dataset == "taichi":
        rows["mean pose"] = mean_pose_mae(fit.keypoints, test.keypoints)
    sal = saliency_ious(test)
    rows["boundary saliency > 0.5"] = {"fg_iou": sal["boundary"]}
    rows["boundary saliency + GrabCut"] = {"fg_iou": sal["grabcut"]}
    return rows


def format_rows(rows: dict[str, dict[str, float]]) -> str:
    metrics = sorted({k for r in rows.values() for k in r})
    lines = ["| model | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, r in rows.items():
        cells = [
            (f"{r[m]:.3f}" if abs(r[m]) < 1 else f"{r[m]:.2f}") if m in r else "" for m in metrics
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="copart-hub eval parts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="part model: folder, zoo name or Hub repo id")
    p.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    p.add_argument("--root", type=Path, help="data folder (default: the shared data)")
    p.add_argument("--n-fit", type=int, help="faces used to fit the regressor (default: all)")
    p.add_argument("--json", type=Path, help="also write the scores as JSON")
    p.add_argument(
        "--card",
        action="store_true",
        help="write the table into the model folder's README.md (section '### DATASET')",
    )
    p.add_argument(
        "--refine",
        metavar="SSN",
        help="also score with parts snapped to this SSN's superpixels (foreground IoU only)",
    )
    p.add_argument(
        "--grabcut",
        action="store_true",
        help="also score with the foreground refined by GrabCut (foreground IoU only)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="MODEL",
        help="more part models scored in the same run (e.g. SCOPS trained on the same frames)",
    )
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="score only the model (and --compare models): a quick check, not for a card",
    )
    args = p.parse_args(argv)
    from .. import from_pretrained

    if args.card and args.no_baselines:
        print(
            "copart-hub eval parts: error: --card writes the baselines beside the model; "
            "drop --no-baselines",
            file=sys.stderr,
        )
        return 2

    card = Path(args.model) / "README.md"
    if args.card and not card.is_file():
        print(
            f"copart-hub eval parts: error: --card needs a model folder with a README.md, "
            f"got {args.model}",
            file=sys.stderr,
        )
        return 2

    try:
        model = from_pretrained(args.model)
        data = DATASETS[args.dataset]("train", args.root), DATASETS[args.dataset]("val", args.root)
        fit, test = data

        def score(m: torch.nn.Module) -> dict[str, float]:
            return evaluate(m, args.dataset, args.root, args.n_fit, data=data)

        rows: dict[str, dict[str, Any]] = {"this model": score(model)}
        if test.landmarks is None:  # refinements change the foreground only
            if args.refine:
                rows[f"this model + {args.refine} snap"] = evaluate_foreground(
                    model, test, args.refine
                )
            if args.grabcut:
                rows["this model + GrabCut"] = evaluate_foreground(model, test, grabcut=True)
        for other in args.compare:
            rows[str(other)] = score(from_pretrained(other))
        if not args.no_baselines:
            rows.update(baseline_rows(model, score, args.dataset, fit, test))
    except (OSError, ValueError) as err:
        print(f"copart-hub eval parts: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: held-out split 'val' ({len(test.images)} images)")
    print(format_rows(rows))
    if args.json:
        args.json.write_text(json.dumps({"dataset": args.dataset, "rows": rows}, indent=2) + "\n")
    if args.card:
        _write_card(card, args, len(test.images), rows)
    return 0


def _write_card(card: Path, args: argparse.Namespace, n_test: int, rows: dict) -> None:
    """Put the table and the command that reproduces it under ``### DATASET`` in the card."""
    from ..hub.card import SCORES_HEADING, replace_card_section

    options = (
        "".join(
            f" --{name.replace('_', '-')} {value}"
            for name, value in (("n_fit", args.n_fit), ("refine", args.refine))
            if value is not None
        )
        + (" --grabcut" if args.grabcut else "")
        + (" --compare " + " ".join(args.compare) if args.compare else "")
    )
    protocol = PROTOCOLS[args.dataset]
    if args.dataset != "taichi" and "recon_l1" in rows["this model"]:
        protocol += MOTION_FACES
    body = (
        f"`{args.dataset}`, held-out split ({n_test} images never used to fit weights), "
        f"{protocol}. Baselines ran in the same run.\n\n"
        + format_rows(rows)
        + "\n\nReproduce with:\n\n```bash\ncopart-hub eval parts --model <this folder> "
        f"--dataset {args.dataset}{options}\n```"
    )
    replace_card_section(card, f"### {args.dataset}", body, parent=SCORES_HEADING)
    print(f"updated {card}")
