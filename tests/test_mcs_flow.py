"""MCS flow supervision and still-image pairs: the flow loss, DIS flow targets (cached), frame
pairs with flow, pairs made from one still image, and short real runs with each option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from copart_hub.training.config import load_config
from copart_hub.training.data import BackgroundCrops, TeacherForeground, video_foregrounds
from copart_hub.training.flow import (
    FlowTargets,
    consistency_weight,
    hflip_flow,
    normalised_flow,
)
from copart_hub.training.launch import resolve_config
from copart_hub.training.tasks.mcs import McsFramePairs, McsStillPairs, McsTask, PairMix
from PIL import Image
from torch import Tensor

from copart_hub.data import shared_data_root
from copart_hub.data.provenance import licence_text
from copart_hub.losses.mcs import (
    McsLossWeights,
    flow_loss,
    still_background_loss,
    still_parts_loss,
)
from copart_hub.models.mcs import MCSSegmentation, part_motion_grid
from copart_hub.ops.coordinates import coordinate_grid
from copart_hub.pipelines import PartSegmenter
from copart_hub.saliency import unsupervised_foreground

pytestmark = pytest.mark.usefixtures("one_thread")


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture ``uint8 [h, w, 3]`` (structure for an optical flow)."""
    noise = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=torch.Generator().manual_seed(seed))
    image = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    return (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)


