"""Motion co-segmentation (MCS): anti-aliasing, segmenter, part motion, generator, losses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_mcs
from PIL import Image

import copart_hub
from copart_hub.hub.registry import get_entry
from copart_hub.losses.mcs import (
    EmaEncoderFeatures,
    McsLossWeights,
    PerceptualPyramid,
    equivariance_losses,
)
from copart_hub.models.mcs import (
    MCSGenerator,
    MCSModel,
    MCSSegmentation,
    MCSSegmenter,
    part_motion_grid,
    swap_mask,
    visibility_mask,
    warp_with_grid,
)
from copart_hub.ops.antialias import AntiAliasDownsample, antialias_downsample, image_pyramid
from copart_hub.ops.warps import TPSTransform, random_mcs_tps
from copart_hub.pipelines import PartSegmenter

TINY_SEG = {"block_expansion": 4, "max_features": 16, "num_blocks": 2}
TINY_MODEL = {
    "seg_block_expansion": 4,
    "seg_max_features": 16,
    "seg_num_blocks": 2,
    "gen_block_expansion": 4,
    "gen_max_features": 16,
    "gen_num_bottleneck_blocks": 1,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and oversubscribed cores make them crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_segmenter(num_parts: int = 3, size: int = 32) -> MCSSegmenter:
    torch.manual_seed(0)
    return MCSSegmenter(num_parts=num_parts, input_size=(size, size), **TINY_SEG)


def tiny_model(num_parts: int = 3, size: int = 32) -> MCSModel:
    torch.manual_seed(0)
    return MCSModel(num_parts=num_parts, input_size=(size, size), **TINY_MODEL)


def warm_batchnorm(module: torch.nn.Module, *inputs: torch.Tensor) -> None:
    """Give BatchNorm non-trivial running statistics, then switch to eval."""
    module.train()
    with torch.no_grad():
        module(*inputs)
    module.eval()


def inclusive_grid(h: int, w: int) -> torch.Tensor:
    """Reference ``[h, w, 2]`` (x, y) grid built independently of ``coordinate_grid``."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([xs, ys], -1).double()


# ------------------------------------------------------------------ anti-aliasing


def test_antialias_kernel_size_sigma_and_striding():
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 12, 12] = 1.0
    out = antialias_downsample(x, 0.25)
    assert out.shape == (1, 1, 8, 8)
    sigma, taps = 1.5, torch.arange(-6, 7, dtype=torch.float64)  # sigma (4-1)/2, 13 taps
    g = torch.exp(-(taps**2) / (2 * sigma**2))
    g = g / g.sum()
    assert out[0, 0, 3, 3].item() == pytest.approx((g[6] ** 2).item(), rel=1e-5)
    assert out[0, 0, 3, 2].item() == pytest.approx((g[6] * g[2]).item(), rel=1e-5)
    assert out[0, 0, 1, 3].item() == 0.0  # 8 px away: outside the 13-tap kernel


def test_antialias_sizes_constant_image_and_errors():
    x = torch.full((2, 3, 33, 17), 0.7)
    assert torch.equal(antialias_downsample(x, 1.0), x)
    down = AntiAliasDownsample(0.125)(x)
    assert down.shape == (2, 3, 5, 3)
    torch.testing.assert_close(down, torch.full_like(down, 0.7))  # replicate border: no darkening
    dark = antialias_downsample(x, 0.25, border="constant")  # the official zero padding
    assert dark[0, 0, 0, 0] < 0.6
    assert [p.shape[-1] for p in image_pyramid(torch.rand(1, 3, 32, 32))] == [32, 16, 8, 4]
    for bad in (0.3, 0.0, 2.0):
        with pytest.raises(ValueError, match="scale"):
            antialias_downsample(x, bad)
    with pytest.raises(ValueError, match="border"):
        antialias_downsample(x, 0.5, border="mirror")  # type: ignore[arg-type]


# ------------------------------------------------------------------ segmenter


