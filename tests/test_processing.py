"""Image loading: every input kind, EXIF, transparency, 16-bit, and clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from copart_hub.processing import InvalidImageError, image_to_tensor, load_image, to_pil_list

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # stored 20 wide x 10 high: left half red, right half blue; orientation 6 = rotate 90 CW
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :10] = RED
    stored[:, 10:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())

    px = _pixels(load_image(path))
    assert px.shape == (20, 10, 3)  # displayed 10 wide x 20 high
    assert np.abs(px[2, 5].astype(int) - RED).max() < 40  # left went to the top
    assert np.abs(px[17, 5].astype(int) - BLUE).max() < 40


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent
    rgba[0, 2] = (0, 0, 0, 128)  # half transparent black
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)

    for source in (path, rgba):
        px = _pixels(load_image(source))
        assert tuple(px[0, 0]) == RED
        assert tuple(px[0, 1]) == WHITE
        assert np.abs(px[0, 2].astype(int) - 127).max() <= 1


def test_palette_transparency_is_composited(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 1
    path = tmp_path / "palette.png"
    img.save(path, transparency=1)
    assert (_pixels(load_image(path)) == 255).all()


def test_16bit_png_is_scaled_to_8bit(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535, 128]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really 16-bit on disk
    px = _pixels(load_image(path))
    np.testing.assert_array_equal(px[0, :, 0], [0, 100, 255, 0])
    assert (px[..., 0] == px[..., 2]).all()
    np.testing.assert_array_equal(_pixels(load_image(values))[0, :, 1], [0, 100, 255, 0])


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    for source in (path, gray, gray[..., None]):
        px = _pixels(load_image(source))
        assert px.shape == (3, 4, 3)
        for c in range(3):
            np.testing.assert_array_equal(px[..., c], gray)


def test_numpy_inputs(rgb_array: np.ndarray) -> None:
    np.testing.assert_array_equal(_pixels(load_image(rgb_array)), rgb_array)
    as_float = rgb_array.astype(np.float32) / 255
    np.testing.assert_array_equal(_pixels(load_image(as_float)), rgb_array)
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(_pixels(load_image(mask))[0, :, 0], [255, 0])


def test_tensor_inputs_are_channels_first(rgb_array: np.ndarray) -> None:
    chw = torch.from_numpy(rgb_array).permute(2, 0, 1)
    np.testing.assert_array_equal(_pixels(load_image(chw)), rgb_array)
    np.testing.assert_array_equal(_pixels(load_image(chw.float() / 255)), rgb_array)
    assert load_image(chw[:1]).size == (32, 24)


def test_to_pil_list_shapes(rgb_array: np.ndarray, image_file: Path) -> None:
    assert len(to_pil_list(image_file)) == 1
    mixed = to_pil_list([image_file, rgb_array, Image.fromarray(rgb_array)])
    assert [im.size for im in mixed] == [(32, 24)] * 3
    batch = torch.rand(5, 3, 7, 9)
    assert [im.size for im in to_pil_list(batch)] == [(9, 7)] * 5


def test_image_to_tensor(rgb_array: np.ndarray) -> None:
    img = Image.fromarray(rgb_array)
    t = image_to_tensor(img)
    assert t.shape == (3, 24, 32) and t.dtype == torch.float32
    torch.testing.assert_close(t[:, 3, 5] * 255, torch.tensor(rgb_array[3, 5], dtype=torch.float))
    small = image_to_tensor(img, (6, 16))  # (height, width)
    assert small.shape == (3, 6, 16)
    assert small.min() >= 0 and small.max() <= 1
    # antialiased: a 6x downscale of noise averages 6x6 blocks instead of sampling 2x2
    noise = np.random.default_rng(0).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    assert image_to_tensor(Image.fromarray(noise), (10, 10)).std() < 0.3 * (noise / 255).std()


def _truncated_jpeg(tmp_path: Path, rgb_array: np.ndarray) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.tile(rgb_array, (4, 4, 1))).save(buf, "JPEG")
    path = tmp_path / "truncated.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda tmp, _: tmp / "missing.png", "no such file"),
        (lambda tmp, _: tmp, "not a file"),
        (lambda tmp, _: _write(tmp / "junk.png", b"not an image at all"), "not a readable"),
        (lambda tmp, _: _write(tmp / "empty.jpg", b""), "not a readable"),
        (_truncated_jpeg, "truncated"),
        (lambda *_: np.zeros((0, 5, 3), np.uint8), "empty"),
        (lambda *_: np.zeros((4, 5, 2), np.uint8), "shape"),
        (lambda *_: np.zeros((3, 4, 5), np.uint8), "torch tensor"),
        (lambda *_: np.zeros((4, 5), np.int32), "dtype"),
        (lambda *_: np.full((4, 5), 3.0), r"\[0, 1\]"),
        (lambda *_: np.full((4, 5), np.nan), "NaN"),
        (lambda *_: torch.zeros(5, 4, 4), "C in 1, 3, 4"),
        (lambda *_: torch.zeros(3, 4, 4, dtype=torch.int64), "uint8 or float"),
        (lambda *_: 42, "unsupported image input"),
        (lambda *_: [], "empty list"),
    ],
)
def test_invalid_inputs_raise_one_line_errors(make, match, tmp_path, rgb_array) -> None:
    with pytest.raises(InvalidImageError, match=match) as info:
        to_pil_list(make(tmp_path, rgb_array))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A 1-bit PNG that declares ``width x height`` pixels but holds no pixel data (tens of
    bytes): only a reader that decodes would notice."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_pixel_cap_refuses_large_images_before_decoding(tmp_path: Path, monkeypatch) -> None:
    from PIL import ImageFile

    from copart_hub.processing import MAX_PIXELS_ENV, ImageTooLargeError

    big = _png_header(tmp_path / "big.png", 20_000, 10_000)  # 200 MP

    def load(self: ImageFile.ImageFile) -> None:
        raise OSError("decoding started")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    with pytest.raises(
        ImageTooLargeError, match=r"20000x10000 \(200 MP\) is over the limit of 100 MP"
    ):
        load_image(big)
    assert Image.MAX_IMAGE_PIXELS == 100_000_000  # PIL's check agrees
    monkeypatch.setenv(MAX_PIXELS_ENV, "5e7")  # past twice the limit PIL refuses it first
    with pytest.raises(ImageTooLargeError, match=r"200 MP is over the limit of 50 MP"):
        load_image(big)
    monkeypatch.setenv(MAX_PIXELS_ENV, "300_000_000")  # raised: the header passes, decoding runs
    with pytest.raises(InvalidImageError, match="decoding started"):
        load_image(big)


def test_pixel_cap_applies_to_every_input_kind(monkeypatch, rgb_array) -> None:
    from copart_hub.processing import MAX_PIXELS_ENV, ImageTooLargeError

    monkeypatch.setenv(MAX_PIXELS_ENV, str(24 * 32 - 1))
    for image in (rgb_array, Image.fromarray(rgb_array), torch.zeros(3, 24, 32)):
        with pytest.raises(
            ImageTooLargeError, match=r"32x24 \(768 pixels\) is over the limit of 767 pixels"
        ):
            load_image(image)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(24 * 32))
    assert load_image(rgb_array).size == (32, 24)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InvalidImageError, match=MAX_PIXELS_ENV):
        load_image(rgb_array)


def test_cli_refuses_a_large_image_in_one_line(tmp_path: Path, capsys) -> None:
    from copart_hub.cli import main

    big = _png_header(tmp_path / "big.png", 20_000, 10_000)
    for argv in (
        ["superpixels", str(big), "--model", "ssn_pix", "--out", str(tmp_path / "o")],
        ["saliency", str(big), "--out", str(tmp_path / "o")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "image too large: 20000x10000" in err
    assert not (tmp_path / "o").exists()
