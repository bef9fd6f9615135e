"""TPS warps: identity, interpolation, point/image agreement, inverse, Jacobian, samplers."""

from __future__ import annotations

import math

import pytest
import torch

from copart_hub.ops.coordinates import coordinate_grid, part_centres
from copart_hub.ops.warps import (
    TPSTransform,
    control_grid,
    random_mcs_tps,
    random_scops_tps,
    tps_grid,
    tps_transform_points,
)

H, W = 36, 52  # non-square everywhere


def smooth_image(b: int = 2, c: int = 3) -> torch.Tensor:
    grid = coordinate_grid(H, W, "inclusive", dtype=torch.float64)
    x, y = grid[..., 0], grid[..., 1]
    chans = [torch.sin(3 * x + i) * torch.cos(2 * y - i) for i in range(c)]
    return torch.stack(chans).expand(b, -1, -1, -1).contiguous()


def blob(x: float, y: float, sigma: float = 0.06) -> torch.Tensor:
    """Gaussian ``[1, 1, H, W]`` at ``(x, y)`` in align_corners=True coordinates."""
    grid = coordinate_grid(H, W, "inclusive", dtype=torch.float64)
    d2 = (grid[..., 0] - x) ** 2 + (grid[..., 1] - y) ** 2
    return torch.exp(-d2 / (2 * sigma**2))[None, None]


def test_control_grid():
    pts = control_grid()
    assert pts.shape == (25, 2)
    assert pts.min() == -1 and pts.max() == 1
    assert torch.allclose(torch.unique(pts[:, 0]), torch.linspace(-1, 1, 5))