def test_segmenter_heads_at_init_and_shapes():
    seg = tiny_segmenter(num_parts=3)
    images = torch.rand(2, 3, 32, 32)
    out = seg.segment(images)
    assert out.masks.shape == (2, 4, 8, 8) and out.shift.shape == (2, 3, 2)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 8, 8))
    torch.testing.assert_close(out.affine, torch.eye(2).expand(2, 3, 2, 2))  # A_k = I at init
    assert out.shift.abs().max() <= 1
    assert seg(images).shape == (2, 4, 8, 8)  # forward: segmentation logits
    assert seg.image_mean == (0.0, 0.0, 0.0) and seg.image_std == (1.0, 1.0, 1.0)
    odd = seg.segment(torch.rand(1, 3, 33, 45))
    assert odd.masks.shape == (1, 4, 9, 12) and seg(torch.rand(1, 3, 33, 45)).shape[-2:] == (9, 12)
    with pytest.raises(ValueError, match="smaller than"):
        seg(torch.rand(1, 3, 8, 8))


def test_shift_is_soft_argmax_of_a_peaked_heatmap():
    seg = tiny_segmenter(num_parts=1).eval()
    with torch.no_grad():  # a shift head that peaks at the input's red channel
        seg.shift_head.weight.zero_()
        seg.shift_head.bias.zero_()
        seg.shift_head.weight[0, 4, 3, 3] = 100.0  # channel 4: the input red (Hourglass skip)
    image = torch.zeros(1, 3, 32, 32)
    image[0, 0, 24:, :8] = 1.0  # bottom-left corner
    shift = seg.segment(image).shift[0, 0]
    assert shift[0] < -0.7 and shift[1] > 0.7


# ------------------------------------------------------------------ motion


def test_identical_frames_give_identity_flow():
    seg = tiny_segmenter().double().eval()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    expected = inclusive_grid(8, 8).expand(2, 8, 8, 2)
    s = seg.segment(images)
    torch.testing.assert_close(part_motion_grid(s, seg.segment(images)), expected)
    with torch.no_grad():
        for p in seg.parameters():
            p.add_(0.05 * torch.randn_like(p))
    s, t = seg.segment(images), seg.segment(images)
    assert (s.affine - torch.eye(2, dtype=s.affine.dtype)).abs().max() > 1e-3  # A != I now
    torch.testing.assert_close(part_motion_grid(t, s), expected)


def test_known_affine_motion_on_one_part():
    h, w = 9, 9
    masks = torch.zeros(1, 3, h, w, dtype=torch.float64)
    masks[0, 0] = 1.0
    masks[0, :, 2:7, 1:5] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).double()  # part 1
    masks[0, :, 8, 8] = torch.tensor([0.5, 0.0, 0.5]).double()  # half background, half part 2
    a_t = torch.tensor([[[1.2, 0.1], [-0.2, 0.9]], [[1.0, 0.0], [0.0, 1.0]]]).double()
    a_s = torch.tensor([[[0.8, -0.3], [0.25, 1.1]], [[0.5, 0.0], [0.0, 2.0]]]).double()
    p_t = torch.tensor([[0.1, -0.2], [0.0, 0.5]]).double()
    p_s = torch.tensor([[-0.3, 0.4], [0.2, 0.1]]).double()
    seg_t = MCSSegmentation(masks, p_t[None], a_t[None])
    seg_s = MCSSegmentation(torch.rand_like(masks), p_s[None], a_s[None])  # source masks unused
    grid = part_motion_grid(seg_t, seg_s)[0]
    z = inclusive_grid(h, w)

    def motion(k: int, point: torch.Tensor) -> torch.Tensor:
        return a_s[k] @ torch.linalg.inv(a_t[k]) @ (point - p_t[k]) + p_s[k]

    for i in range(h):
        for j in range(w):
            if 2 <= i < 7 and 1 <= j < 5:
                expected = motion(0, z[i, j])
            elif (i, j) == (8, 8):
                expected = 0.5 * z[i, j] + 0.5 * motion(1, z[i, j])
            else:
                expected = z[i, j]
            torch.testing.assert_close(grid[i, j], expected)


def test_warp_uses_align_corners_true():
    """A translation by two grid steps moves features by exactly two pixels."""
    masks = torch.zeros(1, 2, 9, 9)
    masks[:, 1] = 1.0
    eye = torch.eye(2).expand(1, 1, 2, 2)
    seg_t = MCSSegmentation(masks, torch.zeros(1, 1, 2), eye)
    seg_s = MCSSegmentation(masks, torch.tensor([[[0.5, -0.5]]]), eye)
    features = torch.rand(1, 4, 9, 9)
    warped = warp_with_grid(features, part_motion_grid(seg_t, seg_s))
    torch.testing.assert_close(warped[..., 2:, :7], features[..., :7, 2:])
    upsampled = warp_with_grid(torch.rand(1, 1, 17, 17), part_motion_grid(seg_t, seg_s))
    assert upsampled.shape == (1, 1, 17, 17)  # grid resized to the input size


