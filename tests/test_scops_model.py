"""SCOPS model in the common API: shapes, stride-8 logits, save/load, CLI segment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import copart_hub
from copart_hub.cli import main
from copart_hub.models import SCOPS


def test_logits_at_stride_8_with_background_channel():
    model = copart_hub.create_model("scops_resnet18", num_parts=5, input_size=(64, 64)).eval()
    assert isinstance(model, SCOPS)
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 6, 8, 8)
    w = model.classifier.branches[0].weight
    assert abs(float(w.detach().std()) - 0.01) < 0.003  # N(0, 0.01) init of the classifier


def test_cli_segment_with_a_scops_checkpoint(tmp_path: Path):
    model = copart_hub.create_model("scops_resnet18", num_parts=3, input_size=(32, 32))
    model.save_pretrained(tmp_path / "scops")
    image = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(
        image
    )
    out = tmp_path / "out"
    assert main(["segment", str(image), "--model", str(tmp_path / "scops"), "--out", str(out)]) == 0
    labels = np.asarray(Image.open(out / "face_labels.png"))
    assert labels.shape == (45, 61) and labels.max() <= 3
    summary = json.loads((out / "face.json").read_text())
    assert summary["num_parts"] == 3 and len(summary["centres"]) == 3
    assert (out / "face_overlay.png").is_file()
