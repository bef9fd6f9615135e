"""MCS on a user's own folder of videos: tiny synthetic clips (a moving square) made here."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import av
import datasets
import numpy as np
import pytest
import torch
from copart_hub.training.config import load_config
from copart_hub.training.data import video_frames
from copart_hub.training.sampling import EpochSampler
from copart_hub.training.tasks.mcs import McsTask
from copart_hub.training.trainer import Trainer, checkpoints
from PIL import Image

from copart_hub.data.videos import find_videos, read_video


def write_clip(path: Path, height: int, width: int, frames: int, codec: str = "mpeg4") -> None:
    """A dark clip with a red square moving right by 2 px a frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = np.full((height, width, 3), 30, np.uint8)
            image[8:18, 2 + 2 * t : 12 + 2 * t] = (230, 60, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(autouse=True)
def _one_thread_and_private_cache(tmp_path: Path, monkeypatch, one_thread):
    """One thread, and the frame tables in this test's folder, not the user's HF cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    """Three clips of 6-10 frames, 32x40 and 48x32, in three containers and a subfolder, plus a
    file that is no video."""
    folder = tmp_path / "my_videos"
    write_clip(folder / "a.mp4", 32, 40, 8)
    write_clip(folder / "nested" / "b.mkv", 48, 32, 6)
    write_clip(folder / "c.avi", 32, 40, 10)
    (folder / "notes.txt").write_text("not a video")
    return folder


def _args(video_dir: Path, **extra) -> dict:
    return {
        "video_dir": str(video_dir),
        "size": 32,
        "num_parts": 3,
        "repeats": 2,
        "model": "mcs_test",
        **extra,
    }


def test_videos_are_found_recursively_and_centre_cropped(video_dir: Path):
    videos = find_videos(video_dir)
    assert [p.relative_to(video_dir).as_posix() for p in videos] == [
        "a.mp4",
        "c.avi",
        "nested/b.mkv",
    ]
    tall = read_video(video_dir / "nested" / "b.mkv")[0]  # 48 x 32: crop rows 8..40
    cropped = read_video(video_dir / "nested" / "b.mkv", 32, crop=True)[0]
    assert cropped.shape == (6, 32, 32, 3)
    assert np.abs(cropped.astype(int) - tall[:, 8:40].astype(int)).max() <= 2  # only rounding


def test_frames_are_cached_by_content(video_dir: Path):
    path = video_dir / "a.mp4"
    first = video_frames(path, 16)
    assert len(first) == 8 and first[[0, 7]].shape == (2, 16, 16, 3) and first[3].dtype == np.uint8
    again = video_frames(path, 16)
    assert again.table.cache_files == first.table.cache_files  # decoded once
    # the same bytes copied elsewhere and touched (a data folder copied anew): not decoded again
    copy = video_dir / "copy" / "a.mp4"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    os.utime(copy, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert video_frames(copy, 16).table.cache_files == first.table.cache_files
    write_clip(path, 32, 40, 6)  # the file changes: decoded again
    changed = video_frames(path, 16)
    assert len(changed) == 6 and changed.table.cache_files != first.table.cache_files


def test_dataset_gives_pairs_of_one_clip(video_dir: Path):
    task = McsTask(_args(video_dir), seed=0)
    data = task.train_dataset()
    assert len(data) == 3 * 2
    item = data[(4, 1)]
    assert item["source"].shape == item["target"].shape == (3, 32, 32)
    assert item["source"].dtype == torch.float32 and 0 <= item["source"].min() <= 1
    assert torch.equal(item["source"], data[(4, 1)]["source"])  # deterministic
    sampler = EpochSampler(len(data), seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=2, sampler=sampler, num_workers=1)
    assert next(iter(loader))["target"].shape == (2, 3, 32, 32)  # the tables reach workers
    assert task.validate(task.release_model(task.build_model())) == {}
    assert "my_videos" in task.card_info()["data"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "task_args.video_dir must be an existing folder"),
        (lambda root: root, "task_args.video_dir '{}' has no readable videos"),
    ],
)
def test_a_folder_without_videos_is_one_clear_error(tmp_path: Path, make, message: str):
    folder = tmp_path / "empty"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "broken.mp4").write_bytes(b"not a video " * 50)
    folder = make(folder)
    with pytest.raises(ValueError, match=re.escape(message.format(folder))):
        McsTask({"video_dir": str(folder)}, seed=0)


def test_trainer_runs_on_user_videos(video_dir: Path, tmp_path: Path):
    """A short run: checkpoints (the last ``keep_checkpoints``), samples, no scores, final/."""
    out = tmp_path / "run"
    overrides = [
        "task=mcs",
        f"output_dir={out}",
        "max_steps=3",
        "batch_size=2",
        "num_workers=0",
        "log_every=1",
        "checkpoint_every=1",
        "keep_checkpoints=2",
        "val_every=2",
        "sample_every=2",
        "resume=null",
        "log_with=none",
        *(f"task_args.{k}={json.dumps(v)}" for k, v in _args(video_dir).items()),
    ]
    result = Trainer(load_config(None, overrides)).train()
    assert result["step"] == 3 and result["final"] == {}
    assert [p.name for p in checkpoints(out)] == ["step_2", "step_3"]
    width, height = Image.open(out / "samples" / "step_0000002.png").size
    assert width > 4 * 32 and height > 4 * 32  # 4 rows: 2 pairs of 2 of the clips
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert [r["val"] for r in rows if "val" in r] == [{}, {}]
    assert not (out / "best").exists()  # no scores: the final model is the result
    for name in ("model.safetensors", "config.json", "README.md", "samples.png"):
        assert (out / "final" / name).is_file()
    assert "my_videos" in (out / "final" / "README.md").read_text()


def test_short_training_on_a_moving_square_lowers_the_loss(tmp_path: Path):
    """15 Adam steps on one 12-frame clip lower the reconstruction loss of its frame pairs."""
    write_clip(tmp_path / "clips" / "square.mp4", 32, 32, 12)
    task = McsTask(_args(tmp_path / "clips", repeats=4, jitter=0.0, lr=1e-3), seed=0)
    torch.manual_seed(0)
    module = task.build_model().train()
    data = task.train_dataset()
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(4)])
    ((opt, _),) = task.build_optimizers(module, 15)
    recon = []
    for step in range(15):
        loss, logs = task.training_step(module, batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        recon.append(logs["reconstruction"])
    assert sum(recon[-3:]) / 3 < 0.8 * sum(recon[:3]) / 3, recon