def warp_by_flow(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image(z + flow(z))`` for ``image [C, H, W]`` and normalised ``flow [2, H, W]``."""
    h, w = image.shape[-2:]
    grid = coordinate_grid(h, w, "inclusive") + flow.permute(1, 2, 0)
    return F.grid_sample(image[None], grid[None], align_corners=True, padding_mode="border")[0]


# ------------------------------------------------------------------------------ flow loss
def two_part_scene(h: int = 16, w: int = 16) -> tuple[MCSSegmentation, MCSSegmentation, Tensor]:
    """Target and source segmentations of two parts (left / right half) that each move by
    their own affine, and the true target -> source flow ``[1, 2, h, w]``."""
    masks = torch.zeros(1, 3, h, w)
    masks[:, 1, :, : w // 2], masks[:, 2, :, w // 2 :] = 1, 1
    shift_t = torch.tensor([[[-0.5, 0.0], [0.5, 0.0]]])
    affine_t = torch.eye(2).expand(1, 2, 2, 2).clone()
    shift_s = shift_t + torch.tensor([[[0.1, -0.05], [-0.08, 0.12]]])
    rotation = torch.tensor([[0.98, -0.2], [0.2, 0.98]])
    affine_s = torch.stack([rotation, torch.tensor([[1.1, 0.0], [0.05, 0.9]])])[None]
    target = MCSSegmentation(masks, shift_t, affine_t)
    source = MCSSegmentation(masks, shift_s, affine_s)  # source masks do not enter the grid
    z = coordinate_grid(h, w, "inclusive")
    flow = torch.zeros(1, 2, h, w)
    for k, part in enumerate((slice(None, w // 2), slice(w // 2, None))):
        zk = z[:, part]
        moved = (affine_s[0, k] @ (zk - shift_t[0, k]).reshape(-1, 2).T).T.reshape(zk.shape)
        flow[0, :, :, part] = (moved + shift_s[0, k] - zk).permute(2, 0, 1)
    return target, source, flow


def test_flow_loss_is_zero_for_the_true_parts_and_larger_for_wrong_ones():
    target, source, flow = two_part_scene()
    grid = part_motion_grid(target, source)
    assert flow_loss(grid, flow).item() == pytest.approx(0.0, abs=1e-5)
    swapped = MCSSegmentation(target.masks[:, [0, 2, 1]], target.shift, target.affine)
    background = MCSSegmentation(target.masks[:, [1, 0, 2]], target.shift, target.affine)
    for wrong in (swapped, background):
        assert flow_loss(part_motion_grid(wrong, source), flow).item() > 0.02
    # a finer target flow is area-averaged to the mask resolution: still zero for the truth
    fine = F.interpolate(flow, scale_factor=2, mode="nearest")
    assert flow_loss(grid, fine).item() == pytest.approx(0.0, abs=1e-5)


def test_flow_loss_weight_and_gradient():
    target, source, flow = two_part_scene()
    masks = torch.full_like(target.masks, 1 / 3).requires_grad_()
    grid = part_motion_grid(MCSSegmentation(masks, target.shift, target.affine), source)
    weight = torch.zeros(1, 1, 16, 16)
    weight[..., :8] = 1  # only the left half counts
    left = flow_loss(grid, flow, weight)
    left.backward()
    assert masks.grad[..., :8].abs().sum() > 0 and masks.grad[..., 8:].abs().sum() == 0
    assert left.item() != pytest.approx(flow_loss(grid, flow).item())
    with pytest.raises(ValueError, match=r"\[B, h, w, 2\]"):
        flow_loss(grid.permute(0, 3, 1, 2), flow)
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        flow_loss(grid, flow[:, :1])


def test_total_adds_each_named_term_times_its_weight():
    one, half = torch.tensor(1.0), torch.tensor(0.5)
    weights = McsLossWeights(
        equivariance_shift=2.0,
        equivariance_affine=3.0,
        flow=4.0,
        still_background=5.0,
        background=6.0,
        still_parts=7.0,
    )
    assert weights.total(one, one, one).item() == 6.0
    for name in McsLossWeights.OPTIONAL_TERMS:
        expected = 6.0 + getattr(weights, name) * 0.5
        assert weights.total(one, one, one, **{name: half}).item() == expected, name
    assert weights.total(one, one, one, flow=half, still_parts=None).item() == 8.0
    assert weights.total(one, one, one, flow=half, still_parts=half).item() == 11.5
    with pytest.raises(ValueError, match="unknown loss terms"):
        weights.total(one, one, one, flows=half)


def _two_parts(
    masks: torch.Tensor, move: float, axis: int = 0
) -> tuple[MCSSegmentation, MCSSegmentation]:
    """Target and source segmentations of two parts: part 1 still, part 2 shifted by ``move``
    (normalised units) along ``axis`` (0: x, 1: y) between the frames; identity affines."""
    b = masks.shape[0]
    affine = torch.eye(2).expand(b, 2, 2, 2).clone()
    shift = torch.zeros(b, 2, 2)
    moved = shift.clone()
    moved[:, 1, axis] = move
    return MCSSegmentation(masks, shift, affine), MCSSegmentation(masks, moved, affine)


def test_still_parts_loss_takes_pixels_from_a_part_whose_own_motion_is_the_identity():
    """Three columns: background, a still part, a part moving 4 px. The loss is the still part's
    area share; its gradient lowers only that part's mask; a moving part costs nothing."""
    size, h = 33, 9
    masks = torch.zeros(2, 3, h, h)
    masks[:, 0, :, :3], masks[:, 1, :, 3:6], masks[:, 2, :, 6:] = 1.0, 1.0, 1.0
    masks.requires_grad_(True)
    target, source = _two_parts(masks, move=4 * 2 / (size - 1))
    loss = still_parts_loss(target, source, min_motion=1.0, size=(size, size))
    assert loss.item() == pytest.approx(3 / 9)  # the still part covers a third of the frame
    loss.backward()
    assert masks.grad[:, 1].gt(0).all() and masks.grad[:, 2].abs().max() == 0
    assert masks.grad[:, 0].abs().max() == 0
    target, source = _two_parts(masks.detach(), move=0.5 * 2 / (size - 1))  # both below 1 px
    half_still = still_parts_loss(target, source, min_motion=1.0, size=(size, size))
    assert half_still.item() == pytest.approx(3 / 9 + 0.5 * 3 / 9, rel=1e-4)
    with pytest.raises(ValueError, match="min_motion"):
        still_parts_loss(target, source, min_motion=0.0, size=(size, size))


def test_still_parts_loss_measures_motion_in_pixels_of_each_axis_of_a_wide_frame():
    """A 17 x 33 frame: 4 px down is 4 * 2 / 16 in normalised y (not 4 * 2 / 32): with 6 px
    to count as moving, the moving part is a third still."""
    masks = torch.zeros(1, 3, 9, 9)
    masks[:, 0, :, :3], masks[:, 1, :, 3:6], masks[:, 2, :, 6:] = 1.0, 1.0, 1.0
    target, source = _two_parts(masks, move=4 * 2 / 16, axis=1)
    loss = still_parts_loss(target, source, min_motion=6.0, size=(17, 33))
    assert loss.item() == pytest.approx(3 / 9 + (1 - 4 / 6) * 3 / 9, rel=1e-4)


def test_still_background_loss_favours_the_background_only_where_nothing_moves():
    """Left half still, right half moving 4 px: the loss is ~0 when the background owns the
    still half, whatever owns the moving half, and grows when a part takes the still half."""
    h = w = 33
    flow = torch.zeros(2, 2, h, w)
    flow[:, 0, :, 17:] = 4 * 2 / (w - 1)  # 4 px in normalised units
    background = torch.ones(2, 1, 11, 11)  # 3 px cells: columns 0-5 are (mostly) still
    background[..., 6:] = 0.0  # moving half: a part
    good = still_background_loss(background, flow, min_motion=1.0)
    assert good < 1e-4
    background[..., 6:] = 1.0  # the moving half does not count
    torch.testing.assert_close(still_background_loss(background, flow, 1.0), good)
    wrong = background.clone().requires_grad_(True)
    with torch.no_grad():
        wrong[..., :5] = 0.1
    loss = still_background_loss(wrong, flow, 1.0)
    assert loss > 1.5  # -log 0.1 = 2.3 over most of the still half
    loss.backward()
    assert wrong.grad[..., :5].lt(0).all() and wrong.grad[..., 7:].abs().max() == 0
    with pytest.raises(ValueError, match="min_motion"):
        still_background_loss(background, flow, 0.0)
    with pytest.raises(ValueError, match=r"\[B, 1, h, w\]"):
        still_background_loss(background.expand(2, 3, 11, 11), flow, 1.0)


# ---------------------------------------------------------------------------- flow targets
def test_dis_flow_recovers_a_translation_in_normalised_units():
    image = textured(72, 88)
    source, target = image[4:68, 4:84], image[4:68, 7:87]  # target(z) = source(z + 3 px in x)
    flow, weight = FlowTargets("medium")("pair", source, target)
    assert flow.shape == (2, 64, 80) and flow.dtype == torch.float32
    inner = flow[:, 8:-8, 8:-8]
    assert inner[0].median().item() == pytest.approx(3 * 2 / 79, rel=0.1)
    assert inner[1].abs().median().item() < 0.2 * 2 / 63
    assert weight.shape == (1, 64, 80) and weight[:, 8:-8, 8:-8].mean() > 0.9


def test_consistency_weight_masks_where_the_flows_disagree():
    forward = np.zeros((6, 8, 2), np.float32)
    forward[..., 0] = 2.0
    backward = -forward.copy()
    assert consistency_weight(forward, backward)[:, :6].all()  # columns 6-7 land outside
    backward[:, :4] = 0.0  # where forward lands in columns < 4 (x < 2) it is not undone
    weight = consistency_weight(forward, backward)
    assert not weight[:, :2].any() and weight[:, 3:6].all()
    unrelated = FlowTargets("medium")("pair", textured(64, 64, 5), textured(64, 64, 6))[1]
    assert unrelated.mean() < 0.5


def test_flow_targets_are_cached_and_reused():
    a, b = textured(32, 32, 1), textured(32, 32, 2)
    targets = FlowTargets("ultrafast", cache_size=2)
    first = targets(("clip", 0, 1), a, b)
    assert (targets.computed, targets.reused) == (1, 0)
    again = targets(("clip", 0, 1), a, b)
    assert (targets.computed, targets.reused) == (1, 1)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    targets(("clip", 1, 0), b, a)
    targets(("clip", 2, 0), b, a)  # the cache holds 2 pairs: the least recent one goes
    targets(("clip", 1, 0), b, a)
    targets(("clip", 0, 1), a, b)
    assert (targets.computed, targets.reused) == (4, 2)
    with pytest.raises(ValueError, match="flow preset"):
        FlowTargets("slowest")


def test_normalised_and_mirrored_flow():
    px = np.zeros((5, 9, 2), np.float32)
    px[..., 0], px[..., 1] = 4.0, 2.0  # 4 px right, 2 px down
    flow = normalised_flow(px)
    assert flow.shape == (2, 5, 9)
    assert flow[0, 0, 0].item() == pytest.approx(1.0) and flow[1, 0, 0].item() == pytest.approx(1.0)
    mirrored = hflip_flow(flow)
    assert torch.equal(mirrored[0], -flow[0].flip(-1)) and torch.equal(mirrored[1], flow[1])


def test_frame_pairs_carry_a_flow_that_warps_source_onto_target():
    """Mirrored, time-flipped or not, ``source(z + flow(z))`` matches the target."""
    image = textured(72, 80, 3)
    clip = np.stack([image[4:68, 4 + t : 68 + t] for t in range(5)])  # pans 1 px a frame
    data = McsFramePairs([clip], repeats=16, seed=0, jitter=0.0, flow=FlowTargets("medium"))
    seen = set()
    for index in range(16):
        item = data[(index, 0)]
        if item["times"][0] == item["times"][1]:
            continue
        mirror = not torch.equal(
            item["source"], torch.from_numpy(clip[item["times"][0]]).permute(2, 0, 1).float() / 255
        )
        seen.add((mirror, item["time_flip"]))
        inner = (slice(None), slice(8, -8), slice(8, -8))
        warped = warp_by_flow(item["source"], item["flow"])
        assert (warped - item["target"])[inner].abs().mean() < 0.3 * (
            item["source"] - item["target"]
        )[inner].abs().mean()
        assert item["flow_weight"].shape == (1, 64, 64) and item["flow_weight"].mean() > 0.8
    assert len(seen) >= 3, seen  # mirrored and time-flipped pairs were both checked
    assert data.flow.reused + data.flow.computed >= len(seen)


# ----------------------------------------------------------------------- still-image pairs
def test_still_pair_warp_of_the_source_reproduces_the_target():
    images = [textured(40, 40, s) for s in range(3)]
    data = McsStillPairs(images, seed=0, jitter=0.0)
    for index in range(3):
        item = data[(index, 5)]
        assert item["source"].shape == item["target"].shape == (3, 40, 40)
        inside = item["flow_weight"][0] > 0
        assert 0.5 < inside.float().mean() <= 1
        warped = warp_by_flow(item["source"], item["flow"])
        assert (warped - item["target"]).abs().amax(0)[inside].max() < 1e-4
        assert (item["source"] - item["target"]).abs().mean() > 0.01  # it did move
    assert torch.equal(data[(1, 5)]["target"], data[(1, 5)]["target"])
    assert not torch.equal(data[(1, 5)]["target"], data[(1, 6)]["target"])


def _affine_residual(flow: Tensor, where: Tensor) -> float:
    """Largest residual of the least-squares affine fit of ``flow [2, H, W]`` over ``where``."""
    h, w = flow.shape[-2:]
    z = coordinate_grid(h, w, "inclusive")[where]  # [N, 2]
    design = torch.cat([z, torch.ones(len(z), 1)], 1).double()
    target = flow.permute(1, 2, 0)[where].double()
    solution = torch.linalg.lstsq(design, target).solution
    return float((design @ solution - target).abs().max())


def test_still_pair_parts_move_on_their_own_and_the_warp_still_reproduces_the_target():
    images = [textured(48, 48, s) for s in range(2)]
    masks = np.zeros((3, 12, 12), np.float32)  # background, left part, right part
    masks[0] = 1
    masks[:, 3:9, 1:6] = np.array([0, 1, 0])[:, None, None]
    masks[:, 3:9, 6:11] = np.array([0, 0, 1])[:, None, None]
    kwargs = {"seed": 0, "jitter": 0.0, "local_jitter": 0.0}  # the warp alone is a similarity
    plain = McsStillPairs(images, **kwargs)
    parts = McsStillPairs(
        images, **kwargs, part_masks=[masks, masks.astype(np.float16)], part_move_prob=1.0
    )
    everywhere = torch.ones(48, 48, dtype=torch.bool)
    for index in range(2):
        item, alone = parts[(index, 3)], plain[(index, 3)]
        inside = item["flow_weight"][0] > 0
        warped = warp_by_flow(item["source"], item["flow"])
        assert (warped - item["target"]).abs().amax(0)[inside].max() < 1e-4
        assert _affine_residual(alone["flow"], everywhere) < 1e-4  # one warp: one affine
        assert _affine_residual(item["flow"], everywhere) > 0.01  # the two parts differ
        # far from both parts (the corners of the warped frame) the warp is unchanged
        assert torch.allclose(item["flow"][:, :2, :2], alone["flow"][:, :2, :2], atol=1e-5)
    still = McsStillPairs(images, **kwargs, part_masks=[masks, masks], part_move_prob=0.0)
    assert torch.allclose(still[(1, 3)]["flow"], plain[(1, 3)]["flow"], atol=1e-6)
    with pytest.raises(ValueError, match="part_move_prob"):
        McsStillPairs(images, part_masks=[masks, masks], part_move_prob=1.5)
    with pytest.raises(ValueError, match="part maps for 2 images"):
        McsStillPairs(images, part_masks=[masks])
    with pytest.raises(ValueError, match="at least one part"):
        McsStillPairs(images, part_masks=[masks[:1], masks[:1]])


def test_pair_mix_concatenates_and_drops_keys():
    stills = McsStillPairs([textured(32, 32, s) for s in range(2)], seed=0, jitter=0.0)
    videos = McsFramePairs([np.stack([textured(32, 32, 9)] * 3)], repeats=3, jitter=0.0)
    mix = PairMix([videos, stills], drop=("flow", "flow_weight"))
    assert len(mix) == 5
    assert mix[(2, 0)]["clip"] == 0 and mix[(3, 0)]["clip"] == -1
    assert torch.equal(mix[(4, 0)]["target"], stills[(1, 0)]["target"])
    batch = torch.utils.data.default_collate([mix[(i, 0)] for i in (0, 3)])
    assert set(batch) == {"source", "target", "clip", "times", "time_flip"}


# ------------------------------------------------------------------------ short real runs
def write_clip(path: Path, frames: np.ndarray) -> None:
    """``uint8 [T, H, W, 3]`` frames written as an MPEG-4 clip at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_panning_clip(path: Path, frames: int) -> None:
    """A 32x32 clip of a texture panning 2 px a frame."""
    image = textured(32, 32 + 2 * frames, 30)
    write_clip(path, np.stack([image[:, 2 * t : 32 + 2 * t] for t in range(frames)]))


def write_still_images(folder: Path, count: int = 4) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(textured(40, 48, 20 + i)).save(folder / f"img{i}.png")


def short_run(task: McsTask, steps: int, key: str) -> list[float]:
    torch.manual_seed(0)
    module = task.build_model().train()
    data = task.train_dataset()
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(4)])
    ((opt, _),) = task.build_optimizers(module, steps)
    values = []
    for step in range(steps):
        loss, logs = task.training_step(module, batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(logs[key])
    return values


def test_short_run_on_still_images_with_flow_lowers_the_flow_loss(tmp_path: Path):
    """Flow supervision alone (reconstruction kept) on pairs from still images: 20 Adam steps
    lower the flow term; the still images come from a folder (recursive) as task_args."""
    write_still_images(tmp_path / "stills" / "sub")
    args = {
        "video_dir": str(tmp_path / "videos"),
        "still_images": str(tmp_path / "stills"),
        "size": 32,
        "num_parts": 3,
        "repeats": 1,
        "jitter": 0.0,
        "lr": 1e-3,
        "weights": {"flow": 10.0},
        "model": "mcs_test",
    }
    write_panning_clip(tmp_path / "videos" / "a.mp4", frames=6)
    task = McsTask(args, seed=0)
    data = task.train_dataset()
    assert isinstance(data, PairMix) and len(data) == 1 + 4
    assert "flow" in data[(0, 0)] and data[(4, 0)]["clip"] == -1
    values = short_run(task, 20, "flow")
    assert sum(values[-3:]) / 3 < 0.8 * sum(values[:3]) / 3, values


def test_still_images_and_flow_preset_are_checked(tmp_path: Path):
    write_panning_clip(tmp_path / "a.mp4", frames=3)
    base = {"video_dir": str(tmp_path), "size": 32, "model": "mcs_test"}
    with pytest.raises(ValueError, match="flow_preset"):
        McsTask({**base, "flow_preset": "slowest"}, seed=0)
    with pytest.raises((ValueError, FileNotFoundError), match="still_images"):
        McsTask({**base, "still_images": str(tmp_path / "missing")}, seed=0)


HAS_FACES = (
    shared_data_root() is not None
    and (shared_data_root() / "faces300w").is_dir()
    and (shared_data_root() / "talking_face").is_dir()
)


@pytest.mark.skipif(not HAS_FACES, reason="../shared/data faces300w / talking_face not available")
def test_face_config_trains_on_stills_and_the_clip_and_validates_on_held_out_faces(tmp_path):
    """The ``mcs_faces`` recipe at tiny sizes: talking-face clip + 300-W still pairs with flow,
    landmark-error validation on the held-out faces, samples made from held-out faces."""
    cfg = load_config(resolve_config("mcs_faces"), [])
    args = {**cfg.task_args, "size": 32, "num_parts": 3, "model": "mcs_test", "model_kwargs": {}}
    assert args["still_foreground"] == "boundary"
    args["still_foreground"] = "none"  # the saliency of 966 faces takes a minute
    task = McsTask(args, seed=0)
    assert task.videos[0].name == "tpsmm_driving.mp4" and task.val_protocol() == "faces300w"
    data = task.train_dataset()
    assert len(data) == 200 + 966  # clip pairs per epoch + one pair per training face
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in (0, 199, 200, 1165)])
    assert batch["flow"].shape == (4, 2, 32, 32) and (batch["clip"] == -1).sum() == 2
    torch.manual_seed(0)
    module = task.build_model()
    loss, logs = task.training_step(module, batch, 0)
    assert torch.isfinite(loss) and logs["flow"] > 0
    model = task.release_model(module).eval()
    scores = task.validate(model)
    assert 0 < scores["landmark_error_iod_pct"] < 200
    assert scores["score"] == -scores["landmark_error_iod_pct"]
    task.write_samples(model, tmp_path / "samples.png")
    width, height = Image.open(tmp_path / "samples.png").size
    assert width == height >= 4 * 32  # 4 held-out pairs of 4 tiles
    info = task.card_info()
    assert info["data_source"] == ["faces300w", "talking_face"]
    assert "talking_face clips" in info["summary"] and "/" not in info["summary"]
    assert info["datasets"] == ["300-W", "talking-face-clip"]
    terms = licence_text("mcs_faces", info["data_source"])
    assert "300-W" in terms and "Talking-head demo clip" in terms
    with pytest.raises(ValueError, match="val_dataset"):
        McsTask({**args, "val_dataset": "celeba"}, seed=0)


def panning_clip_args(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Task args of a tiny MCS model on one 6-frame panning clip under ``tmp_path``."""
    write_panning_clip(tmp_path / "videos" / "a.mp4", frames=6)
    base = {"video_dir": str(tmp_path / "videos"), "size": 32, "num_parts": 3, "repeats": 4}
    return {**base, "model": "mcs_test", **overrides}


def test_flow_only_steps_skip_the_generator_then_train_both(tmp_path: Path):
    """ "Flow first, then both": before ``flow_only_steps`` the generator gets no gradient and
    the reconstruction is not computed; after it, both are trained."""
    args = panning_clip_args(tmp_path, weights={"flow": 10.0}, flow_only_steps=5)
    task = McsTask(args, seed=0)
    module = task.build_model()
    data = task.train_dataset()
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(2)])
    generator = task.release_model(module).generator
    for step, trained in ((4, False), (5, True)):
        module.zero_grad(set_to_none=True)
        loss, logs = task.training_step(module, batch, step)
        loss.backward()
        assert (logs["reconstruction"] > 0) == trained and logs["flow"] > 0
        assert (generator.final.weight.grad is not None) == trained
        assert task.release_model(module).segmenter.shift_head.weight.grad.abs().sum() > 0
    for bad in ({"flow_only_steps": 5, "weights": {}}, {"flow_only_steps": -1}):
        with pytest.raises(ValueError, match="flow_only_steps"):
            McsTask({**args, **bad}, seed=0)


