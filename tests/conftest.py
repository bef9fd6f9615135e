"""Shared test fixtures: tiny models and tiny images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

import copart_hub
from copart_hub.hub.registry import register_architecture
from copart_hub.models.mcs import MCSModel
from copart_hub.models.part_base import PartModel


@register_architecture("test_tiny_parts")
class TinyPartModel(PartModel):
    """1x1 conv to K+1 logits, returned at half the input resolution (for pipeline tests)."""

    def __init__(self, num_parts: int = 3, height: int = 16, width: int = 20) -> None:
        super().__init__()
        self.num_parts = num_parts
        self.input_size = (height, width)
        self.image_mean = (0.5, 0.5, 0.5)
        self.image_std = (0.5, 0.5, 0.5)
        self.head = nn.Conv2d(3, num_parts + 1, 1)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return F.avg_pool2d(self.head(pixel_values), 2, ceil_mode=True)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (tiny shapes: threads only add overhead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_part_model() -> TinyPartModel:
    torch.manual_seed(0)
    return TinyPartModel().eval()


@pytest.fixture
def red_part_model() -> TinyPartModel:
    """K=2, input 20x30: part 1 = red pixels, part 2 = blue pixels, background = the rest."""
    model = TinyPartModel(num_parts=2, height=20, width=30)
    with torch.no_grad():
        model.head.weight.zero_()
        # inputs are normalised to [-1, 1]: pure red/blue -> logit +20, black/white -> <= -20
        model.head.bias.copy_(torch.tensor([0.0, -40.0, -40.0]))
        model.head.weight[1, :, 0, 0] = torch.tensor([20.0, -20.0, -20.0])
        model.head.weight[2, :, 0, 0] = torch.tensor([-20.0, -20.0, 20.0])
    return model.eval()


@pytest.fixture
def tiny_part_checkpoint(tmp_path: Path, tiny_part_model: TinyPartModel) -> Path:
    """``tiny_part_model`` saved with ``save_pretrained``; returns the folder."""
    folder = tmp_path / "tiny_parts"
    tiny_part_model.save_pretrained(folder)
    return folder


@pytest.fixture
def rgb_array() -> np.ndarray:
    """A smooth, non-square ``uint8 [24, 32, 3]`` image with some structure."""
    ys, xs = np.mgrid[0:24, 0:32]
    img = np.stack([xs * 8, ys * 10, ((xs // 8 + ys // 6) % 2) * 200], axis=-1)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture
def image_file(tmp_path: Path, rgb_array: np.ndarray) -> Path:
    """``rgb_array`` saved as ``images/sample.png``."""
    path = tmp_path / "images" / "sample.png"
    path.parent.mkdir()
    Image.fromarray(rgb_array).save(path)
    return path


@pytest.fixture(scope="session")
def bsds_root() -> Path:
    """The real BSDS500 folder; tests using it skip with the reason when it is absent."""
    from copart_hub.data.bsds500 import bsds500_root

    try:
        return bsds500_root()
    except FileNotFoundError as err:
        pytest.skip(f"BSDS500 data not available ({err})")


def tiny_mcs() -> MCSModel:
    """An untrained MCS with K=3 at 64 px and narrow layers (seconds to build and run)."""
    torch.manual_seed(0)
    return copart_hub.create_model(
        "mcs_k10",
        num_parts=3,
        input_size=(64, 64),
        seg_block_expansion=8,
        seg_max_features=32,
        seg_num_blocks=3,
        gen_block_expansion=8,
        gen_max_features=32,
    ).eval()


@pytest.fixture(scope="session")
def tiny_mcs_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_mcs()`` saved with ``save_pretrained``; returns the folder."""
    path = tmp_path_factory.mktemp("mcs") / "tiny_mcs"
    tiny_mcs().save_pretrained(path)
    return path
