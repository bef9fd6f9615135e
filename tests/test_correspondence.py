"""Descriptor matching (DVE): points carried between images, the task's step and arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import copart_hub
from copart_hub import create_model
from copart_hub.correspondence import DescriptorMatcher, match_points
from copart_hub.ops.coordinates import coordinate_grid


def _codes(h: int = 8, w: int = 10, c: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    return F.normalize(torch.randn(c, h, w), dim=0)


def test_match_points_follows_a_known_shift():
    """The target is the source moved two columns right: a target point lands two columns
    to its left in the source."""
    source = _codes()
    target = source.roll(2, dims=2)
    grid = coordinate_grid(8, 10, "inclusive")
    points = grid[2:6, 3:8].reshape(-1, 2)  # away from the wrapped columns
    moved = match_points(source, target, points, temperature=0.01)
    expected = grid[2:6, 1:6].reshape(-1, 2)
    torch.testing.assert_close(moved, expected, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="must be \\[C, h, w\\]"):
        match_points(source, target[:3], points)
    with pytest.raises(ValueError, match="points must be \\[N, 2\\]"):
        match_points(source, target, points[:, :1])


def test_matcher_maps_pixels_between_image_sizes_and_rejects_other_models():
    model = create_model("dve_small", width=2, descriptor_dim=8, input_size=(16, 24))
    matcher = DescriptorMatcher(model, device="cpu")
    source, target = Image.new("RGB", (101, 51)), Image.new("RGB", (201, 101))
    points = np.array([[0.0, 0.0], [200.0, 100.0], [100.0, 50.0]])
    still = matcher.transfer_points(source, target, points, motion=False)
    np.testing.assert_allclose(still, [[0, 0], [100, 50], [50, 25]], atol=1e-4)
    code = _codes(8, 12, 64)
    matcher.describe = lambda image: code  # the same descriptors: each point stays put
    on_grid = np.array([[200 * 4 / 11, 100 * 3 / 7], [200 * 9 / 11, 100 * 6 / 7]])
    moved = matcher.transfer_points(source, target, on_grid)
    np.testing.assert_allclose(moved, on_grid / 2, atol=1e-2)
    del matcher.describe
    assert matcher.describe(source).shape == (8, 8, 12)
    with pytest.raises(TypeError, match="DenseDescriptorNet"):
        DescriptorMatcher(create_model("ssn_pix"))


def test_descriptor_net_shapes_and_clear_errors():
    model = create_model("dve_small", width=2, descriptor_dim=5)
    out = model(torch.rand(2, 3, 16, 24))
    assert out.shape == (2, 5, 8, 12)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 8, 12))
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.rand(1, 3, 20, 24))
    with pytest.raises(ValueError, match="\\[B, 3, H, W\\]"):
        model(torch.rand(3, 16, 16))


def test_dve_task_step_has_gradient_and_checks_its_arguments():
    from copart_hub.training.tasks import get_task

    task = get_task("dve")({"size": 16, "model_kwargs": {"width": 2, "descriptor_dim": 8}}, 0)
    model = task.build_model().train()
    loss, logs = task.training_step(model, {"image": torch.rand(3, 3, 16, 16)}, step=1)
    loss.backward()
    assert torch.isfinite(loss) and logs["dense_equivariance"] == loss.item()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    images = torch.rand(3, 3, 16, 16)
    same = [task.training_step(model, {"image": images}, step=s)[0].item() for s in (5, 5, 6)]
    assert same[0] == same[1] != same[2]  # the warps are drawn from the step
    with pytest.raises(ValueError, match="multiple of 8"):
        get_task("dve")({"size": 20}, 0)
    with pytest.raises(ValueError, match="unknown dve task_args"):
        get_task("dve")({"exchnge": False}, 0)


def test_descriptor_alignment_moves_each_part_by_its_matched_affine():
    """Left half of the target matches two columns to the left in the source, the right half
    in place: the part motion grid of the aligned segmentation follows each half's motion."""
    from copart_hub.correspondence import descriptor_alignment
    from copart_hub.models.mcs import MCSSegmentation, part_motion_grid

    h, w = 8, 12
    source = _codes(h, w, 64)
    target = source.clone()
    target[:, :, 2:6] = source[:, :, 0:4]  # columns 2-5 came from 2 columns to the left
    masks = torch.zeros(1, 3, h, w)
    masks[0, 1, :, 2:6], masks[0, 2, :, 7:] = 1, 1  # part 1: the moved band, part 2: still
    masks[0, 0] = 1 - masks[0, 1:].sum(0)
    torch.manual_seed(1)
    seg_target = MCSSegmentation(masks, torch.rand(1, 2, 2) - 0.5, torch.eye(2).repeat(1, 2, 1, 1))
    seg_source = MCSSegmentation(masks, torch.zeros(1, 2, 2), torch.eye(2).repeat(1, 2, 1, 1))
    aligned = descriptor_alignment(seg_source, seg_target, source[None], target[None], ridge=0)
    grid = part_motion_grid(seg_target, aligned)[0]  # [h, w, 2]: where each target pixel goes
    z = coordinate_grid(h, w, "inclusive")
    step = 2 / (w - 1)
    torch.testing.assert_close(grid[:, 2:6, 0], z[:, 2:6, 0] - 2 * step, atol=0.02, rtol=0)
    torch.testing.assert_close(grid[:, 8:, :], z[:, 8:, :], atol=0.02, rtol=0)
    torch.testing.assert_close(grid[:, 2:6, 1], z[:, 2:6, 1], atol=0.02, rtol=0)


