"""Differentiable SLIC op: shapes, dense reference, gradients, exceptions, dtype/device."""

from __future__ import annotations

import pytest
import torch

from copart_hub.ops.slic import (
    SuperpixelGrid,
    differentiable_slic,
    grid_shape,
    position_scale,
    xylab_features,
)


def dense_reference(feats: torch.Tensor, n_spixels: int, n_iter: int):
    """O(N x S) SLIC with explicit candidate masks: the definition the op must match."""
    b, c, h, w = feats.shape
    rows, cols = grid_shape(h, w, n_spixels)
    n, s = h * w, rows * cols
    cy = (torch.arange(h) * rows) // h
    cx = (torch.arange(w) * cols) // w
    cell_r = cy[:, None].expand(h, w).reshape(-1)
    cell_c = cx[None, :].expand(h, w).reshape(-1)
    sr, sc = torch.arange(s) // cols, torch.arange(s) % cols
    cand = ((sr[None] - cell_r[:, None]).abs() <= 1) & ((sc[None] - cell_c[:, None]).abs() <= 1)
    f = feats.reshape(b, c, n).transpose(1, 2)
    cell = cell_r * cols + cell_c
    centres = torch.stack([f[:, cell == k].mean(1) for k in range(s)], 1)

    def assoc(cen):
        d = -((f[:, :, None] - cen[:, None]) ** 2).sum(-1)
        return d.masked_fill(~cand, float("-inf")).softmax(-1)

    for _ in range(n_iter - 1):
        q = assoc(centres)
        centres = (q.transpose(1, 2) @ f) / q.sum(1)[..., None]
    return assoc(centres), centres