@pytest.mark.parametrize("kernel", ["r2logr", "l1_r2logr"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_identity_parameters_give_identity_grid(kernel, align_corners):
    pts = control_grid(dtype=torch.float64).expand(2, -1, -1)
    tps = TPSTransform.from_control_points(pts, pts, kernel, align_corners)
    assert tps.weights.abs().max() < 1e-12
    convention = "inclusive" if align_corners else "pixel_centres"
    expected = coordinate_grid(H, W, convention, dtype=torch.float64).expand(2, -1, -1, -1)
    assert torch.allclose(tps.grid(H, W), expected, atol=1e-12)
    img = smooth_image()
    assert torch.allclose(tps.warp(img), img, atol=1e-10)


def test_zero_noise_samplers_are_identity():
    img = smooth_image().float()
    for tps in (
        random_mcs_tps(2, sigma_affine=0.0, sigma_tps=0.0),
        random_scops_tps(
            2, jitter=0.0, max_rotation_deg=0.0, scale_range=(1, 1), max_translation=0
        ),
        TPSTransform.from_affine(torch.eye(2, 3).expand(2, -1, -1)),
    ):
        assert torch.allclose(tps.warp(img), img, atol=1e-5)


@pytest.mark.parametrize("kernel", ["r2logr", "l1_r2logr"])
def test_tps_interpolates_control_points(kernel):
    torch.manual_seed(0)
    dst = control_grid(dtype=torch.float64).expand(3, -1, -1)
    src = dst + 0.05 * torch.randn(3, 25, 2, dtype=torch.float64)
    assert torch.allclose(tps_transform_points(dst, src, dst, kernel), src, atol=1e-10)
    # the dense grid uses the same map: a 5x5 grid sampled at 5x5 pixels hits the control points
    grid = tps_grid(src, dst, 5, 5, kernel)
    assert torch.allclose(grid.reshape(3, 25, 2), src, atol=1e-10)


def test_shared_control_dst_equals_per_sample_control_dst():
    torch.manual_seed(0)
    dst = control_grid(dtype=torch.float64)
    src = dst + 0.05 * torch.randn(3, 25, 2, dtype=torch.float64)
    shared = TPSTransform.from_control_points(src, dst)
    batched = TPSTransform.from_control_points(src, dst.expand(3, -1, -1).contiguous())
    assert shared.centres.shape == (3, 25, 2)
    assert torch.allclose(shared.affine, batched.affine, atol=1e-12)
    assert torch.allclose(shared.weights, batched.weights, atol=1e-12)


def test_affine_control_points_give_an_exact_affine():
    dst = control_grid(dtype=torch.float64)[None]
    theta = torch.tensor([[[1.1, -0.2, 0.05], [0.3, 0.9, -0.1]]], dtype=torch.float64)
    src = dst @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
    tps = TPSTransform.from_control_points(src, dst)
    assert torch.allclose(tps.affine, theta, atol=1e-12)
    assert tps.weights.abs().max() < 1e-12


@pytest.mark.parametrize("sampler", ["scops", "mcs"])
def test_points_agree_with_images(sampler):
    # a blob at q in the original image appears at p in the warped one with T(p) = q
    gen = torch.Generator().manual_seed(3)
    q = torch.tensor([0.1, -0.15], dtype=torch.float64)
    for _ in range(4):
        if sampler == "scops":
            tps = random_scops_tps(1, generator=gen, dtype=torch.float64)
        else:
            tps = random_mcs_tps(1, sigma_affine=0.15, sigma_tps=0.02, generator=gen)
            tps = tps.to(dtype=torch.float64)
        warped = tps.warp(blob(*q.tolist()))
        p = part_centres(warped / warped.sum(), eps=0.0, convention="inclusive")  # [1, 1, 2]
        assert torch.allclose(tps.transform_points(p)[0, 0], q, atol=0.01)


def test_similarity_and_its_inverse_round_trip():
    gen = torch.Generator().manual_seed(1)
    tps = random_scops_tps(
        2, jitter=0.0, scale_range=(0.9, 1.2), max_rotation_deg=20, generator=gen
    ).to(dtype=torch.float64)
    assert tps.weights.abs().max() < 1e-10  # a pure similarity
    a, t = tps.affine[:, :, :2], tps.affine[:, :, 2:]
    inverse = TPSTransform.from_affine(torch.cat([a.inverse(), -a.inverse() @ t], -1))
    swapped = TPSTransform.from_control_points(tps.centres, tps.transform_points(tps.centres))
    pts = torch.rand(2, 10, 2, dtype=torch.float64) * 2 - 1
    for inv in (inverse, swapped):
        assert torch.allclose(tps.transform_points(inv.transform_points(pts)), pts, atol=1e-10)
    img = smooth_image()
    back = inverse.warp(tps.warp(img))
    inside = inverse.warp(tps.warp(torch.ones_like(img[:, :1]))) > 0.999
    assert inside.float().mean() > 0.4
    err = (back - img).abs().masked_select(inside.expand_as(img))
    assert err.max() < 0.05 and err.mean() < 0.01  # bilinear interpolation, twice


@pytest.mark.parametrize("sampler", ["scops", "mcs"])
def test_jacobian_matches_finite_differences(sampler):
    gen = torch.Generator().manual_seed(0)
    if sampler == "scops":
        tps = random_scops_tps(2, jitter=0.05, generator=gen, dtype=torch.float64)
    else:
        tps = random_mcs_tps(2, sigma_tps=0.05, generator=gen, dtype=torch.float64)
    pts = torch.rand(2, 7, 2, dtype=torch.float64, generator=gen) * 1.8 - 0.9
    jac = tps.jacobian(pts)
    assert jac.shape == (2, 7, 2, 2)
    h = 1e-6
    for j in range(2):
        step = torch.zeros(2, dtype=torch.float64)
        step[j] = h
        fd = (tps.transform_points(pts + step) - tps.transform_points(pts - step)) / (2 * h)
        assert torch.allclose(jac[..., j], fd, atol=1e-7)


def test_jacobian_of_affine_part_and_gradient_flow():
    affine_only = random_mcs_tps(3, sigma_tps=0.0, generator=torch.Generator().manual_seed(0))
    pts = torch.rand(3, 4, 2) * 2 - 1
    jac = affine_only.jacobian(pts)
    assert torch.allclose(jac, affine_only.affine[:, None, :, :2].expand_as(jac))
    tps = random_mcs_tps(3, generator=torch.Generator().manual_seed(0))
    pts.requires_grad_(True)
    jac = tps.jacobian(pts)
    (jac.sum() + tps.transform_points(pts).sum()).backward()
    assert pts.grad is not None and torch.isfinite(pts.grad).all() and pts.grad.abs().sum() > 0


def test_warp_gradient_flows_to_input():
    x = torch.randn(2, 3, 8, 10, requires_grad=True)
    random_scops_tps(2).warp(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_padding_modes():
    shift = TPSTransform.from_affine(torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]]))
    img = torch.ones(1, 1, 6, 8)
    assert shift.warp(img, padding_mode="zeros")[..., -1].abs().max() == 0
    assert torch.allclose(shift.warp(img, padding_mode="border"), img)