def test_short_run_with_still_background_lowers_it_and_needs_min_motion(tmp_path: Path):
    """``weights.still_background`` alone (no flow term): DIS targets are still computed, 20
    Adam steps lower the term; without ``flow_min_motion`` the option is refused."""
    args = panning_clip_args(
        tmp_path, jitter=0.0, lr=1e-3, flow_min_motion=1.0, weights={"still_background": 10.0}
    )
    task = McsTask(args, seed=0)
    assert "flow" in task.train_dataset()[(0, 0)]
    values = short_run(task, 20, "still_background")
    assert sum(values[-3:]) / 3 < 0.8 * sum(values[:3]) / 3, values
    with pytest.raises(ValueError, match="flow_min_motion"):
        McsTask({**args, "flow_min_motion": 0.0}, seed=0)


def test_short_run_with_still_parts_lowers_it(tmp_path: Path):
    """``weights.still_parts`` on the panning clip: 20 Adam steps lower the still parts' area
    (needs no flow targets); a non-positive ``part_min_motion`` is refused."""
    args = panning_clip_args(tmp_path, jitter=0.0, lr=1e-3, weights={"still_parts": 10.0})
    task = McsTask(args, seed=0)
    assert "flow" not in task.train_dataset()[(0, 0)]
    values = short_run(task, 20, "still_parts")
    assert sum(values[-3:]) / 3 < 0.8 * sum(values[:3]) / 3, values
    with pytest.raises(ValueError, match="part_min_motion"):
        McsTask({**args, "part_min_motion": 0}, seed=0)


