"""Full-resolution part swap (copart_hub.part_swap) and ``copart-hub swap``, with a tiny MCS."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from copart_hub.cli import main
from copart_hub.data.videos import read_video
from copart_hub.evaluation.swaps import swap_sharpness, transfer_error
from copart_hub.models.mcs import MCSSegmentation, part_motion_grid
from copart_hub.ops.coordinates import coordinate_grid
from copart_hub.part_swap import (
    PartSwapper,
    _square_box,
    _write_mp4,
    centre_alignment,
    part_legend,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def swapper(tiny_mcs_checkpoint: Path) -> PartSwapper:
    return PartSwapper(tiny_mcs_checkpoint, device="cpu")


def _image(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    return [np.asarray(_image(h, w, 10 + i)) for i in range(n)]


def _gif(path: Path, n: int) -> Path:
    images = [Image.fromarray(f) for f in _frames(n)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def test_odd_sizes_keep_full_target_size(swapper: PartSwapper) -> None:
    target, source = _image(97, 130, 1), _image(41, 50, 2)
    out = swapper.swap_image(source, target, [1, 3])
    assert out.size == target.size and out.mode == "RGB"


def test_target_unchanged_outside_feathered_mask(swapper: PartSwapper) -> None:
    target = _image(97, 130, 1)
    src = swapper._prepare_source(_image(41, 50, 2))
    result, alpha = swapper._swap_frame(src, target, [2], hard=True, use_source_segmentation=False)
    outside = alpha == 0
    assert outside.any()
    np.testing.assert_array_equal(result[outside], np.asarray(target)[outside])


def test_pixel_render_pastes_the_full_resolution_source(
    tiny_mcs_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``render="pixels"`` under an identity part motion: inside the swap mask the result is
    the source's own full-resolution pixels blended by the paste alpha (the model sees 32x32,
    so no re-drawing could keep this noise), and an affine motion stays affine at full size."""
    swapper = PartSwapper(tiny_mcs_checkpoint, device="cpu", render="pixels")
    size = swapper.model.input_size

    def identity(seg_target, seg_source):
        return coordinate_grid(*seg_target.masks.shape[-2:], "inclusive")[None]

    monkeypatch.setattr("copart_hub.part_swap.part_motion_grid", identity)
    monkeypatch.setattr(PartSwapper, "locate", lambda self, im: (0, 0, im.height, im.width))
    source, target = _image(97, 130, 2), _image(97, 130, 1)
    result, alpha = swapper.swap_image(source, target, [1, 2, 3], return_alpha=True)
    result = np.asarray(result, dtype=np.float64)
    expected = np.asarray(target) * (1 - alpha[..., None]) + np.asarray(source) * alpha[..., None]
    assert alpha.max() > 0.5 and max(size) < 97
    np.testing.assert_allclose(result[alpha > 0], expected[alpha > 0], atol=1.01)
    points = np.array([[0.0, 0.0], [40.5, 60.0], [129.0, 96.0]])
    np.testing.assert_allclose(swapper.transfer_points(source, target, points), points, atol=1e-4)

    shift = 2 / (130 - 1) * 3  # three pixels to the right, in inclusive coordinates
    monkeypatch.setattr(
        "copart_hub.part_swap.part_motion_grid",
        lambda t, s: identity(t, s) + torch.tensor([shift, 0.0]),
    )
    moved = np.asarray(swapper.swap_image(source, target, [1, 2, 3]), dtype=np.float64)
    shifted = np.asarray(target) * (1 - alpha[..., None])
    shifted[:, :-3] += np.asarray(source)[:, 3:] * alpha[:, :-3, None]
    inside = alpha[:, :-3] > 0
    np.testing.assert_allclose(moved[:, :-3][inside], shifted[:, :-3][inside], atol=1.01)
    taken = swapper.transfer_points(source, target, points[:2])
    np.testing.assert_allclose(taken, points[:2] + np.array([3.0, 0.0]), atol=1e-4)
    still = swapper.transfer_points(source, target, points[:2], motion=False)
    np.testing.assert_allclose(still, points[:2], atol=1e-4)
    landmarks = [(points[:2] + np.array([3.0, 0.0]), points[:2])]  # (source's, target's)
    pairs = [(source, target)]
    assert transfer_error(swapper.model, pairs, landmarks) == pytest.approx(0.0, abs=1e-3)
    halved = transfer_error(swapper.model, pairs, landmarks, [2.0], motion=False)
    assert halved == pytest.approx(1.5)  # 3 px off without the motion, divided by the scale
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        swapper.transfer_points(source, target, np.zeros(4))


