"""Video reading and the MCS training task on real Tai-Chi clips (tiny sizes, one thread)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from copart_hub.training.tasks.mcs import McsFramePairs, McsTask
from PIL import Image

from copart_hub.data import shared_data_root
from copart_hub.data.videos import read_video, taichi_clips

HAS_TAICHI = shared_data_root() is not None and (shared_data_root() / "taichi").is_dir()
needs_taichi = pytest.mark.skipif(not HAS_TAICHI, reason="../shared/data/taichi is not available")

TINY = {
    "size": 32,
    "num_parts": 3,
    "train_clips": [2, 8],  # the two shortest clips, to decode fast
    "val_every_nth_frame": 40,
    "model": "mcs_test",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task() -> McsTask:
    if not HAS_TAICHI:
        pytest.skip("../shared/data/taichi is not available")
    return McsTask(TINY, seed=0)


def test_corrupt_file_raises_value_error(tmp_path: Path):
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"not a video at all " * 64)
    with pytest.raises(ValueError, match="cannot decode"):
        read_video(path)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


def test_video_without_frames_raises_value_error(tmp_path: Path):
    path = tmp_path / "empty.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width = stream.height = 16
        container.start_encoding()  # header only
    with pytest.raises(ValueError, match="no frames"):
        read_video(path)


def test_one_frame_gif_reads_as_one_frame(tmp_path: Path):
    path = tmp_path / "one.gif"
    Image.fromarray(np.full((10, 12, 3), 200, np.uint8)).save(path)
    frames, fps = read_video(path)
    assert frames.shape == (1, 10, 12, 3) and frames.dtype == np.uint8 and fps >= 0
    assert read_video(path, size=(6, 8))[0].shape == (1, 6, 8, 3)


def test_max_frames_stops_decoding_with_a_clear_error(tmp_path: Path):
    path = tmp_path / "four.gif"
    frames = [Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)) for i in range(4)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert read_video(path, max_frames=4)[0].shape[0] == 4
    with pytest.raises(ValueError, match="more than 3 frames"):
        read_video(path, max_frames=3)


@needs_taichi
def test_real_clip_and_split():
    val = taichi_clips("val")
    assert [c.name for c in val] == ["clip_12", "clip_13"]
    assert len(taichi_clips("train")) == 12
    frames, fps = read_video(val[1].video, size=32)
    assert frames.shape == (169, 32, 32, 3) and frames.dtype == np.uint8 and fps == 30.0
    assert val[1].keypoints().shape == (169, 33, 3)
    masks = val[1].masks([0, 10])
    assert masks.shape == (2, 256, 256) and masks.dtype == bool and masks.any()


@needs_taichi
def test_items_are_deterministic_pairs_of_one_clip(task: McsTask):
    data = task.train_dataset()
    assert len(data) == 2 * 50
    a, b = data[(7, 3)], data[(7, 3)]
    assert torch.equal(a["source"], b["source"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["source"], data[(7, 4)]["source"])
    plain = McsFramePairs(task.frames("train"), seed=0, jitter=0.0)
    flips = set()
    for index in range(12):
        item = plain[(index, 0)]
        clip = task.frames("train")[item["clip"]]
        ts, tt = item["times"].tolist()
        assert (ts <= tt) != item["time_flip"] or ts == tt
        for name, t in (("source", ts), ("target", tt)):
            frame = torch.from_numpy(clip[t]).permute(2, 0, 1).float() / 255
            same, mirrored = torch.equal(item[name], frame), torch.equal(item[name], frame.flip(-1))
            assert same or mirrored
        flips.add(item["time_flip"])
    assert flips == {True, False}


@needs_taichi
def test_training_step_reaches_segmenter_and_generator(task: McsTask):
    torch.manual_seed(0)
    module = task.build_model().train()
    data = task.train_dataset()
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(2)])
    loss, logs = task.training_step(module, batch, step=0)
    loss.backward()
    assert torch.isfinite(loss)
    assert set(logs) == {"reconstruction", "equivariance_shift", "equivariance_affine"}
    model = task.release_model(module)
    assert model.segmenter.segmentation_head.weight.grad.abs().sum() > 0
    assert model.segmenter.shift_head.weight.grad.abs().sum() > 0
    assert model.generator.final.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.perceptual.parameters())


@needs_taichi
def test_validate_and_samples(task: McsTask, tmp_path: Path):
    torch.manual_seed(0)
    model = task.release_model(task.build_model()).eval()
    scores = task.validate(model)
    assert 0 <= scores["fg_iou"] <= 1 and scores["score"] == scores["fg_iou"]
    assert np.isfinite(scores["mae_sum"]) and 0 < scores["mae_coords"] <= 66
    assert 0 < scores["recon_l1"] < 1 and 0 < scores["copy_l1"] < scores["recon_l1"]  # untrained
    assert -1 <= scores["recon_ssim"] <= 1 and scores["recon_sharpness"] > 0
    task.write_samples(model, tmp_path / "samples.png")
    assert Image.open(tmp_path / "samples.png").size[0] > 4 * 32


def test_random_perceptual_net_widths_come_from_task_args():
    """``random_channels`` sets the random net's stage widths (a cheaper perceptual loss)."""
    module = McsTask({**TINY, "random_channels": [4, 4, 8, 8, 16]}, seed=0).build_model()
    convs = [s[-2] for s in module.perceptual.features.stages]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16]
    for bad in ([4, 0, 8, 8, 8], [4.5, 4, 8, 8, 8], "wide"):
        with pytest.raises(ValueError, match="random_channels"):
            McsTask({**TINY, "random_channels": bad}, seed=0)
    with pytest.raises(ValueError, match="3 random stages but 5 layer weights"):
        McsTask({**TINY, "random_channels": [4, 4, 8]}, seed=0).build_model()
