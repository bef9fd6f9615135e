"""SSN losses against brute-force definitions."""

from __future__ import annotations

import pytest
import torch

from copart_hub.losses.ssn import (
    IGNORE_INDEX,
    compactness_loss,
    label_reconstruction_loss,
    one_hot_labels,
)
from copart_hub.ops.slic import differentiable_slic


def test_one_hot_ignores_255():
    lab = torch.tensor([[[0, 2], [IGNORE_INDEX, 1]]])
    onehot, valid = one_hot_labels(lab)
    assert onehot.shape == (1, 3, 2, 2)
    assert onehot[0, :, 1, 0].sum() == 0 and not valid[0, 1, 0]
    assert onehot[0, 2, 0, 1] == 1


def test_constant_labels_reconstruct_perfectly():
    assoc, _ = differentiable_slic(torch.randn(2, 5, 12, 12), 9)
    loss = label_reconstruction_loss(assoc, torch.zeros(2, 12, 12, dtype=torch.long))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_matches_brute_force():
    torch.manual_seed(0)
    assoc, _ = differentiable_slic(torch.randn(1, 4, 9, 10, dtype=torch.float64), 6)
    labels = torch.randint(0, 3, (1, 9, 10))
    labels[0, 0, :3] = IGNORE_INDEX
    onehot, valid = one_hot_labels(labels)
    onehot = onehot.double()
    # explicit Q (N x S) from the 9-neighbour probabilities
    g = assoc.grid
    probs = assoc.pixel_probs().reshape(9, -1)
    cell = (
        (torch.arange(9) * g.rows // 9)[:, None] * g.cols + (torch.arange(10) * g.cols // 10)[None]
    ).reshape(-1)
    q = torch.zeros(90, g.num_cells, dtype=torch.float64)
    for o in range(9):
        ok = g.neighbour_valid[cell, o]
        q[torch.arange(90)[ok], g.neighbour_index[cell, o][ok]] += probs[o][ok]
    r = onehot.reshape(onehot.shape[1], -1).T  # N x L
    sp = (q.T @ r) / q.sum(0)[:, None]
    rec = (q @ sp).clamp_min(0) + 1e-10
    rec = rec / rec.sum(1, keepdim=True)
    nll = -(r * rec.log()).sum(1)[valid.reshape(-1)].mean()
    assert label_reconstruction_loss(assoc, labels).item() == pytest.approx(nll.item(), rel=1e-5)


def test_compactness_matches_definition_and_has_no_gradient_through_argmax():
    torch.manual_seed(0)
    feats = torch.randn(2, 5, 10, 12, requires_grad=True)
    assoc, _ = differentiable_slic(feats, 9)
    xy = feats[:, :2]
    loss = compactness_loss(assoc, xy)
    centres = assoc.pool(xy).detach()
    hard = assoc.hard_labels()
    ref = (
        sum(
            ((xy[b].detach().reshape(2, -1) - centres[b][:, hard[b].reshape(-1)]) ** 2).sum()
            for b in range(2)
        )
        / 4
    )
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