def test_visibility_stops_gradient_on_target_foreground_only():
    masks_s = torch.rand(2, 4, 5, 5).softmax(1).requires_grad_()
    masks_t = torch.rand(2, 4, 5, 5).softmax(1).requires_grad_()
    v = visibility_mask(masks_s, masks_t)
    fg_s, fg_t = masks_s[:, 1:].sum(1, keepdim=True), masks_t[:, 1:].sum(1, keepdim=True)
    torch.testing.assert_close(v, 1 - fg_s * (1 - fg_t))
    v.square().sum().backward()
    assert masks_t.grad is None or not masks_t.grad.any()
    assert masks_s.grad is not None and masks_s.grad[:, 1:].abs().sum() > 0
    assert not masks_s.grad[:, 0].any()  # the background channel is not in fg_S


# ------------------------------------------------------------------ generator and model


def test_model_forward_shapes_including_odd_sizes():
    model = tiny_model(num_parts=3)
    for h, w in ((32, 32), (34, 38)):
        out = model(torch.rand(2, 3, h, w), torch.rand(2, 3, h, w))
        assert out["prediction"].shape == (2, 3, h, w)
        assert out["deformed"].shape == (2, 3, h, w)
        mh, mw = math.ceil(h / 4), math.ceil(w / 4)
        assert out["visibility"].shape == (2, 1, mh, mw)
        assert out["seg_target"].masks.shape == (2, 4, mh, mw)
        assert out["prediction"].min() > 0 and out["prediction"].max() < 1


def test_generator_widths_follow_spec():
    gen = MCSGenerator()  # official: 3 -> 64 -> 128 -> 256, 6 ResBlocks, 256 -> 128 -> 64 -> 3
    assert [b[0].out_channels for b in gen.down] == [128, 256]
    assert len(gen.bottleneck) == 6 and gen.bottleneck[0].body[2].in_channels == 256
    assert [b.conv[0].out_channels for b in gen.up] == [128, 64]
    assert gen.final.out_channels == 3 and gen.first[0].kernel_size == (7, 7)
    seg = MCSSegmenter(num_parts=10)
    assert seg.predictor.out_channels == 35
    assert [b[0].out_channels for b in seg.predictor.down] == [64, 128, 256, 512, 1024]
    heads = (seg.segmentation_head, seg.shift_head, seg.affine_head)
    assert [h.out_channels for h in heads] == [11, 10, 40]


def test_generator_skips_add_no_parameters_and_carry_source_detail():
    """``gen_skips``: the same state dict as without (releases load either way), and source
    detail reaches the prediction through the warped skips even when the bottleneck carries
    none of it (the down blocks' weights zeroed): without skips the prediction ignores the
    source, with them it does not."""
    plain = tiny_model()
    torch.manual_seed(0)
    skipping = MCSModel(num_parts=3, input_size=(32, 32), gen_skips=True, **TINY_MODEL)
    assert plain.state_dict().keys() == skipping.state_dict().keys()
    skipping.load_state_dict(plain.state_dict())
    target = torch.rand(1, 3, 32, 32)
    sources = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    changes = []
    for model in (plain, skipping):
        model.eval()
        with torch.no_grad():
            for p in model.generator.down.parameters():
                p.zero_()
            a, b = (model(s, target)["prediction"] for s in sources)
        changes.append((a - b).abs().max().item())
    assert changes[0] < 1e-6 < 1e-3 < changes[1]


def test_swap_with_skips_blends_every_level():
    torch.manual_seed(0)
    model = MCSModel(num_parts=3, input_size=(32, 32), gen_skips=True, **TINY_MODEL).eval()
    source, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    gen = model.generator
    with torch.no_grad():
        seg_s, seg_t = model.segmenter.segment(source), model.segmenter.segment(target)
        empty = gen.swap(source, target, seg_s, seg_t, torch.zeros(1, 1, 8, 8))
        full = gen.swap(source, target, seg_s, seg_t, torch.ones(1, 1, 8, 8))
        levels = gen.encode_levels(target)
        torch.testing.assert_close(empty, gen.decode(levels[-1], (32, 32), levels[:-1]))
        torch.testing.assert_close(full, model(source, target)["prediction"])