def test_unknown_render_is_rejected(tiny_mcs_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="render must be one of"):
        PartSwapper(tiny_mcs_checkpoint, device="cpu", render="paint")


def test_swap_sharpness_rewards_detail_under_the_mask() -> None:
    target = np.asarray(_image(40, 50, 1))
    alpha = np.zeros((40, 50), np.float32)
    alpha[10:30, 10:40] = 1.0
    blurred = np.asarray(Image.fromarray(target).filter(ImageFilter.GaussianBlur(2)))
    assert swap_sharpness(target, target, alpha) == pytest.approx(1.0)
    assert swap_sharpness(blurred, target, alpha) < 0.5
    assert np.isnan(swap_sharpness(target, target, np.zeros_like(alpha)))
    with pytest.raises(ValueError, match="must share"):
        swap_sharpness(target[:-1], target, alpha)


@pytest.mark.parametrize("parts", [[], [4], [-1], [1, 1], [1.5]])
def test_bad_parts_are_rejected(swapper: PartSwapper, parts: list) -> None:
    with pytest.raises(ValueError, match="part"):
        swapper.swap_image(_image(20, 20, 1), _image(20, 20, 2), parts)


def test_box_is_square_and_inside() -> None:
    fg = np.zeros((97, 130), bool)
    fg[10:30, 100:120] = True
    top, left, h, w = _square_box(fg, 97, 130, 0.25)
    assert h == w == 30 and left >= 0 and left + w <= 130 and top >= 0
    assert _square_box(None, 97, 130, 0.25) == (0, 16, 97, 97)
    assert _square_box(np.ones((97, 130), bool), 97, 130, 0.25) == (0, 0, 97, 130)


def test_swap_video_gif(swapper: PartSwapper, tmp_path: Path) -> None:
    gif = _gif(tmp_path / "in.gif", 3)
    out = swapper.swap_video(_image(41, 50, 2), gif, [1], tmp_path / "out.gif", progress=False)
    frames, _ = read_video(out)
    assert frames.shape == (3, 48, 64, 3)


def test_swap_video_mp4_keeps_fps(swapper: PartSwapper, tmp_path: Path) -> None:
    mp4 = tmp_path / "in.mp4"
    _write_mp4(_frames(3), 10.0, mp4)
    out = swapper.swap_video(_image(41, 50, 2), mp4, [1, 2], tmp_path / "out.mp4", progress=False)
    frames, fps = read_video(out)
    assert frames.shape == (3, 48, 64, 3) and fps == pytest.approx(10.0)


def test_one_frame_gif_to_png(swapper: PartSwapper, tmp_path: Path) -> None:
    gif = _gif(tmp_path / "one.gif", 1)
    out = swapper.swap_video(_image(41, 50, 2), gif, [3], tmp_path / "one.png", progress=False)
    assert Image.open(out).size == (64, 48)
    with pytest.raises(ValueError, match="one-frame"):
        swapper.swap_video(_image(9, 9, 2), _gif(tmp_path / "3.gif", 3), [1], tmp_path / "x.png")


def test_corrupt_video_and_overwrite_are_refused(swapper: PartSwapper, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"bad\.mp4"):
        swapper.swap_video(_image(9, 9, 2), bad, [1], tmp_path / "o.mp4", progress=False)
    gif = _gif(tmp_path / "in.gif", 2)
    before = gif.read_bytes()
    with pytest.raises(ValueError, match="overwrite"):
        swapper.swap_video(_image(9, 9, 2), gif, [1], gif, progress=False)
    assert gif.read_bytes() == before


