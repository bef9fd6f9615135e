"""BSDS500 superpixel evaluation (SSN protocol): ASA, BR, BP and CO against the actual count.

Every method is run on each image at each requested number of superpixels; the metrics are
computed on its final (connectivity-enforced) labels and averaged over every (image, annotator)
pair, the SEAL protocol used by SSN. skimage SLIC is evaluated in the same run as the baseline.

Command line (``copart-hub eval superpixels``)::

    copart-hub eval superpixels --model ssn_pix --counts 200 400 800 --limit 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..data.bsds500 import bsds500_root, list_ids, load_image, load_segmentations
from ..metrics.superpixels import superpixel_scores

SuperpixelMethod = Callable[[np.ndarray, int], np.ndarray]
"""``(image uint8 [H, W, 3], requested count) -> labels int [H, W]``."""

SLIC_COMPACTNESS = 10.0
PROTOCOL = (
    "ASA, BR and BP averaged over every (image, annotator) pair (SEAL protocol); CO (Schick) "
    "averaged over images; boundary pixel = right or bottom neighbour differs; BR/BP match "
    "within a (2r+1)x(2r+1) window (Chebyshev tolerance r); counts are actual segments after "
    "connectivity enforcement"
)


def slic_method(compactness: float = SLIC_COMPACTNESS) -> SuperpixelMethod:
    """skimage SLIC baseline (its own connectivity enforcement on, labels from 0)."""
    from skimage.segmentation import slic

    def run(image: np.ndarray, n: int) -> np.ndarray:
        return slic(image, n_segments=n, compactness=compactness, start_label=0)

    return run


def ssn_method(model: torch.nn.Module, device: str | torch.device = "cpu") -> SuperpixelMethod:
    """Wrap an SSN model: ``model.superpixels`` with its connectivity enforcement."""
    model = model.to(device).eval()

    def run(image: np.ndarray, n: int) -> np.ndarray:
        x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255
        return model.superpixels(x, n)[0]

    return run


def load_superpixel_model(name_or_path: str) -> torch.nn.Module:
    """An SSN from a checkpoint folder, zoo name or Hub repo id, or a parameter-free registered
    model (``ssn_pix``); see :func:`copart_hub.pipelines.load_model`.

    Raises ``FileNotFoundError`` / ``ValueError`` with a one-line message when it cannot load.
    """
    from ..models.ssn import SSN
    from ..pipelines import load_model

    model = load_model(name_or_path, device="cpu")
    if not isinstance(model, SSN):
        raise ValueError(f"{name_or_path!r} is a {type(model).__name__}, not a superpixel model")
    return model


def evaluate_superpixels(
    methods: Mapping[str, SuperpixelMethod],
    root: str | Path | None = None,
    split: str = "val",
    counts: Sequence[int] = (200, 400, 800),
    limit: int | None = None,
    tolerance: int = 1,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate superpixel methods on BSDS500.

    Each method is called once untimed on the first image (warm-up), then timed on every image
    and count. Returns one row per (method, requested count) with ``method``, ``requested``,
    ``n_images``, ``n_segments`` (mean actual count), ``asa``, ``br``, ``bp``, ``co`` and
    ``seconds`` (mean wall time per image, connectivity enforcement included).
    """
    if not methods:
        raise ValueError("no superpixel methods to evaluate")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    ids = list_ids(root, split)[:limit]
    if not ids:
        raise FileNotFoundError(f"BSDS500 split {split!r} has no images")
    keys = [(name, int(n)) for name in methods for n in counts]
    sums = {k: dict.fromkeys(("n_segments", "asa", "br", "bp", "co", "seconds"), 0.0) for k in keys}
    for i, image_id in enumerate(tqdm(ids, desc=f"bsds500/{split}", disable=not progress)):
        image = load_image(root, split, image_id)
        gts = load_segmentations(root, split, image_id)
        if i == 0:
            for method in methods.values():
                method(image, int(counts[0]))
        for name, n in keys:
            start = time.perf_counter()
            labels = np.asarray(methods[name](image, n))
            elapsed = time.perf_counter() - start
            acc = sums[(name, n)]
            for metric, value in superpixel_scores(labels, gts, tolerance).items():
                acc[metric] += value
            acc["seconds"] += elapsed
    return [
        {
            "method": name,
            "requested": n,
            "n_images": len(ids),
            **{metric: total / len(ids) for metric, total in sums[(name, n)].items()},
        }
        for name, n in keys
    ]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`evaluate_superpixels` rows."""
    lines = [
        "| method | requested | actual | ASA | BR | BP | CO | s / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['requested']} | {r['n_segments']:.1f} | {r['asa']:.4f} "
            f"| {r['br']:.4f} | {r['bp']:.4f} | {r['co']:.4f} | {r['seconds']:.3f} |"
        )
    return "\n".join(lines)


def matched_comparison(
    rows: Sequence[Mapping[str, Any]], reference: str = "skimage_slic"
) -> list[dict[str, Any]]:
    """Compare every method with ``reference`` at the reference's *actual* superpixel counts.

    A method's ASA / BR / BP / CO are linearly interpolated in log(actual count) between its
    own rows; reference counts outside a method's measured range are skipped.
    """
    ref = sorted((r for r in rows if r["method"] == reference), key=lambda r: r["n_segments"])
    out = []
    for name in dict.fromkeys(r["method"] for r in rows if r["method"] != reference):
        mine = sorted((r for r in rows if r["method"] == name), key=lambda r: r["n_segments"])
        logn = np.log([r["n_segments"] for r in mine])
        for r in ref:
            x = np.log(r["n_segments"])
            if len(mine) < 2 or not logn[0] <= x <= logn[-1]:
                continue
            row = {"method": name, "reference": reference, "n_segments": r["n_segments"]}
            for metric in ("asa", "br", "bp", "co"):
                row[metric] = float(np.interp(x, logn, [m[metric] for m in mine]))
                row[f"{reference}_{metric}"] = r[metric]
            out.append(row)
    return out


def format_matched(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`matched_comparison` rows."""
    if not rows:
        return "(no overlap between the actual counts of the methods: widen --counts)"
    ref = rows[0]["reference"]
    lines = [
        f"| method | actual count | ASA | {ref} ASA | BR | {ref} BR | BP | {ref} BP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['n_segments']:.1f} | {r['asa']:.4f} | {r[ref + '_asa']:.4f} "
            f"| {r['br']:.4f} | {r[ref + '_br']:.4f} | {r['bp']:.4f} | {r[ref + '_bp']:.4f} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="copart-hub eval superpixels",
        description="Evaluate superpixel models on BSDS500 (SSN protocol) against skimage SLIC.",
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME_OR_PATH",
        help="checkpoint folder, zoo name, Hub repo id, or ssn_pix (repeatable)",
    )
    p.add_argument("--root", type=Path, help="BSDS500 folder (default: shared data folder)")
    p.add_argument("--split", default="val", help="BSDS500 split (default: val)")
    p.add_argument("--counts", type=int, nargs="+", default=[200, 400, 800], metavar="K")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of the split")
    p.add_argument("--tolerance", type=int, default=1, help="BR/BP tolerance in pixels")
    p.add_argument("--device", default="cpu", help="torch device for the models (default: cpu)")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write rows and settings")
    p.add_argument(
        "--card",
        action="store_true",
        help="write the tables into the held-out section of each local model folder's README.md",
    )
    return p