def test_swap_blend_empty_and_full_masks():
    model = tiny_model().eval()
    source, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    warm_batchnorm(model, torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    gen = model.generator
    with torch.no_grad():
        seg_s, seg_t = model.segmenter.segment(source), model.segmenter.segment(target)
        empty = gen.swap(source, target, seg_s, seg_t, torch.zeros(1, 1, 8, 8))
        full = gen.swap(source, target, seg_s, seg_t, torch.ones(1, 1, 8, 8))
        half = gen.swap(source, target, seg_s, seg_t, torch.full((1, 1, 8, 8), 0.5))
        torch.testing.assert_close(empty, gen.decode(gen.encode(target), (32, 32)))
        torch.testing.assert_close(full, model(source, target)["prediction"])
        all_parts = model.part_swap(source, target, [0, 1, 2, 3])  # masks sum to 1
        torch.testing.assert_close(all_parts, full)
        some = model.part_swap(source, target, [1, 2], hard=True, use_source_segmentation=True)
    assert (half - empty).abs().max() > 1e-4 and (half - full).abs().max() > 1e-4
    assert some.shape == (1, 3, 32, 32)


def test_swap_mask():
    masks = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 4, 1, 1)
    torch.testing.assert_close(swap_mask(masks, [1, 3]), torch.full((1, 1, 1, 1), 0.6))
    assert swap_mask(masks, [0, 1], hard=True).item() == 0.0
    for bad in ([], [4], [-1]):
        with pytest.raises(ValueError, match="swap_index"):
            swap_mask(masks, bad)


# ------------------------------------------------------------------ hub


def test_registry_entries():
    assert get_entry("mcs_k10").architecture == "mcs"
    entry = get_entry("mcs_segmenter_k10")
    assert entry.architecture == "mcs_segmenter"
    assert copart_hub.get_architecture("mcs_segmenter") is MCSSegmenter
    assert MCSSegmenter().num_parts == 10 and MCSSegmenter().input_size == (256, 256)


def test_segmenter_round_trip_and_pipeline(tmp_path: Path, rgb_array: np.ndarray):
    seg = tiny_segmenter(num_parts=3)
    warm_batchnorm(seg, torch.rand(2, 3, 32, 32))
    seg.save_pretrained(tmp_path / "seg")
    loaded = copart_hub.from_pretrained(tmp_path / "seg")
    assert isinstance(loaded, MCSSegmenter) and loaded.num_parts == 3
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), seg(images), rtol=0, atol=0)
    result = PartSegmenter(loaded)(Image.fromarray(rgb_array))
    assert result.masks.shape == (4, 24, 32) and result.labels.shape == (24, 32)
    np.testing.assert_allclose(result.masks.sum(0), 1.0, atol=1e-5)
    assert PartSegmenter(loaded).preprocess([Image.fromarray(rgb_array)]).min() >= 0  # [0, 1]


def test_segmenter_only_and_model_round_trip(tmp_path: Path):
    model = tiny_model(num_parts=2)
    source, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    warm_batchnorm(model, source, target)
    seg = model.segmenter_only()
    assert seg is model.segmenter and seg.config["architecture"] == "mcs_segmenter"
    seg.save_pretrained(tmp_path / "seg")
    model.save_pretrained(tmp_path / "full")
    loaded_seg = MCSSegmenter.from_pretrained(tmp_path / "seg")
    loaded = copart_hub.from_pretrained(tmp_path / "full")
    assert isinstance(loaded, MCSModel) and loaded.config["seg_num_blocks"] == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded_seg(source), model.segmenter(source))
        a, b = loaded(source, target), model(source, target)
        torch.testing.assert_close(a["prediction"], b["prediction"])


# ------------------------------------------------------------------ losses


