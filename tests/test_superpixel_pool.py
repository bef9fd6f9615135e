"""Superpixel pooling / unpooling layers."""

from __future__ import annotations

import pytest
import torch

from copart_hub.ops.slic import differentiable_slic
from copart_hub.ops.superpixel_pool import (
    SuperpixelPool,
    SuperpixelUnpool,
    superpixel_pool,
    superpixel_unpool,
)


def test_pool_is_the_mean_per_label():
    x = torch.arange(8.0).view(1, 1, 2, 4)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    pooled = superpixel_pool(x, labels)
    torch.testing.assert_close(pooled, torch.tensor([[[(0 + 1 + 4) / 3, (2 + 3 + 7) / 3, 5.5]]]))
    assert superpixel_pool(x, labels, num_spixels=5)[0, 0, 3:].eq(0).all()  # empty ids


def test_unpool_of_pool_keeps_piecewise_constant_maps():
    labels = torch.randint(0, 6, (2, 9, 11))
    values = torch.randn(2, 3, 6)
    x = superpixel_unpool(values, labels)
    torch.testing.assert_close(superpixel_unpool(superpixel_pool(x, labels, 6), labels), x)


def test_gradients_flow_to_features():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    labels = torch.randint(0, 4, (1, 5, 5))
    superpixel_unpool(superpixel_pool(x, labels, 4), labels).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    xd = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    lab = torch.randint(0, 3, (1, 4, 4))
    assert torch.autograd.gradcheck(lambda t: superpixel_pool(t, lab, 3), (xd,))


def test_layers_accept_soft_association_and_labels():
    feats = torch.randn(1, 5, 12, 12)
    assoc, _ = differentiable_slic(feats, 9)
    x = torch.randn(1, 3, 12, 12)
    pool, unpool = SuperpixelPool(), SuperpixelUnpool()
    assert pool(x, assoc).shape == (1, 3, assoc.num_spixels)
    assert unpool(pool(x, assoc), assoc).shape == x.shape
    hard = assoc.hard_labels()
    assert unpool(pool(x, hard), hard).shape == x.shape


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        superpixel_pool(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-negative integer"):
        superpixel_pool(torch.zeros(1, 1, 2, 2), torch.full((1, 2, 2), -1))
    with pytest.raises(ValueError, match="num_spixels"):
        superpixel_pool(torch.zeros(1, 1, 2, 2), torch.full((1, 2, 2), 3), num_spixels=2)
    with pytest.raises(ValueError, match=r"\[B, C, S\]"):
        superpixel_unpool(torch.zeros(1, 2), torch.zeros(1, 2, 2, dtype=torch.long))
