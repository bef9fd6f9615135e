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
from copart_hub.evaluation.swaps import swap_sharpness
from copart_hub.ops.coordinates import coordinate_grid
from copart_hub.part_swap import PartSwapper, _square_box, _write_mp4, part_legend

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
    generator = swapper.model.generator
    size = swapper.model.input_size

    def identity(seg_source, seg_target):
        grid = coordinate_grid(*seg_target.masks.shape[-2:], "inclusive")[None]
        return grid, torch.ones_like(seg_target.masks[:, :1])

    monkeypatch.setattr(generator, "motion", identity)
    monkeypatch.setattr(swapper, "locate", lambda image: (0, 0, image.height, image.width))
    source, target = _image(97, 130, 2), _image(97, 130, 1)
    result, alpha = swapper.swap_image(source, target, [1, 2, 3], return_alpha=True)
    result = np.asarray(result, dtype=np.float64)
    expected = np.asarray(target) * (1 - alpha[..., None]) + np.asarray(source) * alpha[..., None]
    assert alpha.max() > 0.5 and max(size) < 97
    np.testing.assert_allclose(result[alpha > 0], expected[alpha > 0], atol=1.01)

    shift = 2 / (130 - 1) * 3  # three pixels to the right, in inclusive coordinates
    monkeypatch.setattr(
        generator, "motion", lambda s, t: (identity(s, t)[0] + torch.tensor([shift, 0.0]), None)
    )
    moved = np.asarray(swapper.swap_image(source, target, [1, 2, 3]), dtype=np.float64)
    shifted = np.asarray(target) * (1 - alpha[..., None])
    shifted[:, :-3] += np.asarray(source)[:, 3:] * alpha[:, :-3, None]
    inside = alpha[:, :-3] > 0
    np.testing.assert_allclose(moved[:, :-3][inside], shifted[:, :-3][inside], atol=1.01)


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


def test_non_mcs_model_is_a_type_error(swapper: PartSwapper) -> None:
    with pytest.raises(TypeError, match="MCSModel"):
        PartSwapper(swapper.model.segmenter_only(), device="cpu")


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