@pytest.mark.parametrize("feature_net", ["random", "none"])
def test_perceptual_pyramid_zero_iff_identical_and_no_target_gradient(feature_net: str):
    loss = PerceptualPyramid(feature_net, random_channels=(4, 8, 8, 8, 8))
    images = torch.rand(2, 3, 32, 32)
    assert loss(images, images.clone()).item() == 0.0
    prediction = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = loss(prediction, target)
    assert value.item() > 0
    value.backward()
    assert target.grad is None
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_perceptual_pyramid_weights_and_options():
    images, other = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    pixel = PerceptualPyramid("none", scales=(1.0,), pixel_weight=2.0)
    torch.testing.assert_close(pixel(images, other), 2.0 * (images - other).abs().mean())
    feats = PerceptualPyramid(random_channels=(4, 4, 4, 4, 4), pixel_weight=0.0)
    double = PerceptualPyramid(random_channels=(4, 4, 4, 4, 4), layer_weights=(20.0,) * 5)
    double.pixel_weight = 0.0
    torch.testing.assert_close(double(images, other), 2 * feats(images, other))
    conv = torch.nn.Conv2d(3, 2, 1)
    custom = PerceptualPyramid(conv, scales=(1.0,), layer_weights=(3.0,), pixel_weight=0)
    with torch.no_grad():
        expected = 3.0 * (conv(images) - conv(other)).abs().mean()
    torch.testing.assert_close(custom(images, other), expected)
    assert not conv.weight.requires_grad
    with pytest.raises(ValueError, match="zip"):  # one weight per feature map
        PerceptualPyramid(conv, layer_weights=(1.0, 1.0))(images, other)
    with pytest.raises(ValueError, match="pixel_weight"):
        PerceptualPyramid("none", pixel_weight=0.0)
    with pytest.raises(ValueError, match="vgg_weights"):
        PerceptualPyramid("vgg19")
    with pytest.raises(ValueError, match="feature_net"):
        PerceptualPyramid("alexnet")
    assert McsLossWeights().perceptual == (10.0,) * 5
    weights = McsLossWeights(equivariance_shift=2.0, equivariance_affine=3.0)
    total = weights.total(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0))
    assert total.item() == 6.0


def _no_download(*args: object, **kwargs: object) -> None:
    raise AssertionError("attempted a download")


