"""timm backbones by name with local weights (never downloading), and the DFF part model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import copart_hub
from copart_hub.models import DFF, TimmBackbone
from copart_hub.models.dff import nmf


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt to fetch weights from the network fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("a download was attempted")

    import timm.models._builder as builder

    for name in ("download_cached_file", "load_state_dict_from_hf", "load_state_dict_from_url"):
        if hasattr(builder, name):
            monkeypatch.setattr(builder, name, boom)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", boom)


@pytest.mark.parametrize(
    "name,channels,reduction", [("resnet18", 512, 32), ("vit_tiny_patch16_224", 192, 16)]
)
def test_backbone_by_name_reports_channels_and_strides(name, channels, reduction, no_downloads):
    bb = TimmBackbone(name)
    assert bb.channels == [channels] and bb.reductions == [reduction]
    assert len(bb.mean) == 3 and len(bb.std) == 3
    feats = bb(torch.rand(1, 3, 224, 224))
    assert feats[0].shape == (1, channels, 224 // reduction, 224 // reduction)


def test_backbone_errors():
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmBackbone("resnet_does_not_exist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TimmBackbone("resnet18", weights_file="/no/such/weights.safetensors")


def _weights_file(tmp_path: Path, name: str = "resnet18") -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(123)
    ref = timm.create_model(name, pretrained=False)  # a full classifier, as users download it
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return path, ref.eval()


def test_local_weight_file_is_loaded(tmp_path: Path, no_downloads):
    path, ref = _weights_file(tmp_path)
    bb = TimmBackbone("resnet18", weights_file=path).eval()
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(bb(x)[0], ref.forward_features(x))
    fresh = TimmBackbone("resnet18").eval()
    assert not torch.allclose(fresh(x)[0], ref.forward_features(x))


def test_dff_saved_from_local_weights_reloads_without_them(tmp_path: Path, no_downloads):
    path, _ = _weights_file(tmp_path)
    model = DFF(backbone="resnet18", num_parts=3, input_size=(64, 64), backbone_weights=str(path))
    model.eval().fit([torch.rand(4, 3, 64, 64)], iters=10)
    model.save_pretrained(tmp_path / "dff")
    path.unlink()  # the weight file is gone: reloading must not need it, nor a download
    cfg = json.loads((tmp_path / "dff" / "config.json").read_text())
    assert cfg["backbone_weights"] is None and cfg["feature_channels"] == 256
    assert cfg["image_mean"] == [0.485, 0.456, 0.406]
    again = copart_hub.from_pretrained(tmp_path / "dff")
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(again(x), model(x))


def test_nmf_recovers_a_factorisation_and_fixed_factors_stay_fixed():
    g = torch.Generator().manual_seed(0)
    w_true = torch.rand(20, 3, generator=g)
    h_true = torch.rand(3, 50, generator=g)
    v = w_true @ h_true
    w, h = nmf(v, torch.rand(20, 3, generator=g) + 0.1, torch.rand(3, 50, generator=g) + 0.1, 500)
    assert (w @ h - v).norm() / v.norm() < 0.02
    w2, h2 = nmf(v, w_true, torch.full((3, 50), 0.5), 300, update_w=False)
    assert torch.equal(w2, w_true)
    assert (h2 - h_true).abs().max() < 0.05


def test_dff_parts_follow_image_content():
    """Two colours on a grey background: NMF puts each colour in its own factor."""
    model = DFF(backbone="resnet18", num_parts=2, input_size=(64, 64), feature_index=1).eval()
    imgs = torch.full((6, 3, 64, 64), 0.5)
    imgs[:, :, 16:48, 8:30] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    imgs[:, :, 16:48, 34:56] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    x = (imgs - 0.45) / 0.225
    model.fit([x], iters=300)
    labels = model(x).argmax(1)  # [B, 16, 16] at stride 4
    red, blue, bg = labels[:, 6:10, 3:6], labels[:, 6:10, 10:13], labels[:, 0, :]
    assert red.mode().values.mode().values.unique().numel() == 1
    r, b = int(red.flatten().mode().values), int(blue.flatten().mode().values)
    assert r != b and 0 not in (r, b)
    assert int(bg.flatten().mode().values) == 0


def test_config_records_channels_stride_and_normalisation(tmp_path: Path, no_downloads):
    model = copart_hub.create_model("scops_resnet18", num_parts=2, input_size=(32, 32))
    cfg = model.config
    assert cfg["feature_channels"] == 512 and cfg["feature_reduction"] == 8
    assert cfg["image_mean"] == [0.485, 0.456, 0.406]
    with pytest.raises(ValueError, match="stride"):
        copart_hub.create_model("scops_resnet18", feature_reduction=16)
