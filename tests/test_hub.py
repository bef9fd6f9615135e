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


@pytest.fixture(scope="module")
def scops_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SCOPS (K=2, 32 px) saved with ``save_pretrained``."""
    folder = tmp_path_factory.mktemp("scops") / "ckpt"
    torch.manual_seed(0)
    copart_hub.create_model("scops_resnet18", num_parts=2, input_size=(32, 32)).save_pretrained(
        folder
    )
    return folder


def _edited_copy(folder: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the checkpoint ``folder`` with ``changes`` applied to its config.json."""
    import shutil

    copy = tmp_path / f"edited_{folder.name}"
    shutil.copytree(folder, copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, **changes}))
    return copy


def test_a_saved_config_may_not_name_a_file_to_read(
    scops_folder: Path, tmp_path: Path, monkeypatch
):
    """``backbone_weights`` only matters at construction; a config that sets it is refused
    before anything is built, so loading never opens a file the config names."""
    assert json.loads((scops_folder / "config.json").read_text())["backbone_weights"] is None
    assert copart_hub.from_pretrained(scops_folder).num_parts == 2
    secret = tmp_path / "secret.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, secret)
    built = []
    monkeypatch.setattr("copart_hub.models.backbone.TimmBackbone.__init__", built.append)
    folder = _edited_copy(scops_folder, tmp_path, backbone_weights=str(secret))
    with pytest.raises(CheckpointMismatchError, match=r"sets .backbone_weights. to .*secret\.pth"):
        copart_hub.from_pretrained(folder)
    assert built == []


def test_a_config_that_is_not_an_object_is_refused(ssn_folder: Path):
    (ssn_folder / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointMismatchError, match="must hold a JSON object"):
        copart_hub.from_pretrained(ssn_folder)


@pytest.mark.parametrize(
    "folder, key, value, message",
    [
        (
            "scops_folder",
            "input_size",
            [100000, 100000],
            r"input_size height must be in \[1, 4096\]",
        ),
        ("scops_folder", "input_size", 128, r"input_size must be \(height, width\)"),
        ("scops_folder", "num_parts", 1000, r"num_parts must be in \[1, 64\]"),
        ("scops_folder", "num_parts", 2.5, "num_parts must be an integer"),
        ("ssn_folder", "hidden_dim", 10**6, r"hidden_dim must be in \[1, 4096\]"),
        ("tiny_mcs_checkpoint", "seg_max_features", 10**6, "max_features must be in"),
        ("tiny_mcs_checkpoint", "gen_num_bottleneck_blocks", 10**4, "num_bottleneck_blocks"),
        ("tiny_mcs_checkpoint", "input_size", [64, 10**5], "input_size width must be in"),
    ],
)
def test_sizes_in_a_saved_config_are_bounded_before_allocating(
    request, tmp_path: Path, folder: str, key: str, value, message: str
):
    edited = _edited_copy(request.getfixturevalue(folder), tmp_path, **{key: value})
    with pytest.raises(ValueError, match=message):
        copart_hub.from_pretrained(edited)