def test_vgg_option_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        PerceptualPyramid("vgg19", vgg_weights=tmp_path / "vgg19.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        PerceptualPyramid("vgg19", vgg_weights=tmp_path / "bad.pth")


def test_vgg_option_loads_a_local_file(tmp_path: Path):
    from torchvision.models import vgg19

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in vgg19().features[:30].state_dict().items()}
    state = {f"features.{k}": 0.01 * torch.randn(s) for k, s in shapes.items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    torch.save(state, tmp_path / "vgg19.pth")
    loss = PerceptualPyramid("vgg19", vgg_weights=tmp_path / "vgg19.pth", scales=(1.0,))
    first = loss.features.stages[0][0].weight
    torch.testing.assert_close(first, state["features.0.weight"])
    images = torch.rand(1, 3, 16, 16)
    assert loss(images, images).item() == 0.0 and loss(images, images.flip(-1)).item() > 0


def _segmentation(shift: torch.Tensor, affine: torch.Tensor) -> MCSSegmentation:
    b, k = shift.shape[:2]
    return MCSSegmentation(torch.full((b, k + 1, 4, 4), 1 / (k + 1)), shift, affine)


def test_equivariance_losses_vanish_for_equivariant_inputs():
    torch.manual_seed(0)
    shift = torch.rand(2, 3, 2) * 1.6 - 0.8
    affine = torch.eye(2) + 0.2 * torch.randn(2, 3, 2, 2)
    seg = _segmentation(shift, affine)
    identity = TPSTransform.from_affine(torch.eye(2, 3).expand(2, 2, 3))
    for term in equivariance_losses(seg, seg, identity):
        assert term.item() < 1e-6
    m = torch.tensor([[1.1, 0.2], [-0.1, 0.9]])
    t = torch.tensor([0.05, -0.1])
    moved = TPSTransform.from_affine(torch.cat([m, t[:, None]], 1).expand(2, 2, 3))
    m_inv = torch.linalg.inv(m)
    seg_moved = _segmentation((shift - t) @ m_inv.T, m_inv @ affine)  # p' = M^-1 (p - t)
    for term in equivariance_losses(seg, seg_moved, moved):
        assert term.item() < 1e-5
    shift_loss, affine_loss = equivariance_losses(seg, seg, moved)
    assert shift_loss.item() > 1e-2 and affine_loss.item() > 1e-2


def test_equivariance_gradients_reach_the_transformed_shift():
    seg = _segmentation(torch.zeros(1, 2, 2), torch.eye(2).expand(1, 2, 2, 2))
    shift = torch.full((1, 2, 2), 0.3, requires_grad=True)
    transform = random_mcs_tps(1, generator=torch.Generator().manual_seed(0))
    _, affine_loss = equivariance_losses(seg, _segmentation(shift, seg.affine), transform)
    affine_loss.backward()  # through the TPS Jacobian at p_T'
    assert shift.grad is not None and shift.grad.abs().sum() > 0


# ------------------------------------------------------------------ training


def moving_square_frames() -> torch.Tensor:
    """Two 32x32 frames of an orange square moving right and down on a dark background."""
    frames = torch.full((2, 3, 32, 32), 0.1)
    colour = torch.tensor([0.9, 0.5, 0.2]).view(3, 1, 1)
    frames[0, :, 6:16, 4:14] = colour
    frames[1, :, 12:22, 14:24] = colour
    return frames


def test_short_training_lowers_reconstruction_loss():
    model = tiny_model(num_parts=2).train()
    frames = moving_square_frames()
    source, target = frames, frames.flip(0)  # pairs (0 -> 1) and (1 -> 0)
    reconstruction = PerceptualPyramid(random_channels=(4, 8, 8, 8, 8))
    weights = McsLossWeights()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = reconstruction(model(source, target)["prediction"], target).item()
    for _ in range(10):
        out = model(source, target)
        transform = random_mcs_tps(2, generator=generator)
        seg_transformed = model.segmenter.segment(transform.warp(target, padding_mode="border"))
        shift, affine = equivariance_losses(out["seg_target"], seg_transformed, transform)
        loss = weights.total(reconstruction(out["prediction"], target), shift, affine)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = reconstruction(model(source, target)["prediction"], target).item()
    assert after < 0.8 * before


def test_ssim_pyramid_penalises_blur_more_than_a_brightness_shift():
    """The SSIM term (``feature_net="none", ssim_weight``) scores a blurred prediction far
    worse than a brightness shift of the same L1 error, which the pixel pyramid does not."""
    from kornia.filters import gaussian_blur2d

    torch.manual_seed(0)
    target = F.interpolate(torch.rand(1, 3, 16, 16), size=64, mode="bicubic").clamp(0, 1)
    blur = gaussian_blur2d(target, (7, 7), (1.5, 1.5))
    shift = (target + (blur - target).abs().mean()).clamp(0, 1)
    ssim = PerceptualPyramid("none", pixel_weight=0, ssim_weight=1)
    pixel = PerceptualPyramid("none", pixel_weight=1)
    assert ssim(target, target).item() < 1e-6
    assert ssim(blur, target) > 3 * ssim(shift, target)
    assert pixel(blur, target) < pixel(shift, target)
    prediction = blur.clone().requires_grad_()
    ssim(prediction, target).backward()
    assert prediction.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ssim_weight > 0"):
        PerceptualPyramid("none", pixel_weight=0)


def test_ema_encoder_features_follow_the_generator_and_pass_gradient_to_the_prediction():
    """``feature_net="encoder"``: one frozen map per encoder block (full, 1/2, 1/4), equal to the
    generator's own encoder after an update with decay 0, unchanged with decay 1."""
    model = tiny_mcs()
    teacher = EmaEncoderFeatures(model.generator, decay=1.0).eval()
    images = torch.rand(2, 3, 64, 64)
    maps = teacher(images)
    assert [m.shape[-1] for m in maps] == [64, 32, 16]
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(0.1)
        before = teacher(images)[-1]
        teacher.update(model.generator)  # decay 1: never moves
        assert torch.equal(teacher(images)[-1], before)
        teacher.decay = 0.0
        teacher.update(model.generator)
        assert torch.allclose(teacher(images)[-1], model.generator.eval().encode(images))
    loss = PerceptualPyramid(teacher, layer_weights=(10.0,) * 3, pixel_weight=0)
    prediction = images.clone().requires_grad_()
    loss(prediction, images.flip(-1)).backward()
    assert prediction.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="decay"):
        EmaEncoderFeatures(model.generator, decay=1.5)
