"""SCOPS losses against their definitions (SPEC A1.4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from copart_hub.losses.scops import (
    PartBasis,
    ScopsLossWeights,
    background_loss,
    equivariance_loss,
    orthonormality_loss,
    semantic_consistency_loss,
)
from copart_hub.ops.coordinates import part_centres
from copart_hub.ops.warps import TPSTransform, random_scops_tps


def identity(b: int) -> TPSTransform:
    return TPSTransform.from_affine(torch.eye(2, 3).expand(b, -1, -1))


def test_equivariance_is_zero_for_identity_warp():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 9, 13)
    kl, mse = equivariance_loss(z, z.clone(), identity(2))
    assert kl.item() == pytest.approx(0.0, abs=1e-6)
    assert mse.item() == pytest.approx(0.0, abs=1e-10)
    kl, mse = equivariance_loss(z, torch.randn(2, 4, 9, 13), identity(2))
    assert kl.item() > 0.1 and mse.item() > 0


def test_equivariance_matches_definition():
    torch.manual_seed(0)
    z, z_t = torch.randn(2, 3, 10, 14), torch.randn(2, 3, 10, 14)
    warp = random_scops_tps(2, generator=torch.Generator().manual_seed(0))
    kl, mse = equivariance_loss(z, z_t, warp)
    # T(z) by hand, zero padding: pixels sampled from outside the frame get logits 0 (uniform)
    tz = F.grid_sample(z, warp.grid(10, 14), padding_mode="zeros", align_corners=True)
    p, q = tz.softmax(1), z_t.softmax(1)
    assert kl.item() == pytest.approx((p * (p.log() - q.log())).mean().item(), rel=1e-4)
    c, c_t = part_centres(q[:, 1:]), part_centres(p[:, 1:])
    assert mse.item() == pytest.approx((c - c_t).pow(2).mean().item(), rel=1e-5)
    # a shift by the whole frame: the target is uniform everywhere
    out = TPSTransform.from_affine(torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, 0.0]]]))
    kl, _ = equivariance_loss(z[:1], torch.zeros(1, 3, 10, 14), out)
    assert kl.item() == pytest.approx(0.0, abs=1e-7)


def test_equivariance_detaches_kl_target_but_not_centre_target():
    z = torch.randn(2, 4, 8, 11, requires_grad=True)
    z_t = torch.randn(2, 4, 8, 11, requires_grad=True)
    warp = random_scops_tps(2, generator=torch.Generator().manual_seed(1))
    kl, mse = equivariance_loss(z, z_t, warp)
    kl.backward(retain_graph=True)
    assert z.grad is None or z.grad.abs().max() == 0
    assert z_t.grad is not None and z_t.grad.abs().max() > 0
    z_t.grad = None
    mse.backward()
    assert z.grad is not None and z.grad.abs().max() > 0
    assert z_t.grad is not None and z_t.grad.abs().max() > 0


def brute_semantic(probs, feats, basis, sal):
    b, k, h, w = probs.shape
    c = feats.shape[1]
    wk = basis.clamp_min(0)
    total = 0.0
    for bi in range(b):
        for ci in range(c):
            for i in range(h):
                for j in range(w):
                    rec = sum(probs[bi, ki, i, j] * wk[ki, ci] for ki in range(k))
                    target = feats[bi, ci, i, j] * (1 if sal is None else sal[bi, 0, i, j])
                    total += (rec - target) ** 2
    return float(total) / (b * c * h * w)


def test_semantic_consistency_matches_definition():
    torch.manual_seed(0)
    probs = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    feats = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    basis = torch.randn(3, 6, dtype=torch.float64)  # negative entries act as 0 (ReLU)
    sal = torch.rand(2, 1, 4, 5, dtype=torch.float64)
    for s in (None, sal):
        expected = brute_semantic(probs, feats, basis, s)
        assert semantic_consistency_loss(probs, feats, basis, s).item() == pytest.approx(expected)


def test_semantic_consistency_excludes_the_background_explicitly():
    torch.manual_seed(0)
    probs = torch.rand(2, 4, 5, 6)  # channel 0 = background, 1..3 = parts
    feats, basis = torch.randn(2, 8, 5, 6), torch.rand(3, 8)
    loss = semantic_consistency_loss(probs[:, 1:], feats, basis)
    other = probs.clone()
    other[:, 0] = torch.rand(2, 5, 6) * 10
    assert torch.equal(semantic_consistency_loss(other[:, 1:], feats, basis), loss)
    with pytest.raises(ValueError, match="background"):
        semantic_consistency_loss(probs, feats, basis)


def test_zero_saliency_makes_the_target_zero():
    torch.manual_seed(0)
    probs, basis = torch.rand(1, 2, 4, 4), torch.rand(2, 3)
    feats = torch.randn(1, 3, 4, 4) * 100
    masked = semantic_consistency_loss(probs, feats, basis, torch.zeros(1, 1, 4, 4))
    zero_target = semantic_consistency_loss(probs, torch.zeros_like(feats), basis)
    assert masked.item() == pytest.approx(zero_target.item())
    # and with all mass on the background (parts 0) the masked loss is exactly 0
    empty = semantic_consistency_loss(
        torch.zeros_like(probs), feats, basis, torch.zeros(1, 1, 4, 4)
    )
    assert empty.item() == 0


def test_semantic_consistency_gradients():
    probs = torch.rand(1, 2, 3, 3, requires_grad=True)
    feats = torch.randn(1, 4, 3, 3, requires_grad=True)
    basis = torch.randn(2, 4, requires_grad=True)
    semantic_consistency_loss(probs, feats, basis).backward()
    assert probs.grad.abs().sum() > 0 and feats.grad is None  # the target is detached
    assert torch.equal(basis.grad == 0, basis <= 0)  # ReLU: no gradient to negative entries


def test_orthonormality():
    perm = torch.eye(4)[[2, 0, 3, 1]]
    assert orthonormality_loss(3 * perm).item() == pytest.approx(0.0, abs=1e-9)
    # negative entries are removed by the ReLU before normalising
    assert orthonormality_loss(perm - 0.5 * (1 - perm)).item() == pytest.approx(0.0, abs=1e-9)
    # rows (1,1,0) and (0,1,1): normalised dot product 1/2 on both off-diagonals
    overlap = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    assert orthonormality_loss(overlap).item() == pytest.approx(0.5, rel=1e-5)


def test_orthonormality_gradient_flows():
    w = torch.rand(3, 5, requires_grad=True)
    orthonormality_loss(w).backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_part_basis():
    torch.manual_seed(0)
    basis = PartBasis(4, 7)
    assert basis.w.shape == (4, 7) and (basis.w >= 0).all()
    with torch.no_grad():
        basis.w[0, 0] = -1.0
    out = basis()
    assert out[0, 0] == 0 and torch.equal(out[1:], basis.w[1:])
    assert [n for n, _ in basis.named_parameters()] == ["w"]


def test_unit_rows_basis_keeps_a_background_part_alive():
    """Part 0 owns the foreground (features 1), part 1 sits on background pixels (target 0):
    semantic-consistency SGD kills part 1's row of the official ReLU basis, while with
    ``unit_rows`` every row keeps the shared norm, so the background part keeps paying."""
    probs = torch.zeros(1, 2, 4, 4)
    probs[:, 0, :, :2] = 1.0  # foreground columns
    probs[:, 1, :, 2:] = 1.0  # a part on the background
    saliency = torch.zeros(1, 1, 4, 4)
    saliency[..., :2] = 1.0
    features = torch.ones(1, 3, 4, 4)
    norms = {}
    for unit_rows in (False, True):
        torch.manual_seed(0)
        basis = PartBasis(2, 3, unit_rows=unit_rows)
        opt = torch.optim.SGD(basis.parameters(), lr=0.5)
        for _ in range(200):
            opt.zero_grad()
            semantic_consistency_loss(probs, features, basis(), saliency).backward()
            opt.step()
        norms[unit_rows] = basis().norm(dim=1).detach()
    assert norms[False][1] < 1e-3 and norms[False][0] > 1.0  # the background part's row died
    torch.testing.assert_close(norms[True][1], norms[True][0])  # shared norm
    assert norms[True][0] > 0.5  # a compromise between sqrt(3) (fit) and 0 (background)
    assert [n for n, _ in PartBasis(2, 3, unit_rows=True).named_parameters()] == ["w", "log_scale"]


def test_background_loss_known_values_and_gradient():
    probs = torch.zeros(1, 3, 2, 2)
    probs[0, 0] = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # background on the left column
    probs[0, 1] = 1 - probs[0, 0]
    saliency = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # foreground on the right column
    assert background_loss(probs, saliency).item() == 0.0
    assert background_loss(probs, 1 - saliency).item() == 1.0
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    sal = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    background_loss(logits.softmax(1), sal).backward()
    assert logits.grad.abs().sum() > 0 and sal.grad is None  # the saliency is a fixed target


def test_loss_weights():
    weights = ScopsLossWeights()
    assert (
        weights.concentration,
        weights.equivariance,
        weights.landmark_equivariance,
        weights.semantic_consistency,
        weights.orthonormality,
        weights.background,
    ) == (10.0, 1000.0, 100.0, 1e4, 0.1, 0.0)
    total = weights.total({"concentration": torch.tensor(2.0), "orthonormality": torch.tensor(3.0)})
    assert total.item() == pytest.approx(20.3)
    with pytest.raises(ValueError, match="unknown"):
        weights.total({"con": torch.tensor(1.0)})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: equivariance_loss(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), identity(1)),
            "K",
        ),
        (
            lambda: equivariance_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5), identity(1)),
            "must match",
        ),
        (
            lambda: equivariance_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), identity(1)),
            "batch",
        ),
        (
            lambda: semantic_consistency_loss(
                torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 5), torch.rand(2, 3)
            ),
            "features",
        ),
        (
            lambda: semantic_consistency_loss(
                torch.rand(1, 2, 4, 4),
                torch.rand(1, 3, 4, 4),
                torch.rand(2, 3),
                torch.rand(1, 4, 4),
            ),
            "saliency",
        ),
        (
            lambda: semantic_consistency_loss(
                torch.rand(2, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(2, 3)
            ),
            "part_probs",
        ),
        (lambda: orthonormality_loss(torch.rand(2, 3, 4)), r"\[K, C\]"),
        (lambda: background_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 1, 4, 5)), "saliency"),
        (lambda: PartBasis(0, 3), "num_parts"),
        (lambda: ScopsLossWeights().total({}), "no loss terms"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
