"""PartSegmenter, SuperpixelSegmenter and load_model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import copart_hub
from copart_hub.hub import ModelNotFoundError
from copart_hub.models.ssn import SSN
from copart_hub.pipelines import (
    PartSegmentation,
    PartSegmenter,
    SuperpixelSegmenter,
    load_model,
    pick_device,
)
from copart_hub.processing import upsample_bands, upsample_logits


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (64, 9)])
def test_part_outputs_have_the_original_size(tiny_part_model, size) -> None:
    h, w = size
    res = PartSegmenter(tiny_part_model, device="cpu")(_random_image(h, w))
    k = tiny_part_model.num_parts
    assert isinstance(res, PartSegmentation)
    assert res.labels.shape == (h, w) and res.labels.dtype == np.uint8
    assert res.logits.shape == (k + 1, 8, 10)  # the model's output resolution, not the image's
    assert res.masks.shape == (k + 1, h, w) and res.masks.dtype == np.float32
    np.testing.assert_allclose(res.masks.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(res.labels, res.masks.argmax(0))
    assert res.centres.shape == (k, 2) and res.areas.shape == (k,)
    expected_areas = [(res.labels == i).mean() for i in range(1, k + 1)]
    np.testing.assert_allclose(res.areas, expected_areas, atol=1e-6)
    assert res.overlay.size == (w, h)
    summary = res.to_json()
    assert (summary["width"], summary["height"], summary["num_parts"]) == (w, h, k)
    assert len(summary["centres"]) == len(summary["areas"]) == k


def test_part_centres_and_areas_follow_the_blobs(red_part_model) -> None:
    image = np.zeros((40, 60, 3), np.uint8)  # model input is 20x30: exact 2x downscale
    image[20:28, 8:24] = (255, 0, 0)  # red: 8 rows x 16 cols, centre (x, y) = (15.5, 23.5)
    image[4:12, 40:56] = (0, 0, 255)  # blue: centre (47.5, 7.5)
    res = PartSegmenter(red_part_model, device="cpu")(image)
    np.testing.assert_allclose(res.centres, [[15.5, 23.5], [47.5, 7.5]], atol=0.3)
    np.testing.assert_allclose(res.areas, [128 / 2400, 128 / 2400], atol=0.02)
    assert res.labels[23, 15] == 1 and res.labels[7, 47] == 2 and res.labels[35, 5] == 0
    background = np.asarray(res.overlay)[35, 5]
    assert tuple(background) == (0, 0, 0)  # background pixels are left unchanged


def test_to_json_is_strict_json_for_absent_parts() -> None:
    res = PartSegmentation(
        labels=np.zeros((2, 3), np.uint8),
        logits=np.zeros((3, 1, 1), np.float32),
        centres=np.array([[1.0, 0.5], [np.nan, np.nan]], np.float32),
        areas=np.zeros(2, np.float32),
        overlay=Image.new("RGB", (3, 2)),
    )
    summary = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert summary["centres"] == [[1.0, 0.5], None]
    assert (summary["width"], summary["height"], summary["num_parts"]) == (3, 2, 2)


def test_batches_match_single_images(tiny_part_model) -> None:
    images = [_random_image(37, 53, 1), torch.rand(3, 21, 30), _random_image(1, 1, 2)]
    segmenter = PartSegmenter(tiny_part_model, device="cpu", batch_size=2)
    batched = segmenter(images)
    assert isinstance(batched, list) and len(batched) == 3
    for image, res in zip(images, batched, strict=True):
        single = segmenter(image)
        np.testing.assert_array_equal(res.labels, single.labels)
        np.testing.assert_allclose(res.masks, single.masks, atol=1e-5)
        np.testing.assert_allclose(res.centres, single.centres, atol=1e-3)


def test_part_segmenter_from_checkpoint_folder(tiny_part_model, tiny_part_checkpoint) -> None:
    image = _random_image(13, 17)
    expected = PartSegmenter(tiny_part_model, device="cpu")(image)
    loaded = PartSegmenter(str(tiny_part_checkpoint), device="cpu")(image)
    np.testing.assert_allclose(loaded.masks, expected.masks, atol=1e-6)
    with pytest.raises(TypeError, match="not a PartModel"):
        PartSegmenter("ssn_pix", device="cpu")


def test_load_model_names_and_errors(tmp_path: Path) -> None:
    pix = load_model("ssn_pix", device="cpu")
    assert isinstance(pix, SSN) and not pix.deep and not pix.training
    with pytest.raises(ModelNotFoundError, match="no bundled checkpoint"):
        load_model("ssn_deep")
    with pytest.raises(ModelNotFoundError):
        load_model(tmp_path / "does" / "not" / "exist")
    deep = copart_hub.create_model("ssn_deep")
    deep.save_pretrained(tmp_path / "deep")
    loaded = load_model(tmp_path / "deep", device="cpu")
    assert isinstance(loaded, SSN) and loaded.deep
    for key, value in deep.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("n", [12, 48])
def test_superpixels_count_and_connectivity(n) -> None:
    ys, xs = np.mgrid[0:48, 0:64]
    smooth = np.stack([xs * 4, ys * 5, (xs + ys) * 2], -1).astype(np.uint8)
    segmenter = SuperpixelSegmenter("ssn_pix", device="cpu")
    res = segmenter(smooth, n_spixels=n)
    assert res.labels.shape == (48, 64) and res.labels.dtype == np.int32
    assert abs(res.num_superpixels - n) <= n // 4
    np.testing.assert_array_equal(np.unique(res.labels), np.arange(res.num_superpixels))
    assert res.overlay.size == (64, 48)
    raw = segmenter([smooth, Image.fromarray(smooth)], n_spixels=n, connectivity=False)
    assert len(raw) == 2 and raw[0].labels.max() < n
    np.testing.assert_array_equal(raw[0].labels, raw[1].labels)


def test_superpixels_full_resolution_with_a_saved_deep_model(tmp_path: Path) -> None:
    copart_hub.create_model("ssn_deep", hidden_dim=4).save_pretrained(tmp_path / "deep")
    res = SuperpixelSegmenter(tmp_path / "deep", device="cpu")(_random_image(37, 53), 20)
    assert res.labels.shape == (37, 53)
    assert res.num_superpixels == res.labels.max() + 1


@pytest.mark.parametrize("n", [0, -3, 24 * 32 + 1, 2.5])
def test_bad_superpixel_counts_raise_value_error(rgb_array, n) -> None:
    segmenter = SuperpixelSegmenter("ssn_pix", device="cpu")
    with pytest.raises(ValueError, match=r"superpixels|n_spixels") as info:
        segmenter(rgb_array, n_spixels=n)
    assert "\n" not in str(info.value)


def test_superpixel_refinement_makes_parts_constant_per_superpixel(tiny_part_model) -> None:
    from copart_hub.pipelines import PartSegmenter, SuperpixelSegmenter

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    plain = PartSegmenter(tiny_part_model)(image)
    snapped = PartSegmenter(tiny_part_model, refine="ssn_pix", refine_spixels=12)(image)
    sp = SuperpixelSegmenter("ssn_pix")(image, 12).labels
    for label in np.unique(sp):
        region = snapped.masks[:, sp == label]
        assert np.allclose(region, region[:, :1], atol=1e-6)  # one value per superpixel
    assert snapped.masks.shape == plain.masks.shape
    assert np.allclose(snapped.masks.sum(0), 1, atol=1e-5)
    assert not np.allclose(snapped.masks, plain.masks)


def test_grabcut_refinement_grows_the_foreground_and_keeps_part_proportions() -> None:
    rng = np.random.default_rng(0)
    image = np.full((60, 80, 3), (90, 140, 90), np.uint8)
    image[15:45, 25:55] = (200, 40, 40)  # the object
    image = np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
    masks = torch.tensor([0.9, 0.04, 0.06])[:, None, None].repeat(1, 60, 80)
    masks[:, 12:30, 20:45] = torch.tensor([0.2, 0.6, 0.2])[:, None, None]  # shifted, too small
    refined = PartSegmenter._grabcut(masks, Image.fromarray(image))
    fg = (refined.argmax(0) != 0).numpy()
    obj = np.zeros((60, 80), bool)
    obj[15:45, 25:55] = True
    assert (fg & obj).sum() / (fg | obj).sum() > 0.9
    assert torch.allclose(refined.sum(0), torch.ones(60, 80))
    inside = refined[1:, 20, 30]
    assert torch.allclose(inside, torch.tensor([0.75, 0.25]))  # 0.6 : 0.2 among the parts
    assert refined[0, 5, 5] == 1 and refined[0, 40, 50] == 0  # background / grown into:
    assert torch.allclose(refined[1:, 40, 50], torch.tensor([0.4, 0.6]))  # its likelier part


def test_grabcut_option_of_the_segmenter(red_part_model) -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:30, 15:45] = (255, 0, 0)
    plain = PartSegmenter(red_part_model, device="cpu")(image)
    refined = PartSegmenter(red_part_model, device="cpu", grabcut=True)(image)
    np.testing.assert_array_equal(refined.labels, refined.masks.argmax(0))
    assert set(np.unique(refined.masks[0])) <= {0.0, 1.0}
    assert ((refined.labels != 0) == (plain.labels != 0)).mean() > 0.95


def test_masks_are_kept_small_and_upsampled_on_request(tiny_part_model) -> None:
    image = _random_image(45, 70, 3)
    res = PartSegmenter(tiny_part_model, device="cpu")(image)
    segmenter = PartSegmenter(tiny_part_model, device="cpu")
    with torch.no_grad():
        logits = tiny_part_model(segmenter.preprocess([Image.fromarray(image)]))
    np.testing.assert_allclose(res.logits, logits[0].numpy(), atol=1e-6)
    for size in [(45, 70), (90, 13), (3, 4)]:
        expected = upsample_logits(logits, size).softmax(1)[0].numpy()
        np.testing.assert_allclose(res.masks_at(size), expected, atol=1e-6)
    np.testing.assert_allclose(res.masks, res.masks_at((45, 70)))


@pytest.mark.parametrize("size", [(45, 70), (7, 300), (5, 3), (1, 1)])
def test_bands_put_together_equal_full_upsampling(size) -> None:
    x = torch.randn(3, 6, 9)
    expected = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    bands = list(upsample_bands(x, size, band_pixels=50))
    assert len(bands) == -(-size[0] // max(1, 50 // size[1]))
    assert [r.start for r, _ in bands] == sorted(r.start for r, _ in bands)
    together = torch.cat([b for _, b in bands], 1)
    torch.testing.assert_close(together, expected, atol=1e-5, rtol=0)  # float32 rounding
    shrunk = list(upsample_bands(x, (3, 4), antialias=True, band_pixels=5))
    antialiased = F.interpolate(x[None], size=(3, 4), mode="bilinear", antialias=True)[0]
    assert len(shrunk) == 1 and torch.equal(shrunk[0][1], antialiased)


def test_summaries_over_many_bands_match_full_resolution(tiny_part_model, monkeypatch) -> None:
    import copart_hub.processing as processing

    image = _random_image(61, 83, 4)
    whole = PartSegmenter(tiny_part_model, device="cpu")(image)
    monkeypatch.setattr(processing, "BAND_PIXELS", 100)  # ~1 row per band
    monkeypatch.setattr(processing.upsample_bands, "__defaults__", (False, 100))
    banded = PartSegmenter(tiny_part_model, device="cpu")(image)
    np.testing.assert_array_equal(banded.labels, whole.labels)
    masks = whole.masks
    np.testing.assert_array_equal(whole.labels, masks.argmax(0))
    ys, xs = np.mgrid[0:61, 0:83]
    parts = masks[1:]
    centres = np.stack([(parts * xs).sum((1, 2)), (parts * ys).sum((1, 2))], 1)
    centres /= parts.sum((1, 2))[:, None]
    for res in (whole, banded):
        np.testing.assert_allclose(res.centres, centres, rtol=1e-5)


def test_to_hf_is_the_transformers_segmentation_format(red_part_model) -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[20:28, 8:24] = (255, 0, 0)  # part 1 only: part 2 (blue) is absent
    res = PartSegmenter(red_part_model, device="cpu")(image)
    out = res.to_hf()
    assert [d["label"] for d in out] == ["background", "part 1"]
    masks = res.masks
    for d, k in zip(out, (0, 1), strict=True):
        assert set(d) == {"score", "label", "mask"} and isinstance(d["score"], float)
        mask = d["mask"]
        assert isinstance(mask, Image.Image) and mask.mode == "L" and mask.size == (60, 40)
        values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        np.testing.assert_array_equal(values == 255, res.labels == k)
        assert d["score"] == pytest.approx(masks[k][res.labels == k].mean(), abs=1e-5)
        assert 0.5 < d["score"] <= 1
    named = res.to_hf(names=["body", "sky"])
    assert [d["label"] for d in named] == ["background", "body"]


def test_superpixels_run_at_the_working_size(rgb_array) -> None:
    from skimage.measure import label as components

    image = np.kron(rgb_array, np.ones((4, 4, 1), np.uint8))  # 96 x 128
    small = SuperpixelSegmenter("ssn_pix", device="cpu", max_pixels=600)
    res = small(image, n_spixels=24)
    assert res.labels.shape == (96, 128) and res.labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(res.labels), np.arange(res.num_superpixels))
    assert abs(res.num_superpixels - 24) <= 6
    for label in range(res.num_superpixels):  # still one 4-connected region each
        assert components(res.labels == label, connectivity=1).max() == 1
    full = SuperpixelSegmenter("ssn_pix", device="cpu")(image, n_spixels=24).labels
    overlap = np.bincount(res.labels.ravel() * (full.max() + 1) + full.ravel())
    overlap = np.pad(overlap, (0, res.num_superpixels * (full.max() + 1) - len(overlap)))
    asa = overlap.reshape(res.num_superpixels, -1).max(1).sum() / full.size
    assert asa > 0.85  # nearly the superpixels of the full-resolution run


def test_refinements_run_at_the_working_size(red_part_model) -> None:
    image = np.zeros((80, 120, 3), np.uint8)
    image[20:60, 30:90] = (255, 0, 0)
    res = PartSegmenter(red_part_model, device="cpu", grabcut=True, max_pixels=2400)(image)
    assert res.logits.shape == (3, 40, 60) and res.labels.shape == (80, 120)
    assert (res.labels[25:55, 35:85] == 1).all() and (res.labels[:10] == 0).all()


@pytest.mark.parametrize("size", [(37, 53), (130, 67), (5, 90)])
def test_ssn_features_in_tiles_equal_the_untiled_ones(size) -> None:
    torch.manual_seed(0)
    net = copart_hub.create_model("ssn_deep", hidden_dim=8).eval().feature_net.double()
    for module in net.modules():  # non-trivial weights (the init is N(0, 1e-3))
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.3)
    x = torch.rand(1, 5, *size, dtype=torch.float64)  # float64: equal, not just float-close
    with torch.no_grad():
        whole = F.relu(net.head(torch.cat([x, *_untiled_maps(net, x)], 1)))
        tiled = net.forward_tiled(x, tile=16, halo=48)
        assert torch.equal(net(x), whole)  # below TILE_PIXELS: untiled
    torch.testing.assert_close(tiled, whole, atol=1e-9, rtol=1e-9)


def _untiled_maps(net, x: torch.Tensor) -> list[torch.Tensor]:
    c2 = net.stage1(x)
    c4 = net.stage2(c2)
    c6 = net.stage3(c4)
    up = [F.interpolate(c, size=x.shape[-2:], mode="bilinear") for c in (c4, c6)]
    return [c2, *up]
