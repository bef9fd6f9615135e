"""The ``copart-hub`` command line, run in-process (plus one subprocess run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copart_hub.cli import main
from copart_hub.pipelines import SuperpixelSegmenter


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("copart-hub: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_superpixels_writes_16bit_labels(image_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["superpixels", str(image_file), "--n", "12", "--model", "ssn_pix", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    with Image.open(out / "sample_labels.png") as labels_png:
        assert labels_png.mode == "I;16"
        labels = np.asarray(labels_png)
    expected = SuperpixelSegmenter("ssn_pix", device="cpu")(image_file, n_spixels=12)
    np.testing.assert_array_equal(labels, expected.labels)
    assert np.unique(labels).tolist() == list(range(expected.num_superpixels))
    with Image.open(out / "sample_overlay.png") as overlay:
        assert overlay.size == (32, 24)
    assert f"{expected.num_superpixels} superpixels" in capsys.readouterr().out


def test_segment_writes_labels_overlay_and_json(
    image_file: Path, tiny_part_checkpoint: Path, tmp_path: Path
) -> None:
    odd = tmp_path / "images" / "odd.jpg"
    Image.new("RGB", (53, 37), (10, 200, 30)).save(odd)
    out = tmp_path / "out"
    argv = ["segment", str(image_file), str(odd), "--model", str(tiny_part_checkpoint)]
    assert main([*argv, "--out", str(out), "--device", "cpu", "--batch-size", "1"]) == 0
    for stem, size in (("sample", (32, 24)), ("odd", (53, 37))):
        with Image.open(out / f"{stem}_labels.png") as labels_png:
            assert labels_png.mode == "L" and labels_png.size == size
            assert np.asarray(labels_png).max() <= 3
        with Image.open(out / f"{stem}_overlay.png") as overlay:
            assert overlay.size == size
        summary = json.loads((out / f"{stem}.json").read_text())
        assert (summary["width"], summary["height"]) == size
        assert summary["num_parts"] == 3
        assert len(summary["centres"]) == len(summary["areas"]) == 3


def test_segment_refinements_change_the_labels_and_bad_snap_model_is_refused(
    image_file: Path, tiny_part_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    argv = ["segment", str(image_file), "--model", str(tiny_part_checkpoint), "--device", "cpu"]
    labels = {}
    for name, extra in (("plain", []), ("snap", ["--snap", "ssn_pix"]), ("gc", ["--grabcut"])):
        assert main([*argv, "--out", str(tmp_path / name), *extra]) == 0
        labels[name] = np.asarray(Image.open(tmp_path / name / "sample_labels.png"))
    assert labels["snap"].shape == labels["gc"].shape == (24, 32)
    assert not np.array_equal(labels["snap"], labels["plain"])
    assert main([*argv, "--out", str(tmp_path / "x"), "--snap", str(tiny_part_checkpoint)]) == 2
    assert "is a part model (TinyPartModel), not a superpixel model" in _one_error_line(capsys)


def test_bad_file_fails_before_writing_anything(image_file: Path, tmp_path: Path, capsys) -> None:
    bad = image_file.parent / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    argv = ["superpixels", str(image_file), str(bad), "--model", "ssn_pix", "--out", str(out)]
    assert main([*argv, "--n", "4"]) == 2
    assert "broken.png" in _one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n", "0"], "positive integer"),
        (["--n", "ten"], "positive integer"),
        (["--n", "100000"], "cannot make 100000 superpixels"),
        (["--model", "ssn_deep"], "no bundled checkpoint"),
        (["--model", "/no/such/checkpoint/folder"], "not a local folder"),
    ],
)
def test_usage_errors_are_one_line(image_file, tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "out"
    argv = ["superpixels", str(image_file), "--out", str(out), "--model", "ssn_pix", *extra]
    assert main(argv) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_segment_with_a_superpixel_model_is_refused(image_file, tmp_path, capsys) -> None:
    argv = ["segment", str(image_file), "--model", "ssn_pix", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert _one_error_line(capsys).endswith("ssn_pix is a superpixel model (SSN), not a part model")


def test_never_overwrites_inputs(tmp_path: Path, rgb_array: np.ndarray, capsys) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    Image.fromarray(rgb_array).save(folder / "a.png")
    Image.fromarray(rgb_array).save(folder / "a_overlay.png")
    before = (folder / "a_overlay.png").read_bytes()
    argv = ["superpixels", str(folder / "a.png"), str(folder / "a_overlay.png")]
    assert main([*argv, "--model", "ssn_pix", "--n", "4", "--out", str(folder)]) == 2
    assert "overwrite input" in _one_error_line(capsys)
    assert (folder / "a_overlay.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_overlay.png"]


def test_same_stem_collision_is_refused(tmp_path: Path, rgb_array: np.ndarray, capsys) -> None:
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        Image.fromarray(rgb_array).save(tmp_path / sub / "img.png")
    argv = ["superpixels", str(tmp_path / "x/img.png"), str(tmp_path / "y/img.png")]
    assert main([*argv, "--model", "ssn_pix", "--out", str(tmp_path / "out")]) == 2
    assert "would both write" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "argv, module",
    [
        (
            ["eval", "superpixels", "--model", "ssn_pix", "--limit", "2"],
            "copart_hub.evaluation.superpixels",
        ),
        (["train", "--config", "c.yaml", "-h"], "copart_hub.training.launch"),
    ],
)
def test_eval_and_train_delegate_their_arguments(monkeypatch, argv, module) -> None:
    received: list[list[str]] = []
    fake = types.ModuleType(module)
    fake.main = lambda rest: received.append(rest) or 7
    monkeypatch.setitem(sys.modules, module, fake)
    assert main(argv) == 7
    assert received == [argv[2:] if argv[0] == "eval" else argv[1:]]


def test_eval_needs_a_known_task(capsys) -> None:
    assert main(["eval", "nonsense"]) == 2
    assert "superpixels" in _one_error_line(capsys)


@pytest.mark.slow
def test_python_dash_m_entry_point(image_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "copart_hub", "superpixels", str(image_file), "--n", "8"]
    cmd += ["--model", "ssn_pix", "--out", str(out), "--device", "cpu"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr
    with Image.open(out / "sample_labels.png") as labels_png:
        assert labels_png.size == (32, 24)
    bad = subprocess.run(
        [*cmd[:4], str(tmp_path / "missing.png"), *cmd[5:]],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"copart-hub: error: {tmp_path}/missing.png: no such file"
    ]


def test_frames_every_nth_and_bad_video(tmp_path: Path, capsys) -> None:
    frames = [Image.new("RGB", (20, 10), (40 * i, 0, 0)) for i in range(5)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=40, loop=0)
    out = tmp_path / "out"
    assert main(["frames", str(gif), "--every", "2", "--size", "8", "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["clip_00000.png", "clip_00002.png", "clip_00004.png"]
    assert Image.open(out / "clip_00002.png").size == (8, 8)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    assert main(["frames", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "bad.mp4" in capsys.readouterr().err and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("name", ["scops_faces300w", "scops_horses", "mcs_taichi"])
def test_segment_with_a_released_scops_checkpoint(name: str, tmp_path: Path) -> None:
    import copart_hub

    if name not in copart_hub.hub.zoo_names():
        pytest.skip(f"{name} is not bundled in this installation")
    image = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 70, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["segment", str(image), "--model", name, "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "face.json").read_text())
    model = copart_hub.from_pretrained(name)
    assert summary["num_parts"] == model.num_parts and (summary["width"], summary["height"]) == (
        70,
        90,
    )
    assert np.asarray(Image.open(out / "face_labels.png")).max() <= model.num_parts
