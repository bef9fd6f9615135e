"""The stride-32 encoder + FPN SCOPS model: shapes, gradients, errors, and the old architecture."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import copart_hub
from copart_hub.models.decoders import FPNDecoder
from copart_hub.models.scops import SCOPS, SCOPSFPN
from copart_hub.pipelines import PartSegmenter
from copart_hub.processing import upsample_logits


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (61, 45)])
def test_logits_at_stride_4_for_odd_sizes(size):
    model = copart_hub.create_model("scops_fpn_resnet18", num_parts=3, input_size=size).eval()
    logits = model(torch.randn(2, 3, *size))
    assert logits.shape == (2, 4, math.ceil(size[0] / 4), math.ceil(size[1] / 4))


def test_gradients_reach_every_parameter():
    model = copart_hub.create_model("scops_fpn_regnetx_002", num_parts=2, input_size=(32, 32))
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    # timm zero-initialises the last BN of each residual branch, so check where the signal enters
    for module in (model.decoder, model.classifier, model.encoder.body.stem):
        assert all(p.grad.abs().sum() > 0 for p in module.parameters())


def test_decoder_rejects_a_wrong_number_of_levels():
    decoder = FPNDecoder([8, 16], channels=4)
    with pytest.raises(ValueError, match="expected 2 feature levels"):
        decoder([torch.zeros(1, 8, 4, 4)])
    with pytest.raises(ValueError, match="need >= 1 level"):
        FPNDecoder([], channels=4)


def test_saved_config_is_checked_against_the_backbone(tmp_path):
    model = copart_hub.create_model("scops_fpn_resnet18", num_parts=2, input_size=(32, 32))
    assert model.config["feature_channels"] == [64, 128, 256, 512]
    with pytest.raises(ValueError, match="channels"):
        SCOPSFPN(num_parts=2, feature_channels=[1, 2, 3, 4])


#: config.json of the released dilated ResNet-18 checkpoints (scops_horses of 2026-11-22)
OLD_SCOPS_CONFIG = {
    "architecture": "scops",
    "aspp_rates": [3, 6, 9, 12],
    "backbone": "resnet18",
    "backbone_weights": None,
    "feature_channels": 512,
    "feature_reduction": 8,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "input_size": [256, 256],
    "num_parts": 4,
    "output_stride": 8,
}


def test_old_architecture_checkpoint_still_loads(tmp_path):
    """A folder as the old releases wrote it (their config.json, weights by state-dict name)
    loads with its weights, whatever the zoo holds now."""
    torch.manual_seed(0)
    kwargs = {k: v for k, v in OLD_SCOPS_CONFIG.items() if k != "architecture"}
    old = SCOPS(**{**kwargs, "input_size": (256, 256), "aspp_rates": (3, 6, 9, 12)}).eval()
    (tmp_path / "config.json").write_text(json.dumps(OLD_SCOPS_CONFIG))
    save_file(
        {k: v.contiguous() for k, v in old.state_dict().items()}, tmp_path / "model.safetensors"
    )
    model = copart_hub.from_pretrained(tmp_path)
    assert type(model) is SCOPS and model.config["feature_reduction"] == 8
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), old(x))
    assert model(x).shape == (1, 5, 8, 8)


def test_part_segmenter_upsamples_as_training_does():
    torch.manual_seed(0)
    model = copart_hub.create_model("scops_fpn_resnet18", num_parts=3, input_size=(32, 32))
    model.eval()
    image = torch.rand(3, 32, 32)
    out = PartSegmenter(model)(image)
    x = (image[None] - torch.tensor(model.image_mean).view(1, 3, 1, 1)) / torch.tensor(
        model.image_std
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = upsample_logits(model(x), (32, 32)).softmax(1)[0]
    torch.testing.assert_close(torch.as_tensor(out.masks), expected, atol=1e-4, rtol=1e-4)