def test_descriptor_net_round_trips_with_a_feature_extraction_card(tmp_path):
    model = create_model("dve_small", width=2, descriptor_dim=4, input_size=(16, 16)).eval()
    model.save_pretrained(tmp_path / "dve")
    card = (tmp_path / "dve" / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in card and "part-segmentation" not in card
    loaded = copart_hub.from_pretrained(tmp_path / "dve")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.input_size == (16, 16)


def test_descriptor_alignment_composes_a_non_identity_part_affine():
    """The target is the source turned a quarter turn, and the target part's own affine is not
    the identity: the aligned motion still takes each target position to where its descriptor
    sits in the source (A_S = A A_T, p_S = A p_T + b)."""
    from copart_hub.correspondence import descriptor_alignment
    from copart_hub.models.mcs import MCSSegmentation, part_motion_grid

    n = 9
    source = _codes(n, n, 64)
    target = torch.rot90(source, 1, dims=(1, 2))
    masks = torch.zeros(1, 2, n, n)
    masks[0, 1] = 1  # one part: the whole image
    a_t = torch.tensor([[[[1.3, 0.4], [-0.2, 0.8]]]])
    seg_target = MCSSegmentation(masks, torch.tensor([[[0.2, -0.1]]]), a_t)
    seg_source = MCSSegmentation(masks, torch.zeros(1, 1, 2), torch.eye(2)[None, None])
    aligned = descriptor_alignment(seg_source, seg_target, source[None], target[None], ridge=0)
    grid = part_motion_grid(seg_target, aligned)[0].reshape(-1, 2)
    z = coordinate_grid(n, n, "inclusive").reshape(-1, 2)
    same = target.flatten(1).T @ source.flatten(1)  # [target, source] cosine
    expected = z[same.argmax(1)]
    assert (same.max(1).values > 0.999).all()  # every target descriptor is a source one
    torch.testing.assert_close(grid, expected, atol=1e-3, rtol=0)


def test_matcher_describes_a_videos_source_once():
    """A swap describes its source and each frame: the source object is described once."""
    model = create_model("dve_small", width=2, descriptor_dim=4, input_size=(16, 16))
    matcher = DescriptorMatcher(model, device="cpu")
    calls = []
    forward = model.forward
    model.forward = lambda x: calls.append(1) or forward(x)
    source = Image.new("RGB", (20, 20), (200, 10, 10))
    for value in range(3):  # three frames
        matcher.describe(source)
        matcher.describe(Image.new("RGB", (20, 20), (value, value, value)))
    assert len(calls) == 4  # the source once, each frame once
