"""How good is the foreground a SCOPS model learns from, next to what the model itself finds?

Foreground IoU, precision and recall against the Weizmann masks on one split, per source: the
saliency that the ``saliency`` task argument feeds the saliency constraint (read from the
training cache), a part model alone, and that model's foreground refined by GrabCut (a
candidate self-training target); and how closely the model alone reproduces the saliency
target (that target in place of the masks: near 1 on the training split means the model has
learnt its target there). Prints a Markdown table::

    python benchmarks/foreground_targets.py --model zoo/scops_horses --split train
"""

from __future__ import annotations

import argparse

import numpy as np
from copart_hub.training.data import add_foreground, image_rows
from PIL import Image

from copart_hub.data import collections
from copart_hub.metrics.parts import foreground_scores
from copart_hub.pipelines import PartSegmenter


def _as_mask_size(foreground: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A boolean map resized to the mask when they differ (some Weizmann masks are smaller than
    their images)."""
    if foreground.shape == mask.shape:
        return foreground
    small = Image.fromarray(foreground.astype(np.uint8) * 255).resize(mask.shape[::-1])
    return np.asarray(small) > 127


def scores(foreground: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """IoU, precision and recall of a boolean map against a boolean mask."""
    got = foreground_scores(foreground, mask)
    return got["fg_iou"], got["fg_precision"], got["fg_recall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo/scops_horses")
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--saliency", default="grabcut", help="the training saliency source")
    args = parser.parse_args()

    horses = collections.weizmann_horses(args.split)
    masks = [horses.load_mask(i) for i in range(len(horses.images))]
    rows = add_foreground(image_rows(paths=horses.images), args.saliency, None)
    targets = [
        _as_mask_size(np.asarray(row["foreground"]) > 127, mask)
        for row, mask in zip(rows, masks, strict=True)
    ]
    pairs = zip(targets, masks, strict=True)
    results = {f"saliency ({args.saliency})": [scores(t, m) for t, m in pairs]}
    found: dict[bool, list[np.ndarray]] = {}
    for grabcut in (False, True):
        name = f"{args.model}" + (" + GrabCut" if grabcut else " alone")
        segmenter = PartSegmenter(args.model, device="cpu", grabcut=grabcut)
        found[grabcut] = [
            _as_mask_size(segmenter(Image.open(path).convert("RGB")).labels != 0, mask)
            for path, mask in zip(horses.images, masks, strict=True)
        ]
        results[name] = [scores(f, m) for f, m in zip(found[grabcut], masks, strict=True)]
    alone = zip(found[False], targets, strict=True)
    results[f"{args.model} alone, against the saliency target"] = [scores(f, t) for f, t in alone]
    print(f"Weizmann horses, {args.split} split ({len(masks)} images), foreground\n")
    print("| source | IoU | median IoU | images below 0.3 | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in results.items():
        v = np.asarray(values)
        print(
            f"| {name} | {v[:, 0].mean():.3f} | {np.median(v[:, 0]):.3f} | "
            f"{(v[:, 0] < 0.3).sum()} | {v[:, 1].mean():.3f} | {v[:, 2].mean():.3f} |"
        )


if __name__ == "__main__":
    main()
