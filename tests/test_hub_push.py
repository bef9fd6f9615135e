"""push_to_hub -> from_pretrained round trip against a local stand-in for the Hub API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import metadata_load

import copart_hub


class LocalHub:
    """Stands in for ``HfApi``: an upload becomes a snapshot of a Hugging Face cache, which
    ``from_pretrained(repo_id, local_files_only=True, cache_dir=...)`` then reads."""

    def __init__(self, cache: Path) -> None:
        self.cache, self.uploads = cache, 0

    def __call__(self, token=None):  # HfApi(token=...)
        return self

    def create_repo(self, repo_id: str, private=None, exist_ok=False):
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id: str, folder_path, **kwargs) -> str:
        self.uploads += 1
        commit = f"{self.uploads:040d}"
        repo = self.cache / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(folder_path, repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        return f"local://{repo_id}/commit/{commit}"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch) -> LocalHub:
    fake = LocalHub(tmp_path / "cache")
    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", fake)
    return fake


def _snapshot(hub: LocalHub, repo_id: str) -> Path:
    repo = hub.cache / ("models--" + repo_id.replace("/", "--"))
    return repo / "snapshots" / (repo / "refs" / "main").read_text()


def test_pushed_zoo_model_reloads_with_its_card_and_terms(hub: LocalHub):
    model = copart_hub.from_pretrained("ssn_bsds500")
    model.push_to_hub("me/my-ssn")
    pushed = _snapshot(hub, "me/my-ssn")
    assert json.loads((pushed / "config.json").read_text())["architecture"] == "ssn"
    meta = metadata_load(pushed / "README.md")
    assert meta["license_name"] == "bsds500-non-commercial"  # not the mixin's apache-2.0
    assert (pushed / "LICENSE.md").is_file() and "model-index" in meta
    again = copart_hub.from_pretrained("me/my-ssn", cache_dir=hub.cache, local_files_only=True)
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(model(x, 30).labels, again(x, 30).labels)


def test_pushed_new_model_gets_a_copart_card_with_unknown_terms(hub: LocalHub):
    torch.manual_seed(0)
    model = copart_hub.create_model("scops_fpn_resnet18", num_parts=3, input_size=(32, 32))
    model.eval().push_to_hub("me/parts")
    pushed = _snapshot(hub, "me/parts")
    config = json.loads((pushed / "config.json").read_text())
    assert config["architecture"] == "scops_fpn" and config["feature_reduction"] == [4, 8, 16, 32]
    meta = metadata_load(pushed / "README.md")
    assert meta["license"] == "unknown" and meta["library_name"] == "copart_hub"
    again = copart_hub.from_pretrained("me/parts", cache_dir=hub.cache, local_files_only=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_a_changed_loaded_model_does_not_keep_the_old_card(tmp_path: Path):
    model = copart_hub.from_pretrained("ssn_bsds500")
    model.save_pretrained(tmp_path / "same")
    assert (tmp_path / "same" / "LICENSE.md").is_file()  # unchanged weights keep their terms
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # "fine-tuned"
    model.save_pretrained(tmp_path / "tuned")
    assert not (tmp_path / "tuned" / "LICENSE.md").exists()
    assert metadata_load(tmp_path / "tuned" / "README.md")["license"] == "unknown"


def test_zoo_name_hub_id_and_pretrained_tag_give_the_same_model(monkeypatch, tmp_path: Path):
    from copart_hub.hub.resolve import RELEASED, resolve_checkpoint

    by_name = resolve_checkpoint("ssn_bsds500")
    assert resolve_checkpoint("copart-hub/ssn_bsds500") == by_name  # the mirror serves the id
    model = copart_hub.create_model("ssn_deep.bsds500", pretrained=True)
    ref = copart_hub.from_pretrained("ssn_bsds500")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True)
    )
    assert set(copart_hub.list_models(pretrained=True)) >= {"ssn_deep.bsds500"}
    with pytest.raises(ValueError, match="no released weights"):
        copart_hub.create_model("ssn_deep.nothing", pretrained=True)
    # a mirror folder takes precedence; a released name missing locally goes to its pinned repo
    mirror = tmp_path / "mirror"
    shutil.copytree(by_name[0].parent, mirror / "scops_horses")
    monkeypatch.setenv("COPART_HUB_MIRROR", str(mirror))
    assert resolve_checkpoint("scops_horses")[0] == mirror / "scops_horses" / "config.json"
    calls = []
    monkeypatch.setattr(
        "copart_hub.hub.resolve.hf_hub_download",
        lambda **kw: calls.append(kw) or (_ for _ in ()).throw(RuntimeError("no network")),
    )
    monkeypatch.setattr("copart_hub.hub.resolve.local_zoo_folder", lambda name: None)
    with pytest.raises(RuntimeError, match="no network"):
        resolve_checkpoint("mcs_taichi")
    assert (calls[0]["repo_id"], calls[0]["revision"]) == RELEASED["mcs_taichi"]
    assert calls[0]["library_name"] == "copart_hub"


def test_the_wheel_ships_no_zoo_weights_but_the_default_ssn(tmp_path: Path):
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    weights = [n for n in names if n.endswith(".safetensors")]
    assert weights == ["copart_hub/zoo/ssn_bsds500/model.safetensors"]
    assert "copart_hub/py.typed" in names and wheel.stat().st_size < 5 * 2**20


def test_the_repository_zoo_is_a_mirror(monkeypatch, tmp_path: Path):
    from copart_hub.hub import resolve

    repo_zoo = tmp_path / "zoo"
    shutil.copytree(resolve.ZOO_DIR / "ssn_bsds500", repo_zoo / "my_release")
    monkeypatch.setattr(resolve, "REPO_ZOO_DIR", repo_zoo)
    (tmp_path / "pyproject.toml").write_text("")  # a source checkout
    assert "my_release" in resolve.zoo_names()
    assert resolve.resolve_checkpoint("copart-hub/my_release")[1].parent == repo_zoo / "my_release"
    (tmp_path / "pyproject.toml").unlink()  # an installed package: no repository zoo
    assert "my_release" not in resolve.zoo_names()


@pytest.mark.parametrize("tag", sorted(copart_hub.hub.resolve.PRETRAINED_TAGS))
def test_every_pretrained_tag_names_its_checkpoints_architecture(tag: str):
    """``create_model("<entry>.<tag>", pretrained=True)`` loads the local release (a release
    of another architecture under an old tag fails here, not in a user's hands)."""
    from copart_hub.hub.resolve import PRETRAINED_TAGS, local_zoo_folder

    if local_zoo_folder(PRETRAINED_TAGS[tag]) is None:
        pytest.skip(f"{PRETRAINED_TAGS[tag]} is not in the local zoo")
    model = copart_hub.create_model(tag, pretrained=True)
    entry = copart_hub.hub.registry.get_entry(tag.partition(".")[0])
    assert all(model.config.get(k) == v for k, v in entry.defaults.items()), entry.defaults
