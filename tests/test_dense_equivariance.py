"""Dense equivariant descriptors and descriptor vector exchange: value, gradient, exceptions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from copart_hub.losses.dense_equivariance import dense_equivariance_loss, exchange_descriptors
from copart_hub.ops.coordinates import coordinate_grid


def _distinct(b: int = 2, c: int = 64, h: int = 6, w: int = 7) -> torch.Tensor:
    torch.manual_seed(0)
    return F.normalize(torch.randn(b, c, h, w), dim=1)


def _identity(b: int, h: int, w: int) -> torch.Tensor:
    return coordinate_grid(h, w, "inclusive").expand(b, h, w, 2)


def test_loss_is_zero_for_a_true_match_and_the_shift_for_a_wrong_one():
    """Target = source moved one pixel left: with the true grid (each target position comes
    from one pixel to the right) the match costs nothing; told it is the identity, one pixel."""
    source = _distinct()
    b, _, h, w = source.shape
    target = source.roll(-1, dims=3)
    true = _identity(b, h, w).clone()
    true[..., 0] = true[..., 0] + 2 / (w - 1)  # one pixel right; the last column falls outside
    assert dense_equivariance_loss(source, target, true, temperature=0.01) < 1e-3
    wrong = dense_equivariance_loss(source, target, _identity(b, h, w), temperature=0.01)
    # one pixel off in w - 1 columns; the wrapped-round last column matches w - 1 pixels away
    assert wrong == pytest.approx(2 * (w - 1) / w, abs=0.02)
    shuffled = source.flatten(2)[..., torch.randperm(h * w)].reshape(source.shape)
    assert dense_equivariance_loss(source, shuffled, _identity(b, h, w), 0.01) > 2


def test_exchange_through_a_copy_keeps_the_match_and_through_noise_loses_it():
    source = _distinct()
    b, _, h, w = source.shape
    grid = _identity(b, h, w)
    mixed = exchange_descriptors(source, source, temperature=0.01)
    torch.testing.assert_close(mixed, source, atol=1e-3, rtol=0)
    assert dense_equivariance_loss(source, source, grid, 0.01, exchange=source) < 1e-3
    noise = F.normalize(torch.randn(b, 64, 3, 3), dim=1)  # nothing shared with the source
    assert dense_equivariance_loss(source, source, grid, 0.01, exchange=noise) > 1


def test_gradient_reaches_both_images_and_the_exchange_bank():
    source, target, bank = (_distinct().requires_grad_() for _ in range(3))
    grid = _identity(2, 6, 7)
    dense_equivariance_loss(source, target, grid, 0.1, exchange=bank).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in (source, target, bank))


def test_bad_shapes_are_clear_errors():
    source = _distinct()
    with pytest.raises(ValueError, match="must be \\[B, C, h, w\\]"):
        dense_equivariance_loss(source, source, _identity(2, 5, 7))
    with pytest.raises(ValueError, match="source must have 4 dimensions"):
        dense_equivariance_loss(source[0], source, _identity(2, 6, 7))
    with pytest.raises(ValueError, match="must share B, C"):
        exchange_descriptors(source, source[:1], 0.1)


def test_the_match_is_a_softmax_over_source_positions():
    """Every target position came from one source position and carries its descriptor: a
    softmax over the source puts each match there (loss 0); one over the target would not."""
    source = _distinct(b=1)
    _, c, h, w = source.shape
    target = source[:, :, 2:3, 3:4].expand(1, c, h, w)
    came_from = coordinate_grid(h, w, "inclusive")[2, 3].expand(1, h, w, 2)
    assert dense_equivariance_loss(source, target, came_from, temperature=0.01) < 1e-3
