"""Part-swap examples of a released MCS model for its card's ``swap_examples.png``.

``python model_cards/make_mcs_swap_examples.py [--model mcs_taichi] [--on videos]
[--correspondence dve_faces300w] [OUT]`` (default OUT ``runs/swaps``), from the repository root:

- ``--on videos``: the shared videos at their native sizes (``OUT/{taichi,ted,talking_face}
  _{render}.mp4``), source | target frame | swapped frame of each render per row;
- ``--on faces``: four pairs of held-out 300-W faces (never used for training), source |
  target | swapped by each render per row.

The swapped parts are the target's two largest parts; the renders are ``generator`` (the
paper's re-drawing) then ``pixels`` (the source's pixels warped by the part motion); with
``--correspondence`` (a dense descriptor model) both again with the part motion fitted on its
matches (``PartSwapper(correspondence=)``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from copart_hub.data import collections
from copart_hub.data.paths import shared_data_root
from copart_hub.data.videos import read_video
from copart_hub.evaluation.swaps import largest_parts
from copart_hub.part_swap import RENDERS, PartSwapper
from copart_hub.pipelines import PartSegmenter
from copart_hub.visualize import contact_sheet


def video_tiles(swappers: list[PartSwapper], seg: PartSegmenter, root: Path, out: Path) -> list:
    src_taichi = out / "clip13_frame0.png"
    Image.fromarray(read_video(root / "taichi/videos/clip_13.mp4")[0][0]).save(src_taichi)
    jobs = [
        ("taichi", src_taichi, root / "taichi/videos/clip_12.mp4"),
        ("ted", root / "ted/source.png", root / "ted/driving.mp4"),
        (
            "talking_face",
            root / "talking_face/tpsmm_source.png",
            root / "talking_face/tpsmm_driving.mp4",
        ),
    ]
    tiles = []
    for name, source, target in jobs:
        frames, fps = read_video(target)
        parts = largest_parts(seg, Image.fromarray(frames[0]))
        mid = len(frames) // 2
        tiles += [Image.open(source).convert("RGB"), Image.fromarray(frames[mid])]
        for swapper in swappers:
            t = time.time()
            path = out / f"{name}_{swapper.render}.mp4"
            swapper.swap_video(source, target, parts, path, progress=False)
            result, rfps = read_video(path)
            print(
                f"{name} ({swapper.render}): {target.name} {frames.shape[2]}x{frames.shape[1]} "
                f"{len(frames)} frames {fps:g} fps -> {path} {result.shape[2]}x{result.shape[1]} "
                f"{len(result)} frames {rfps:g} fps, parts {parts}, {time.time() - t:.1f} s"
            )
            tiles.append(Image.fromarray(result[mid]))
    return tiles


def face_tiles(swappers: list[PartSwapper], seg: PartSegmenter, root: Path) -> list:
    val = collections.faces300w("val", root)
    picks = np.linspace(0, len(val.images) - 1, 8).astype(int)
    tiles = []
    for s, t in zip(picks[0::2], picks[1::2], strict=True):
        source, target = val.load_image(int(s)), val.load_image(int(t))
        parts = largest_parts(seg, target)
        print(f"faces: {val.images[s].name} -> {val.images[t].name}, parts {parts}")
        tiles += [source, target] + [sw.swap_image(source, target, parts) for sw in swappers]
    return tiles


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=Path("runs/swaps"))
    p.add_argument("--model", default="mcs_taichi")
    p.add_argument("--on", choices=("videos", "faces"), default="videos")
    p.add_argument("--correspondence", help="a dense descriptor model: also swap with its motion")
    args = p.parse_args()
    root = shared_data_root()
    if root is None:
        raise SystemExit("../shared/data is not available")
    args.out.mkdir(parents=True, exist_ok=True)
    swappers = [PartSwapper(args.model, device="cpu", render=r) for r in RENDERS]
    if args.correspondence:
        swappers += [
            PartSwapper(args.model, device="cpu", render=r, correspondence=args.correspondence)
            for r in RENDERS
        ]
    seg = PartSegmenter(swappers[0].model, device="cpu")
    if args.on == "videos":
        tiles = video_tiles(swappers, seg, root, args.out)
    else:
        tiles = face_tiles(swappers, seg, root)
    cols = 2 + len(swappers)
    contact_sheet(tiles, cols=cols, cell_size=200).save(args.out / "swap_examples.png")
    print(f"wrote {args.out / 'swap_examples.png'}")


if __name__ == "__main__":
    main()
