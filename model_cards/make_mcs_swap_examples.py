"""Part swap on the shared videos at their native sizes with the released ``mcs_taichi``.

Writes ``OUT/{taichi,ted,talking_face}_swap.mp4`` and the card's ``swap_examples.png``. Run from
the repository root: ``python model_cards/make_mcs_swap_examples.py [OUT]`` (default
``runs/swaps``).
"""

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from copart_hub.data.paths import shared_data_root
from copart_hub.data.videos import read_video
from copart_hub.part_swap import PartSwapper
from copart_hub.pipelines import PartSegmenter
from copart_hub.visualize import contact_sheet

root = shared_data_root()
out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/swaps")
out.mkdir(parents=True, exist_ok=True)
swapper = PartSwapper("mcs_taichi", device="cpu")
seg = PartSegmenter(swapper.model, device="cpu")
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
    areas = seg(Image.fromarray(frames[0])).areas
    parts = [int(k) + 1 for k in np.argsort(areas)[::-1][:2]]  # the two largest parts
    t = time.time()
    path = swapper.swap_video(source, target, parts, out / f"{name}_swap.mp4", progress=False)
    result, rfps = read_video(path)
    print(
        f"{name}: {target.name} {frames.shape[2]}x{frames.shape[1]} {len(frames)} frames "
        f"{fps:g} fps -> {path} {result.shape[2]}x{result.shape[1]} {len(result)} frames "
        f"{rfps:g} fps, parts {parts}, {time.time() - t:.1f} s"
    )
    mid = len(frames) // 2
    tiles += [Image.open(source).convert("RGB")]
    tiles += [Image.fromarray(frames[mid]), Image.fromarray(result[mid])]
contact_sheet(tiles, cols=3, cell_size=200).save(out / "swap_examples.png")