def test_video_foregrounds_are_cached_and_follow_the_target_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``weights.background``: each frame's GrabCut foreground is computed once (a second call
    reads the ``datasets`` cache), pairs carry the target frame's map mirrored with it, and a
    short run lowers the background term."""
    args = panning_clip_args(tmp_path, jitter=0.0, lr=1e-3, weights={"background": 10.0})
    task = McsTask(args, seed=0)
    clip = task.frames("train")[0]
    maps = video_foregrounds(clip, "grabcut")
    assert maps.shape == (6, 32, 32) and maps.dtype == np.uint8
    np.testing.assert_array_equal(maps[2], np.round(unsupervised_foreground(clip[2]) * 255))
    calls = []
    monkeypatch.setattr(
        "copart_hub.training.data.unsupervised_foreground", lambda *a: calls.append(a)
    )
    np.testing.assert_array_equal(video_foregrounds(clip, "grabcut"), maps)
    monkeypatch.undo()
    assert not calls  # served from the cache
    pairs = McsFramePairs([clip], repeats=8, seed=0, jitter=0.0, foregrounds=[maps])
    maps[:, :, :16] = 0  # a map that is not mirror-symmetric
    maps[:, :, 16:] = np.arange(6, dtype=np.uint8)[:, None, None] * 40
    mirrored = set()
    for i in range(8):
        item = pairs[(i, 0)]
        t = int(item["times"][1])
        frame = torch.from_numpy(clip[t]).permute(2, 0, 1).float() / 255
        flip = not torch.allclose(item["target"], frame)
        fg = torch.from_numpy(maps[t]).float()[None] / 255
        torch.testing.assert_close(item["foreground"], fg.flip(-1) if flip else fg)
        mirrored.add(flip)
    assert mirrored == {True, False}
    with pytest.raises(ValueError, match="one foreground map per frame"):
        McsFramePairs([clip], foregrounds=[maps[:3]])
    values = short_run(task, 20, "background")
    assert sum(values[-3:]) / 3 < 0.8 * sum(values[:3]) / 3, values
    with pytest.raises(ValueError, match="video_foreground"):
        McsTask({**args, "video_foreground": "masks"}, seed=0)
    with pytest.raises(ValueError, match="still_foreground"):
        McsTask({**args, "still_images": "faces300w", "still_foreground": "none"}, seed=0)


def test_teacher_foregrounds_are_its_grabcut_foreground_cached_per_weights(
    tmp_path: Path, tiny_part_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
):
    """``foreground_teacher`` (self-training): each frame's map is the teacher's foreground
    refined by GrabCut (label != 0 of ``PartSegmenter(grabcut=True)``), cached under a hash of
    its weights: the same weights read the cache, other weights get their own maps, and the
    training pairs carry them."""
    frames = np.full((6, 32, 32, 3), 128, np.uint8)
    for t in range(6):  # a red square moving right on grey
        frames[t, 10:22, 6 + 2 * t : 18 + 2 * t] = (220, 30, 30)
    write_clip(tmp_path / "videos" / "a.mp4", frames)
    args = {"video_dir": str(tmp_path / "videos"), "size": 32, "num_parts": 3, "repeats": 4}
    args = {**args, "model": "mcs_test", "jitter": 0.0}
    clip = McsTask(args, seed=0).frames("train")[0]
    with torch.no_grad():  # red pixels are part 1, the rest background
        tiny_part_model.head.weight.zero_()
        tiny_part_model.head.bias.copy_(torch.tensor([0.0, 0.0, -100.0, -100.0]))
        tiny_part_model.head.weight[1, 0] = 40.0
    tiny_part_model.save_pretrained(tmp_path / "teacher")
    maps = video_foregrounds(clip, TeacherForeground(tmp_path / "teacher"))
    direct = PartSegmenter(tiny_part_model, grabcut=True)
    expected = [direct(Image.fromarray(clip[t])).labels != 0 for t in range(len(clip))]
    np.testing.assert_array_equal(maps, np.stack(expected).astype(np.uint8) * 255)
    assert 0 < maps.mean() < 255  # a foreground that is neither empty nor everything
    again = TeacherForeground(tmp_path / "teacher")
    monkeypatch.setattr(again, "segmenter", None)  # computing would fail: served from cache
    np.testing.assert_array_equal(video_foregrounds(clip, again), maps)
    with torch.no_grad():
        tiny_part_model.head.bias[0] = 200.0  # everything background
    tiny_part_model.save_pretrained(tmp_path / "other")
    assert not video_foregrounds(clip, TeacherForeground(tmp_path / "other")).any()
    task = McsTask(
        {**args, "weights": {"background": 1.0}, "foreground_teacher": str(tmp_path / "teacher")},
        seed=0,
    )
    item = task.train_dataset()[(0, 0)]
    t = int(item["times"][1])
    fg = torch.from_numpy(maps[t]).float()[None] / 255
    assert any(torch.equal(item["foreground"], f) for f in (fg, fg.flip(-1)))
    for bad in (3, ""):
        with pytest.raises(ValueError, match="foreground_teacher"):
            McsTask({**args, "foreground_teacher": bad}, seed=0)


def test_still_part_teacher_gives_each_still_image_its_part_maps(
    tmp_path: Path, tiny_part_model: torch.nn.Module
):
    """``still_part_teacher``: the teacher's soft part maps of each still image, at a quarter of
    the training size, move the parts of its still pairs; bad values are refused."""
    write_still_images(tmp_path / "stills")
    write_panning_clip(tmp_path / "videos" / "a.mp4", frames=3)
    tiny_part_model.save_pretrained(tmp_path / "teacher")
    args = {"video_dir": str(tmp_path / "videos"), "still_images": str(tmp_path / "stills")}
    args = {**args, "size": 32, "num_parts": 3, "model": "mcs_test", "jitter": 0.0}
    task = McsTask({**args, "still_part_teacher": str(tmp_path / "teacher")}, seed=0)
    images, _ = task.still_images()
    maps = task.still_parts(images)
    direct = PartSegmenter(tiny_part_model)(Image.fromarray(images[2])).masks_at((8, 8))
    assert len(maps) == 4 and maps[2].shape == (tiny_part_model.num_parts + 1, 8, 8)
    np.testing.assert_allclose(maps[2], direct, atol=2e-3)  # float16
    stills = task.train_dataset().parts[1]
    assert all(np.array_equal(a, b) for a, b in zip(stills.part_masks, maps, strict=True))
    assert McsTask(args, seed=0).still_parts(images) is None
    moves = {"part_translation": 0.2, "part_move_prob": 0.5}
    task = McsTask({**args, "still_part_teacher": "x", "still_part_motion": moves}, seed=0)
    task.still_parts = lambda images: maps  # the teacher's maps, as above
    stills = task.train_dataset().parts[1]
    assert stills.part_move_prob == 0.5 and stills.part_motion[2] == 0.2
    with pytest.raises(ValueError, match="still_part_motion: unknown keys"):
        McsTask({**args, "still_part_motion": {"part_shift": 0.1}}, seed=0)
    with pytest.raises(ValueError, match="still_part_teacher"):
        McsTask({**args, "still_part_teacher": 3}, seed=0)
    with pytest.raises(ValueError, match="still_part_teacher moves the parts of still_images"):
        McsTask({**args, "still_images": None, "still_part_teacher": "scops_faces300w"}, seed=0)


def test_still_pair_moves_only_the_foreground_in_front_of_a_static_background():
    image = textured(40, 40, 7)
    foreground = np.zeros((40, 40), np.uint8)
    foreground[10:30, 10:30] = 255
    data = McsStillPairs([image], [foreground], seed=0, jitter=0.0, flip_p=0.0)
    item = data[(0, 3)]
    still = item["flow"].abs().sum(0) == 0  # where nothing moves ...
    assert still[:3].all() and still[:, :3].all() and still.float().mean() > 0.3
    assert torch.equal(item["target"][:, still], item["source"][:, still])  # ... T = S
    moving = item["flow"].abs().sum(0) > 0
    assert moving[15:25, 15:25].all()
    warped = warp_by_flow(item["source"], item["flow"])
    assert (warped - item["target"]).abs().amax(0)[item["flow_weight"][0] > 0].max() < 0.05
    with pytest.raises(ValueError, match="2 foreground maps for 1 images"):
        McsStillPairs([image], [foreground, foreground])
    with pytest.raises(ValueError, match="foreground"):
        McsStillPairs([image], [foreground[:20]])[(0, 0)]


def test_flow_inputs_are_checked_and_the_cache_can_be_off():
    target, source, flow = two_part_scene()
    grid = part_motion_grid(target, source)
    with pytest.raises(ValueError, match="weight must be"):
        flow_loss(grid, flow, torch.ones(1, 16, 16))
    with pytest.raises(ValueError, match="flow"):
        flow_loss(grid, flow.expand(2, -1, -1, -1))
    off = FlowTargets("ultrafast", cache_size=0)
    a, b = textured(32, 32, 1), textured(32, 32, 2)
    first, again = off("k", a, b), off("k", a, b)
    assert (off.computed, off.reused) == (2, 0) and torch.equal(first[0], again[0])
    with pytest.raises(ValueError, match="cache_size"):
        FlowTargets(cache_size=-1)
    with pytest.raises(ValueError, match="min_motion"):
        FlowTargets(min_motion=-1)
    forward = np.full((4, 6, 2), 0.0, np.float32)
    forward[..., 0] = 3.0  # columns 3-5 land outside the 6-wide frame
    assert consistency_weight(forward, -forward)[:, :3].all()
    assert not consistency_weight(forward, -forward)[:, 3:].any()


def test_negative_or_non_numeric_loss_weights_are_refused(tmp_path: Path):
    write_panning_clip(tmp_path / "a.mp4", frames=3)
    base = {"video_dir": str(tmp_path), "size": 32, "model": "mcs_test"}
    for weights in ({"flow": -1.0}, {"ssim": "high"}, {"perceptual": [1, -1, 1, 1, 1]}):
        with pytest.raises(ValueError, match="numbers >= 0"):
            McsTask({**base, "weights": weights}, seed=0)


def test_min_motion_weights_only_what_moves():
    """With ``min_motion``, a still background gets no flow weight, a moving square full."""
    still = textured(64, 64, 11)
    moved = still.copy()
    square = textured(80, 80, 12)[:20, :20]
    still[20:40, 20:40], moved[20:40, 23:43] = square, square  # the square moves 3 px right
    weight = FlowTargets("medium", min_motion=1.0)("p", still, moved)[1]
    assert weight[0, 24:36, 28:38].mean() > 0.8  # inside the moving square
    assert weight[0, 50:, :].mean() < 0.2 and weight[0, :10, :].mean() < 0.2  # still background
    plain = FlowTargets("medium")("p", still, moved)[1]
    assert plain[0, 50:, :].mean() > 0.8


def test_short_run_with_the_generators_own_encoder_as_features_lowers_the_reconstruction(
    tmp_path: Path,
):
    """``feature_net="encoder"``: one default layer weight per encoder block, the EMA copy moves
    with training, and 20 Adam steps lower the reconstruction term; a weight list of the wrong
    length is refused."""
    write_panning_clip(tmp_path / "a.mp4", frames=6)
    args = {
        "video_dir": str(tmp_path),
        "size": 32,
        "num_parts": 3,
        "repeats": 4,
        "jitter": 0.0,
        "lr": 1e-3,
        "feature_net": "encoder",
        "ema_decay": 0.99,
        "model": "mcs_test",
    }
    task = McsTask(args, seed=0)
    module = task.build_model()
    teacher = module.perceptual.features
    assert module.perceptual.layer_weights == (10.0,) * len(teacher.stages) == (10.0,) * 3
    start = [p.clone() for p in teacher.parameters()]
    values = short_run(task, 20, "reconstruction")
    assert sum(values[-3:]) / 3 < 0.8 * sum(values[:3]) / 3, values
    with torch.no_grad():  # as if trained: the training step moves the copy towards it
        for p in module.model.generator.parameters():
            p.add_(0.1)
    batch = torch.utils.data.default_collate([task.train_dataset()[(0, 0)]] * 2)
    task.training_step(module.train(), batch, 0)
    assert any(not torch.equal(a, b) for a, b in zip(start, teacher.parameters(), strict=True))
    wrong = McsTask({**args, "weights": {"perceptual": [1.0, 1.0]}}, seed=0)
    with pytest.raises(ValueError, match="gives 3 feature maps"):
        wrong.build_model()


def test_copy_paste_puts_both_frames_on_one_still_background(tmp_path: Path):
    """``paste_backgrounds``: both frames of a pasted pair keep their own foreground pixels and
    show the same background crop everywhere else (a still scene); ``paste_prob=0`` changes
    nothing; bad arguments are refused and the backgrounds reach the card."""
    green = np.zeros((50, 70, 3), np.uint8)
    green[..., 1] = 255
    (tmp_path / "bg").mkdir()
    Image.fromarray(green).save(tmp_path / "bg" / "green.png")
    args = panning_clip_args(tmp_path, jitter=0.0, paste_backgrounds=str(tmp_path / "bg"))
    task = McsTask({**args, "paste_prob": 1.0}, seed=0)
    clip = task.frames("train")[0]
    maps = np.zeros((6, 32, 32), np.uint8)
    maps[:, 8:24, 4:20] = 255  # not mirror-symmetric
    backgrounds = BackgroundCrops(str(tmp_path / "bg"), 32)
    plain = McsFramePairs([clip], repeats=8, seed=0, jitter=0.0, foregrounds=[maps])
    never = McsFramePairs([clip], 8, 0, 0.0, foregrounds=[maps], backgrounds=backgrounds)
    pasted = McsFramePairs(
        [clip], 8, 0, 0.0, foregrounds=[maps], backgrounds=backgrounds, paste_prob=1.0
    )
    for i in range(8):
        a, b, c = plain[(i, 0)], never[(i, 0)], pasted[(i, 0)]
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["target"], b["target"])
        inside = a["foreground"][0] > 0.99
        for frame in ("source", "target"):
            torch.testing.assert_close(c[frame][:, inside], a[frame][:, inside])
            outside = c[frame][:, ~inside]
            assert (outside[1] > 0.99).all() and (outside[0] < 0.01).all()
    with pytest.raises(ValueError, match="foreground maps"):
        McsFramePairs([clip], backgrounds=backgrounds)
    with pytest.raises(ValueError, match="paste_prob"):
        McsTask({**args, "paste_prob": 1.5}, seed=0)
    with pytest.raises(ValueError, match="paste_backgrounds"):
        McsTask({**args, "paste_backgrounds": str(tmp_path / "missing")}, seed=0)
    card = McsTask({"paste_backgrounds": "bsds500"}, seed=0).card_info()
    assert card["datasets"] == ["Tai-Chi-HD", "BSDS500"] and "Berkeley" in card["data_licence"]
    assert "Berkeley" in licence_text("mcs_taichi", card["data_source"])  # its LICENSE.md


def test_teacher_part_maps_are_its_soft_masks_cached_per_weights_and_pixels(
    tmp_path: Path, tiny_part_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
):
    """``still_part_teacher``'s maps: the teacher's soft masks at ``side``, computed once; the
    same weights and pixels read the cache, other pixels or weights are computed again."""
    from copart_hub.training import data

    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    tiny_part_model.save_pretrained(tmp_path / "teacher")
    maps = data.teacher_part_maps(images, tmp_path / "teacher", side=6)
    direct = PartSegmenter(tiny_part_model)
    for image, got in zip(images, maps, strict=True):
        expected = direct(Image.fromarray(image)).masks_at((6, 6)).astype(np.float16)
        assert got.dtype == np.float16 and got.shape == (4, 6, 6)
        np.testing.assert_array_equal(got, expected)
    computed = []
    rows = data._part_map_rows
    monkeypatch.setattr(data, "_part_map_rows", lambda **k: computed.append(1) or rows(**k))
    np.testing.assert_array_equal(data.teacher_part_maps(images, tmp_path / "teacher", 6), maps)
    assert not computed  # served from the cache
    images[1] = 255 - images[1]
    data.teacher_part_maps(images, tmp_path / "teacher", 6)
    with torch.no_grad():
        tiny_part_model.head.bias[0] = 50.0
    tiny_part_model.save_pretrained(tmp_path / "other")
    other = data.teacher_part_maps(images, tmp_path / "other", 6)
    assert len(computed) == 2 and not np.array_equal(other[0], maps[0])