def _write_cards(
    args: argparse.Namespace,
    settings: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    matched: Sequence[Mapping[str, Any]],
) -> None:
    """Put the evaluation (with the command that reproduces it) into local model cards."""
    from ..hub.card import SCORES_HEADING, replace_card_section

    counts = " ".join(str(n) for n in args.counts)
    limit = f" --limit {args.limit}" if args.limit else ""
    for name in args.model:
        card = Path(name) / "README.md"
        if not card.is_file():
            continue
        mine = [r for r in rows if r["method"] in (name, "skimage_slic")]
        body = (
            f"BSDS500 {args.split} ({settings['n_images']} images, never used to fit weights), "
            f"{PROTOCOL}; BR/BP tolerance {args.tolerance} px. skimage SLIC "
            f"(compactness {SLIC_COMPACTNESS}) was computed in the same run.\n\n"
            + format_table(mine).replace(str(name), "this model")
            + "\n\nAt equal actual superpixel count (interpolated in log count):\n\n"
            + format_matched([m for m in matched if m["method"] == name]).replace(
                str(name), "this model"
            )
            + "\n\nReproduce with:\n\n```bash\ncopart-hub eval superpixels --model "
            f"<this folder> --split {args.split} --counts {counts}{limit}\n```"
        )
        replace_card_section(card, SCORES_HEADING, body)
        print(f"updated {card}")


def main(argv: Sequence[str] | None = None) -> int:
    """``copart-hub eval superpixels``: print a markdown table, optionally write JSON."""
    args = _parser().parse_args(argv)
    try:
        if any(n < 1 for n in args.counts):
            raise ValueError(f"--counts must be positive, got {args.counts}")
        if args.tolerance < 0:
            raise ValueError(f"--tolerance must be >= 0, got {args.tolerance}")
        methods = {m: ssn_method(load_superpixel_model(m), args.device) for m in args.model}
        methods["skimage_slic"] = slic_method()
        root = bsds500_root(args.root)
        rows = evaluate_superpixels(
            methods, root, args.split, args.counts, args.limit, args.tolerance, progress=True
        )
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings = {
        "dataset": f"bsds500/{args.split}",
        "n_images": rows[0]["n_images"],
        "counts": args.counts,
        "tolerance": args.tolerance,
        "slic_compactness": SLIC_COMPACTNESS,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "protocol": PROTOCOL,
    }
    print(
        f"BSDS500 {args.split}, {settings['n_images']} images; BR/BP tolerance "
        f"{args.tolerance} px (Chebyshev); {PROTOCOL}."
    )
    print(format_table(rows))
    matched = matched_comparison(rows)
    print("\nAt equal actual superpixel count (interpolated in log count):")
    print(format_matched(matched))
    if args.card:
        _write_cards(args, settings, rows, matched)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": settings, "rows": rows, "matched": matched}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