def test_mcs_sampler_statistics():
    tps = random_mcs_tps(500, generator=torch.Generator().manual_seed(0))
    assert tps.kernel == "l1_r2logr" and tps.centres.shape == (500, 25, 2)
    assert (tps.affine - torch.eye(2, 3)).std().item() == pytest.approx(0.05, rel=0.05)
    assert tps.weights.std().item() == pytest.approx(0.005, rel=0.05)
    assert torch.equal(tps.weights[..., 0], tps.weights[..., 1])  # FOMM: same for x and y


def test_scops_sampler_ranges():
    tps = random_scops_tps(500, jitter=0.0, generator=torch.Generator().manual_seed(0))
    a, t = tps.affine[:, :, :2], tps.affine[:, :, 2]
    scale = a.det().sqrt()
    angle = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    assert torch.allclose(a[:, 0, 0], a[:, 1, 1], atol=1e-5)  # a similarity
    assert 0.5 <= scale.min() < 0.52 and 1 / 0.7 - 0.02 < scale.max() <= 1 / 0.7 + 1e-5
    assert -60 <= angle.min() < -58 and 58 < angle.max() <= 60
    assert t.abs().max() <= 0.1 + 1e-6 and t.abs().max() > 0.098
    jittered = random_scops_tps(50, generator=torch.Generator().manual_seed(0))
    assert jittered.weights.abs().max() > 1e-4  # the control-point jitter bends the map


def test_samplers_are_reproducible_and_per_sample():
    a = random_scops_tps(3, generator=torch.Generator().manual_seed(5))
    b = random_scops_tps(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.affine, b.affine)
    assert not torch.allclose(a.affine[0], a.affine[1])
    assert a.affine.dtype == torch.get_default_dtype()


def test_similarity_rotation_direction_is_a_rotation():
    tps = random_scops_tps(
        1, jitter=0.0, max_rotation_deg=30, scale_range=(1, 1), max_translation=0
    )
    a = tps.affine[0, :, :2]
    assert torch.allclose(a @ a.T, torch.eye(2), atol=1e-5)
    assert abs(math.degrees(math.atan2(a[1, 0].item(), a[0, 0].item()))) <= 30 + 1e-4


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: TPSTransform.from_control_points(torch.rand(1, 4, 3), torch.rand(1, 4, 3)), "2]"),
        (
            lambda: TPSTransform.from_control_points(torch.rand(1, 4, 2), torch.rand(1, 5, 2)),
            "same B and P",
        ),
        (
            lambda: TPSTransform.from_control_points(torch.rand(1, 2, 2), torch.rand(1, 2, 2)),
            "at least 3",
        ),
        (
            lambda: TPSTransform.from_control_points(
                torch.rand(1, 4, 2), torch.rand(1, 4, 2), kernel="gauss"
            ),
            "kernel",
        ),
        (lambda: TPSTransform.from_affine(torch.eye(2, 3)), r"\[B, 2, 3\]"),
        (lambda: random_scops_tps(2).warp(torch.rand(3, 1, 4, 4)), "batch size"),
        (lambda: random_scops_tps(2).warp(torch.rand(2, 4, 4)), r"\[B, C, H, W\]"),
        (lambda: random_scops_tps(1).warp(torch.rand(1, 1, 4, 4), "wrap"), "padding_mode"),
        (lambda: random_mcs_tps(2).jacobian(torch.rand(2, 3)), r"\[B, N, 2\]"),
        (lambda: random_mcs_tps(2).transform_points(torch.rand(1, 3, 2)), "batch size"),
        (lambda: random_scops_tps(0), "batch_size"),
        (lambda: random_scops_tps(1, scale_range=(2.0, 0.7)), "scale_range"),
        (lambda: control_grid(1), "points_per_side"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
