"""Coordinate grids, SCOPS part centres / concentration, MCS spatial softmax / soft-argmax."""

from __future__ import annotations

import pytest
import torch

from copart_hub.ops.coordinates import (
    concentration_loss,
    coordinate_axis,
    coordinate_grid,
    part_centres,
    soft_argmax,
    spatial_softmax,
)


def delta(b: int, k: int, h: int, w: int, row: int, col: int) -> torch.Tensor:
    maps = torch.zeros(b, k, h, w, dtype=torch.float64)
    maps[..., row, col] = 1
    return maps


def brute_concentration(p: torch.Tensor, eps: float) -> float:
    """Loops over the SCOPS definition with the half-open grid (x from W, y from H)."""
    b, k, h, w = p.shape
    total = 0.0
    for bi in range(b):
        for ki in range(k):
            m = (p[bi, ki] + eps) / (p[bi, ki] + eps).sum()
            cx = sum(m[i, j] * (2 * j / w - 1) for i in range(h) for j in range(w))
            cy = sum(m[i, j] * (2 * i / h - 1) for i in range(h) for j in range(w))
            total += sum(
                m[i, j] * ((2 * j / w - 1 - cx) ** 2 + (2 * i / h - 1 - cy) ** 2)
                for i in range(h)
                for j in range(w)
            )
    return float(total) / b**2


@pytest.mark.parametrize(
    ("convention", "expected"),
    [
        ("half_open", [-1.0, -0.5, 0.0, 0.5]),
        ("inclusive", [-1.0, -1 / 3, 1 / 3, 1.0]),
        ("pixel_centres", [-0.75, -0.25, 0.25, 0.75]),
    ],
)
def test_axis_conventions(convention, expected):
    axis = coordinate_axis(4, convention, dtype=torch.float64)
    assert torch.allclose(axis, torch.tensor(expected, dtype=torch.float64))


def test_grid_is_x_along_width_y_along_height():
    grid = coordinate_grid(3, 5, "inclusive")
    assert grid.shape == (3, 5, 2)
    assert torch.allclose(grid[1, 4], torch.tensor([1.0, 0.0]))
    assert torch.allclose(grid[2, 0], torch.tensor([-1.0, 1.0]))


def test_centre_of_delta_on_non_square_map():
    # H=6, W=10, pixel (row 2, col 7): x = 7/10*2-1, y = 2/6*2-1 (a transposed grid fails here)
    maps = delta(1, 1, 6, 10, row=2, col=7)
    c = part_centres(maps, eps=0.0)
    assert c.shape == (1, 1, 2)
    assert torch.allclose(c[0, 0], torch.tensor([0.4, -1 / 3], dtype=torch.float64))
    c = part_centres(maps, eps=0.0, convention="inclusive")
    assert torch.allclose(c[0, 0], torch.tensor([7 / 9 * 2 - 1, -0.2], dtype=torch.float64))


def test_centre_eps_smoothing_pulls_towards_the_grid_mean():
    h, w, eps = 4, 6, 1e-3
    maps = delta(1, 1, h, w, row=0, col=0)
    grid_mean = coordinate_grid(h, w, "half_open", dtype=torch.float64).mean((0, 1))
    expected = (torch.tensor([-1.0, -1.0], dtype=torch.float64) + eps * h * w * grid_mean) / (
        1 + eps * h * w
    )
    assert torch.allclose(part_centres(maps, eps=eps)[0, 0], expected)


def test_concentration_of_delta():
    maps = delta(2, 3, 5, 7, row=1, col=4)
    assert concentration_loss(maps, eps=0.0).item() == pytest.approx(0.0, abs=1e-12)
    # with the default eps the value is small but not 0: compare with the definition
    expected = brute_concentration(maps, 1e-3)
    assert expected > 0
    assert concentration_loss(maps).item() == pytest.approx(expected, rel=1e-9)


def test_concentration_matches_definition_and_grows_with_spread():
    torch.manual_seed(0)
    maps = torch.rand(2, 2, 4, 5, dtype=torch.float64)
    assert concentration_loss(maps).item() == pytest.approx(brute_concentration(maps, 1e-3))
    sharp = delta(1, 1, 8, 8, 3, 3) + 0.5 * delta(1, 1, 8, 8, 3, 4)
    spread = delta(1, 1, 8, 8, 0, 0) + 0.5 * delta(1, 1, 8, 8, 7, 7)
    assert concentration_loss(spread).item() > 10 * concentration_loss(sharp).item()


def test_concentration_divides_by_batch_squared():
    torch.manual_seed(0)
    maps = torch.rand(1, 2, 4, 5, dtype=torch.float64)
    single = concentration_loss(maps)
    double = concentration_loss(torch.cat([maps, maps]))
    assert double.item() == pytest.approx(single.item() / 2)


def test_concentration_gradient_flows():
    logits = torch.randn(2, 4, 6, 5, requires_grad=True)
    concentration_loss(torch.softmax(logits, 1)[:, 1:]).backward()
    assert logits.grad is not None and logits.grad[:, 1:].abs().sum() > 0


def test_spatial_softmax_and_soft_argmax():
    heat = torch.zeros(2, 3, 5, 8)
    heat[:, :, 4, 2] = 5.0  # sharp at temperature 0.1: exp(50) dominates
    probs = spatial_softmax(heat)
    assert torch.allclose(probs.sum((-2, -1)), torch.ones(2, 3))
    xy = soft_argmax(probs)
    assert xy.shape == (2, 3, 2)
    assert torch.allclose(xy, torch.tensor([2 / 7 * 2 - 1, 1.0]).expand(2, 3, 2), atol=1e-5)
    flat = spatial_softmax(heat, temperature=1e6)  # almost uniform -> centre of the grid
    assert torch.allclose(soft_argmax(flat), torch.zeros(2, 3, 2), atol=1e-4)


def test_soft_argmax_gradient_flows():
    heat = torch.randn(1, 2, 4, 6, requires_grad=True)
    soft_argmax(spatial_softmax(heat)).sum().backward()
    assert heat.grad is not None and heat.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: coordinate_axis(3, "centered"), "convention"),
        (lambda: coordinate_axis(1, "inclusive"), "at least 2"),
        (lambda: coordinate_axis(0, "half_open"), "at least 1"),
        (lambda: part_centres(torch.rand(3, 4, 5)), r"\[B, K, H, W\]"),
        (lambda: part_centres(torch.rand(1, 1, 3, 4), eps=-1.0), "eps"),
        (lambda: concentration_loss(torch.rand(4, 5)), r"\[B, K, H, W\]"),
        (lambda: spatial_softmax(torch.rand(1, 1, 3, 3), temperature=0.0), "temperature"),
        (lambda: soft_argmax(torch.rand(1, 3, 3)), r"\[B, K, H, W\]"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
