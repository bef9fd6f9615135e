"""Training collections as Hugging Face ``datasets`` (cached Arrow tables)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from copart_hub.data import bsds500


def bsds500_dataset(
    split: str, root: str | Path | None = None, cache_dir: str | None = None
) -> datasets.Dataset:
    """BSDS500 ``split`` with one row per image: ``id``, ``image`` and every annotator's
    ``segmentations`` (16-bit PNG images)."""
    root = bsds500.bsds500_root(root)

    def rows():
        for image_id in bsds500.list_ids(root, split):
            segs = bsds500.load_segmentations(root, split, image_id)
            yield {
                "id": image_id,
                "image": Image.fromarray(bsds500.load_image(root, split, image_id)),
                "segmentations": [Image.fromarray(s.astype(np.uint16)) for s in segs],
            }

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "segmentations": datasets.List(datasets.Image()),
        }
    )
    tag = hashlib.md5(str(root.resolve()).encode()).hexdigest()[:8]
    return datasets.Dataset.from_generator(
        rows, features=features, cache_dir=cache_dir, config_name=f"bsds500-{split}-{tag}"
    )
