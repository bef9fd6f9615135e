"""copart-hub eval parts: protocols on held-out data, baselines, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import copart_hub
from copart_hub.data import shared_data_root
from copart_hub.evaluation.parts import DATASETS, evaluate, main, untrained_like

HAS = shared_data_root() is not None
needs_data = pytest.mark.skipif(not HAS, reason="../shared/data is not available")


def test_bad_model_is_one_clear_error(capsys):
    assert main(["--model", "no_such_model", "--dataset", "faces300w"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_model" in err[0]


def test_a_card_without_baselines_is_refused(tmp_path: Path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "README.md").write_text("# m\n")
    argv = ["--model", str(folder), "--dataset", "faces300w", "--card", "--no-baselines"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-baselines" in err[0]
    assert (folder / "README.md").read_text() == "# m\n"


def test_untrained_like_has_same_config_and_fresh_weights():
    model = copart_hub.create_model("scops_resnet18", num_parts=3, input_size=(32, 32))
    with __import__("torch").no_grad():
        model.classifier.branches[0].weight.fill_(1.0)
    fresh = untrained_like(model)
    assert fresh.config == model.config
    assert not fresh.classifier.branches[0].weight.eq(1.0).all()


@needs_data
@pytest.mark.slow
def test_scores_on_held_out_faces_and_horses(tmp_path: Path, capsys):
    model = copart_hub.create_model("scops_resnet18", num_parts=4, input_size=(64, 64)).eval()
    faces = evaluate(model, "faces300w-zoomshift", n_fit=60)
    assert 0 < faces["landmark_error_iod_pct"] < 200
    assert {"full_nmi", "full_ari", "fg_nmi", "fg_ari"} <= set(faces)
    horses = evaluate(model, "weizmann_horse")
    assert 0 <= horses["fg_iou"] <= 1
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    assert main(["--model", str(folder), "--dataset", "weizmann_horse"]) == 0
    out = capsys.readouterr().out
    assert "mean mask" in out and "untrained" in out and "DFF" in out and "saliency" in out
    assert "GrabCut" in out and "mean pose" not in out
    assert main(["--model", str(folder), "--dataset", "weizmann_horse", "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "this model" in out and "untrained" not in out and "mean mask" not in out
    assert set(DATASETS) == {"faces300w", "faces300w-zoomshift", "weizmann_horse", "taichi"}


@needs_data
@pytest.mark.slow
def test_taichi_protocol_with_comparison_and_card(
    tmp_path: Path, capsys, tiny_mcs_checkpoint: Path
) -> None:
    import shutil

    from copart_hub.data.videos import taichi_frames

    fit, test = taichi_frames("train", every=60), taichi_frames("val", every=60)
    assert fit.keypoints.shape == (len(fit.images), 33, 2) and test.load_mask(0).dtype == bool
    model = copart_hub.from_pretrained(tiny_mcs_checkpoint)
    scores = evaluate(model, "taichi", data=(fit, test))
    assert 0 <= scores["fg_iou"] <= 1 and scores["mae_sum"] > 0
    assert 0 < scores["mae_coords"] <= 66
    folder = tmp_path / "mcs"
    shutil.copytree(tiny_mcs_checkpoint, folder)
    (folder / "README.md").write_text("# m\n\n## Held-out scores\n\nx\n\n## Limitations\n")
    scops = tmp_path / "scops"
    copart_hub.create_model("scops_resnet18", num_parts=3, input_size=(32, 32)).save_pretrained(
        scops
    )
    argv = ["--model", str(folder), "--dataset", "taichi", "--compare", str(scops), "--card"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert str(scops) in out and "untrained" in out and "mean mask" in out and "DFF" not in out
    assert "mean pose" in out
    card = (folder / "README.md").read_text()
    assert "### taichi" in card and f"--compare {scops}" in card and "mae_sum" in card