def test_part_segmenters_swap_pixels_only_and_other_models_are_refused(
    swapper: PartSwapper,
) -> None:
    from copart_hub import create_model

    alone = PartSwapper(swapper.model.segmenter_only(), device="cpu")
    assert alone.render == "pixels" and alone.parts is swapper.model.segmenter
    with pytest.raises(ValueError, match="needs an MCS model"):
        PartSwapper(swapper.model.segmenter_only(), device="cpu", render="generator")
    with pytest.raises(TypeError, match="not an MCSModel or a part model"):
        PartSwapper(create_model("ssn_pix"), device="cpu")


def test_legend_lists_background_and_parts(swapper: PartSwapper) -> None:
    legend = part_legend(swapper, ["a", "b", "c"])
    assert legend.mode == "RGB" and legend.size == part_legend(swapper.model).size


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("copart-hub: error: "), lines
    return lines[0]


def test_cli_image_and_gif(tiny_mcs_checkpoint: Path, tmp_path: Path) -> None:
    src, tgt = tmp_path / "src.png", tmp_path / "tgt.jpg"
    _image(41, 50, 2).save(src)
    _image(97, 130, 1).save(tgt)
    common = ["--source", str(src), "--parts", "1,3", "--model", str(tiny_mcs_checkpoint)]
    common += ["--device", "cpu"]
    assert main(["swap", *common, "--target", str(tgt), "--out", str(tmp_path / "o.png")]) == 0
    assert Image.open(tmp_path / "o.png").size == (130, 97)
    gif = _gif(tmp_path / "t.gif", 3)
    assert main(["swap", *common, "--target", str(gif), "--out", str(tmp_path / "o.gif")]) == 0
    assert read_video(tmp_path / "o.gif")[0].shape[0] == 3
    out = tmp_path / "pixels.png"  # the source's own pixels: a different result
    assert (
        main(["swap", *common, "--target", str(tgt), "--out", str(out), "--render", "pixels"]) == 0
    )
    assert (
        np.abs(
            np.asarray(Image.open(out), float) - np.asarray(Image.open(tmp_path / "o.png"))
        ).max()
        > 0
    )


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("bad_target", "tgt.png"),
        ("overwrite", "overwrite"),
        ("parts", "--parts"),
        ("range", "0..3"),
    ],
)
def test_cli_errors_are_one_line(
    tiny_mcs_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
    message: str,
) -> None:
    src, tgt = tmp_path / "src.png", tmp_path / "tgt.png"
    _image(41, 50, 2).save(src)
    _image(40, 40, 1).save(tgt)
    out, parts = tmp_path / "o.png", "1"
    if which == "bad_target":
        tgt.write_bytes(b"garbage")
    elif which == "overwrite":
        out = tgt
    elif which == "parts":
        parts = "1,x"
    else:
        parts = "7"
    before = tgt.read_bytes()
    argv = ["swap", "--source", str(src), "--target", str(tgt), "--parts", parts]
    argv += ["--out", str(out), "--model", str(tiny_mcs_checkpoint), "--device", "cpu"]
    assert main(argv) == 2
    assert message in _error_line(capsys)
    assert tgt.read_bytes() == before


