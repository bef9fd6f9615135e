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