@pytest.mark.parametrize("shape,n", [((2, 4, 13, 17), 12), ((1, 3, 9, 9), 9), ((1, 2, 5, 31), 7)])
def test_matches_dense_reference(shape, n):
    torch.manual_seed(0)
    feats = torch.randn(*shape, dtype=torch.float64)
    assoc, centres = differentiable_slic(feats, n, n_iter=4)
    q_ref, c_ref = dense_reference(feats, n, 4)
    torch.testing.assert_close(centres.transpose(1, 2), c_ref)
    # scatter the 9-neighbour association into a dense [B, N, S] matrix
    g = assoc.grid
    b, _, h, w = shape
    probs = assoc.pixel_probs().reshape(b, 9, -1)
    cell = (
        (torch.arange(h) * g.rows // h)[:, None] * g.cols + (torch.arange(w) * g.cols // w)[None]
    ).reshape(-1)
    dense = torch.zeros(b, h * w, g.num_cells, dtype=feats.dtype)
    idx, ok = g.neighbour_index[cell], g.neighbour_valid[cell]
    for o in range(9):
        dense.scatter_add_(
            2, idx[:, o][None, :, None].expand(b, -1, 1), (probs[:, o] * ok[:, o])[..., None]
        )
    torch.testing.assert_close(dense, q_ref)
    assert torch.equal(assoc.hard_labels().reshape(b, -1), q_ref.argmax(-1))


def test_pool_unpool_match_dense():
    torch.manual_seed(1)
    feats = torch.randn(2, 3, 11, 14, dtype=torch.float64)
    assoc, _ = differentiable_slic(feats, 10, n_iter=3)
    q, _ = dense_reference(feats, 10, 3)
    x = torch.randn(2, 5, 11, 14, dtype=torch.float64)
    pooled = assoc.pool(x)
    ref = (q.transpose(1, 2) @ x.flatten(2).transpose(1, 2)) / q.sum(1)[..., None]
    torch.testing.assert_close(pooled, ref.transpose(1, 2))
    sp = torch.randn(2, 5, assoc.num_spixels, dtype=torch.float64)
    torch.testing.assert_close(
        assoc.unpool(sp).flatten(2), (q @ sp.transpose(1, 2)).transpose(1, 2)
    )


def test_shapes_and_probabilities():
    feats = torch.randn(3, 5, 24, 40)
    assoc, centres = differentiable_slic(feats, 20)
    rows, cols = grid_shape(24, 40, 20)
    assert rows * cols <= 20 and assoc.num_spixels == rows * cols
    assert centres.shape == (3, 5, rows * cols)
    probs = assoc.pixel_probs()
    assert probs.shape == (3, 9, 24, 40)
    torch.testing.assert_close(probs.sum(1), torch.ones(3, 24, 40))
    labels = assoc.hard_labels()
    assert labels.shape == (3, 24, 40) and labels.dtype == torch.long
    assert labels.min() >= 0 and labels.max() < rows * cols


def test_missing_neighbours_get_zero_probability():
    assoc, _ = differentiable_slic(torch.randn(1, 3, 8, 8), 4)
    probs = assoc.pixel_probs()
    # the top-left pixel's cell is (0, 0): offsets with dy=-1 or dx=-1 do not exist
    assert torch.all(probs[0, [0, 1, 2, 3, 6], 0, 0] == 0)


def test_memory_is_linear_in_pixels():
    """The association holds 9 values per pixel (plus padding), never N x S."""
    assoc, _ = differentiable_slic(torch.randn(1, 5, 60, 90), 600)
    g = assoc.grid
    assert assoc.q.numel() <= 9 * 60 * 90 * 1.5
    assert assoc.q.numel() < 60 * 90 * g.num_cells / 10


def test_gradcheck():
    torch.manual_seed(0)
    feats = torch.randn(1, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)

    def fn(f):
        assoc, centres = differentiable_slic(f, 4, n_iter=3)
        return assoc.unpool(assoc.pool(x)), centres

    assert torch.autograd.gradcheck(fn, (feats,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("n,msg", [(0, ">= 1"), (-3, ">= 1"), (10 * 12 + 1, "cannot make")])
def test_bad_superpixel_counts(n, msg):
    with pytest.raises(ValueError, match=msg):
        differentiable_slic(torch.randn(1, 3, 10, 12), n)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        differentiable_slic(torch.randn(3, 10, 12), 4)
    with pytest.raises(ValueError, match="n_iter"):
        differentiable_slic(torch.randn(1, 3, 10, 12), 4, n_iter=0)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        xylab_features(torch.rand(1, 4, 5, 5), 0.5)


def test_single_pixel_and_single_superpixel():
    assoc, _ = differentiable_slic(torch.randn(1, 3, 1, 1), 1)
    assert assoc.hard_labels().shape == (1, 1, 1)
    assoc, _ = differentiable_slic(torch.randn(2, 3, 7, 5), 1)
    assert torch.all(assoc.hard_labels() == 0)


def test_one_superpixel_per_pixel():
    assoc, _ = differentiable_slic(torch.randn(1, 2, 4, 5), 20)
    assert assoc.num_spixels == 20


def test_float32_and_float64_agree():
    feats = torch.randn(1, 4, 16, 16, dtype=torch.float64)
    a64, _ = differentiable_slic(feats, 16)
    a32, _ = differentiable_slic(feats.float(), 16)
    torch.testing.assert_close(a32.pixel_probs().double(), a64.pixel_probs(), atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    feats = torch.randn(2, 5, 32, 48)
    a_cpu, _ = differentiable_slic(feats, 24)
    a_gpu, _ = differentiable_slic(feats.cuda(), 24)
    torch.testing.assert_close(a_gpu.pixel_probs().cpu(), a_cpu.pixel_probs(), atol=1e-5, rtol=1e-4)


def test_xylab_features_and_position_scale():
    img = torch.zeros(1, 3, 4, 6)
    img[..., 2:] = 1.0
    f = xylab_features(img, pos_scale=0.5, color_scale=1.0)
    assert f.shape == (1, 5, 4, 6)
    assert f[0, 0, 3, 0] == pytest.approx(1.5) and f[0, 1, 0, 5] == pytest.approx(2.5)
    assert f[0, 2, 0, 0] == pytest.approx(0.0, abs=1e-3)  # black: L = 0
    assert f[0, 2, 0, 5] == pytest.approx(100.0, abs=0.1)  # white: L = 100
    rows, cols = grid_shape(321, 481, 400)
    assert position_scale(321, 481, 400) == pytest.approx(2.5 * max(cols / 481, rows / 321))


def test_grid_cells_cover_every_pixel_once():
    g = SuperpixelGrid.create(17, 23, 30)
    table = g.pixel_table[g.pixel_table < 17 * 23]
    assert torch.equal(table.sort().values, torch.arange(17 * 23))
    x = torch.randn(2, 3, 17, 23)
    torch.testing.assert_close(g.to_pixels(g.to_cells(x)), x)