def test_cli_corrupt_video(tiny_mcs_checkpoint: Path, tmp_path: Path, capsys) -> None:
    src, bad = tmp_path / "src.png", tmp_path / "bad.gif"
    _image(41, 50, 2).save(src)
    bad.write_bytes(b"GIF89a broken")
    argv = ["swap", "--source", str(src), "--target", str(bad), "--parts", "1"]
    argv += [
        "--out",
        str(tmp_path / "o.mp4"),
        "--model",
        str(tiny_mcs_checkpoint),
        "--device",
        "cpu",
    ]
    assert main(argv) == 2
    assert "bad.gif" in _error_line(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_mp4_writer_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    _write_mp4(_frames(2, 47, 63), 12.0, path)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.width == 64


def test_smooth_boxes_removes_jitter_and_stays_inside() -> None:
    from copart_hub.part_swap import smooth_boxes

    jitter = [(10 + (5 if t % 2 else -5), 20, 40, 40) for t in range(9)]
    smooth = smooth_boxes(jitter, 100, 120, window=5)
    tops = [b[0] for b in smooth[2:-2]]
    assert max(tops) - min(tops) <= 2  # +-5 px alternation averages out
    assert smooth_boxes(jitter, 100, 120, window=1) == jitter
    edge = smooth_boxes([(0, 0, 50, 50), (60, 80, 50, 50)], 100, 120, window=3)
    for top, left, h, w in edge:
        assert top >= 0 and top + h <= 100 and left >= 0 and left + w <= 120


def test_video_swap_encodes_the_source_once(swapper: PartSwapper, monkeypatch) -> None:
    calls = []
    encode = swapper.model.generator.encode_levels

    def counting(x):
        calls.append(x.shape[0])
        return encode(x)

    monkeypatch.setattr(swapper.model.generator, "encode_levels", counting)
    frames = np.stack([np.asarray(_image(30, 40, s)) for s in range(3)])
    out = swapper.swap_frames(_image(50, 50, 9), frames, 10.0, [1], progress=False)
    assert len(out) == 3 and out[0].shape == (30, 40, 3)
    assert len(calls) == 1 + 3  # the source once, then one encode per target frame


def test_centre_alignment_maps_each_target_part_onto_the_same_source_part() -> None:
    """Source centres an exact affine image of the target's: the fitted ``L`` is its linear
    part (up to the small ridge), and the motion takes every target centre to its source
    centre."""
    rng = np.random.default_rng(0)
    k, size = 5, 33
    p_t = torch.tensor(rng.uniform(-0.6, 0.6, (1, k, 2)), dtype=torch.float32)
    linear = torch.tensor([[0.9, 0.2], [-0.1, 1.1]])
    p_s = p_t @ linear.T + torch.tensor([0.1, -0.05])
    grid = coordinate_grid(size, size, "inclusive")
    labels = ((grid[None] - p_t[0, :, None, None]).norm(dim=-1)).argmin(0) + 1  # Voronoi parts
    masks = torch.nn.functional.one_hot(labels, k + 1).permute(2, 0, 1)[None].float()
    eye = torch.eye(2).expand(1, k, 2, 2)
    seg_t = MCSSegmentation(masks, p_t, eye)
    seg_s = centre_alignment(MCSSegmentation(masks, p_s, eye), seg_t, ridge=1e-6)
    torch.testing.assert_close(seg_s.affine[0, 0], linear, atol=1e-3, rtol=0)
    motion = part_motion_grid(seg_t, seg_s)[0]  # [h, w, 2]
    pix = ((p_t[0] + 1) / 2 * (size - 1)).round().long()  # nearest grid points to the centres
    z = grid[pix[:, 1], pix[:, 0]]
    expected = (z - p_t[0]) @ linear.T + p_s[0]
    torch.testing.assert_close(motion[pix[:, 1], pix[:, 0]], expected, atol=1e-3, rtol=0)


def test_a_scops_model_swaps_with_its_own_parts() -> None:
    from copart_hub import create_model

    scops = create_model("scops_fpn_regnetx_002", num_parts=4, input_size=(64, 64))
    swapper = PartSwapper(scops, device="cpu")
    assert swapper.render == "pixels" and swapper.num_parts == 4
    target = _image(70, 90, 1)
    result, alpha = swapper.swap_image(_image(50, 60, 2), target, [1, 2], return_alpha=True)
    assert result.size == target.size and alpha.max() > 0
    np.testing.assert_array_equal(np.asarray(result)[alpha == 0], np.asarray(target)[alpha == 0])
    with pytest.raises(ValueError, match="needs an MCS model"):
        PartSwapper(scops, device="cpu", render="generator")
