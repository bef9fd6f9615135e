"""Model API: registry, save/load round trip, strict loading, offline Hub cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import copart_hub
from copart_hub.hub import CheckpointMismatchError, ModelNotFoundError
from copart_hub.models import SSN


@pytest.fixture
def ssn_folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = copart_hub.create_model("ssn_deep", hidden_dim=8, feature_dim=3, n_spixels=16)
    # make BatchNorm statistics non-trivial so a wrong load would show
    model.train()
    model.forward_features(torch.rand(2, 3, 24, 24), 16)
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_registry_and_create_model():
    names = copart_hub.list_models()
    assert {"ssn_deep", "ssn_pix"} <= set(names)
    m = copart_hub.create_model("ssn_pix")
    assert isinstance(m, SSN) and not m.deep and sum(p.numel() for p in m.parameters()) == 0
    assert copart_hub.create_model("ssn_deep", hidden_dim=16).config["hidden_dim"] == 16
    with pytest.raises(ValueError, match="unknown model"):
        copart_hub.create_model("no_such_model")


def test_round_trip_gives_identical_outputs(ssn_folder: Path):
    files = {p.name for p in ssn_folder.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= files
    config = json.loads((ssn_folder / "config.json").read_text())
    assert config["architecture"] == "ssn" and config["hidden_dim"] == 8
    a = SSN.from_pretrained(ssn_folder)
    b = copart_hub.from_pretrained(ssn_folder)
    assert type(b) is SSN and not b.training
    x = torch.rand(1, 3, 30, 26)
    fa, fb = a.forward_features(x, 16), b.forward_features(x, 16)
    assert torch.equal(fa, fb)
    src = copart_hub.create_model("ssn_deep", hidden_dim=8, feature_dim=3)
    for k, v in b.state_dict().items():
        assert v.shape == src.state_dict()[k].shape


def test_card_has_hub_metadata(ssn_folder: Path):
    card = (ssn_folder / "README.md").read_text()
    assert "library_name: copart_hub" in card and "image-segmentation" in card


def _rewrite(folder: Path, state: dict) -> None:
    save_file(state, str(folder / "model.safetensors"))


def test_strict_load_names_missing_and_unexpected_keys(ssn_folder: Path):
    from safetensors.torch import load_file

    state = load_file(str(ssn_folder / "model.safetensors"))
    dropped = "feature_net.head.weight"
    state.pop(dropped)
    state["extra.weight"] = torch.zeros(1)
    _rewrite(ssn_folder, state)
    with pytest.raises(CheckpointMismatchError) as err:
        copart_hub.from_pretrained(ssn_folder)
    assert dropped in str(err.value) and "extra.weight" in str(err.value)


def test_strict_load_names_shape_mismatch(ssn_folder: Path):
    cfg = json.loads((ssn_folder / "config.json").read_text())
    cfg["hidden_dim"] = 16
    (ssn_folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        copart_hub.from_pretrained(ssn_folder)


def test_safetensors_only(ssn_folder: Path):
    (ssn_folder / "model.safetensors").rename(ssn_folder / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="safetensors only"):
        copart_hub.from_pretrained(ssn_folder)


def test_unknown_architecture_and_wrong_class(ssn_folder: Path):
    from copart_hub.models.part_base import PartModel

    with pytest.raises(CheckpointMismatchError, match="not a PartModel"):
        PartModel.from_pretrained(ssn_folder)
    cfg = json.loads((ssn_folder / "config.json").read_text())
    cfg["architecture"] = "nope"
    (ssn_folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown architecture"):
        copart_hub.from_pretrained(ssn_folder)


def test_bad_names_fail_fast_without_network(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="not a local folder"):
        copart_hub.from_pretrained("ssn_does_not_exist")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        copart_hub.from_pretrained(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        copart_hub.from_pretrained(tmp_path / "empty")


def _populate_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay out a Hugging Face cache entry as ``hf_hub_download`` leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snap / name).write_bytes((folder / name).read_bytes())


def test_offline_load_from_prepopulated_cache(ssn_folder: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "hub-cache"
    _populate_hub_cache(cache, "someone/ssn-test", ssn_folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model = copart_hub.from_pretrained("someone/ssn-test", cache_dir=cache)
    ref = copart_hub.from_pretrained(ssn_folder)
    x = torch.rand(1, 3, 20, 20)
    assert torch.equal(model.forward_features(x, 16), ref.forward_features(x, 16))
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        copart_hub.from_pretrained("someone/not-cached", cache_dir=cache)


def test_offline_load_with_env_in_subprocess(ssn_folder: Path, tmp_path: Path):
    """HF_HUB_OFFLINE=1 set before import, as a user would, and HF_HUB_CACHE set."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "hub-cache"
    _populate_hub_cache(cache, "someone/ssn-test", ssn_folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    code = (
        "import copart_hub,sys\n"
        "m = copart_hub.from_pretrained('someone/ssn-test'); print(type(m).__name__)\n"
        "try:\n copart_hub.from_pretrained('someone/missing')\n"
        "except copart_hub.ModelNotFoundError as e: print('missing-ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SSN", "missing-ok"]


def test_model_without_parameters_round_trips(tmp_path: Path):
    m = copart_hub.create_model("ssn_pix")
    m.save_pretrained(tmp_path / "pix")
    m2 = copart_hub.from_pretrained(tmp_path / "pix")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(m(x, 4).labels, m2(x, 4).labels)
