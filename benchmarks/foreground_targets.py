"""How good is the foreground a SCOPS model learns from, next to what the model itself finds?

Foreground IoU against the Weizmann masks on one split, per source: the saliency that the
``saliency`` task argument feeds the saliency constraint (read from the training cache), a
part model alone, and that model's foreground refined by GrabCut (a candidate self-training
target). Prints a Markdown table::

    python benchmarks/foreground_targets.py --model zoo/scops_horses --split train
"""

from __future__ import annotations

import argparse

import numpy as np
from copart_hub.training.data import add_foreground, image_rows
from PIL import Image

from copart_hub.data import collections
from copart_hub.metrics.parts import foreground_iou
from copart_hub.pipelines import PartSegmenter


def iou(foreground: np.ndarray, mask: np.ndarray) -> float:
    """IoU of a boolean map with a boolean mask (the map resized to the mask when they differ:
    some Weizmann masks are smaller than their images)."""
    if foreground.shape != mask.shape:
        small = Image.fromarray(foreground.astype(np.uint8) * 255).resize(mask.shape[::-1])
        foreground = np.asarray(small) > 127
    return foreground_iou(foreground, mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo/scops_horses")
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--saliency", default="grabcut", help="the training saliency source")
    args = parser.parse_args()

    horses = collections.weizmann_horses(args.split)
    masks = [horses.load_mask(i) for i in range(len(horses.images))]
    rows = add_foreground(image_rows(paths=horses.images), args.saliency, None)
    scores = {f"saliency ({args.saliency})": []}
    for row, mask in zip(rows, masks, strict=True):
        scores[f"saliency ({args.saliency})"].append(iou(np.asarray(row["foreground"]) > 127, mask))
    for grabcut in (False, True):
        name = f"{args.model}" + (" + GrabCut" if grabcut else " alone")
        segmenter = PartSegmenter(args.model, device="cpu", grabcut=grabcut)
        scores[name] = [
            iou(segmenter(Image.open(path).convert("RGB")).labels != 0, mask)
            for path, mask in zip(horses.images, masks, strict=True)
        ]
    print(f"Weizmann horses, {args.split} split ({len(masks)} images), foreground IoU\n")
    print("| source | mean | median | images below 0.3 |")
    print("|---|---:|---:|---:|")
    for name, values in scores.items():
        v = np.asarray(values)
        print(f"| {name} | {v.mean():.3f} | {np.median(v):.3f} | {(v < 0.3).sum()} |")


if __name__ == "__main__":
    main()
