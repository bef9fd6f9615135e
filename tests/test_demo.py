"""The Gradio Space (spaces_demo/): tab functions, the API through gradio_client, a real browser."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install 'copart-hub[demo]')")

from copart_hub.spaces_demo import app  # noqa: E402
from copart_hub.spaces_demo.browser import browser_page, find_chromium, run_swap  # noqa: E402

from copart_hub.cli import main as cli_main  # noqa: E402
from copart_hub.data.videos import read_video  # noqa: E402
from copart_hub.part_swap import _write_mp4  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_mcs_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> app.DemoModels:
    from conftest import TinyPartModel

    parts = tmp_path_factory.mktemp("demo") / "tiny_parts"
    TinyPartModel(num_parts=3, height=16, width=20).save_pretrained(parts)
    return app.DemoModels(
        parts={"tiny parts": str(parts), "tiny mcs": str(tiny_mcs_checkpoint)},
        swap={"tiny mcs": str(tiny_mcs_checkpoint)},
        superpixels="ssn_bsds500",
    )


def _png(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def _truncated_jpeg(path: Path) -> str:
    """A JPEG whose header reads but whose data stops halfway."""
    data = io.BytesIO()
    Image.open(_png(path.with_suffix(".png"), 64, 64)).save(data, "JPEG")
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    return str(path)


def _huge_png(path: Path) -> str:
    """A 30 MP image (1-bit, a few kB on disk) that the 25 MP limit refuses."""
    Image.new("1", (6000, 5000)).save(path)
    return str(path)


# -- functions behind the tabs -----------------------------------------------------------------


def test_zoo_models_are_sorted_by_kind() -> None:
    found = app.DemoModels.from_zoo()
    assert found.superpixels == "ssn_bsds500"
    assert "ssn_bsds500" not in found.parts and "ssn_bsds500" not in found.swap
    assert set(found.swap) <= set(found.parts)


def test_a_space_adds_the_released_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "zoo_names", lambda: ["ssn_bsds500"])  # what the wheel bundles
    monkeypatch.delenv("SYSTEM", raising=False)
    assert app.DemoModels.from_zoo() == app.DemoModels(superpixels="ssn_bsds500")
    monkeypatch.setenv("SYSTEM", "spaces")
    found = app.DemoModels.from_zoo()
    assert set(found.parts) == {"scops_faces300w", "scops_horses", "mcs_faces", "mcs_taichi"}
    assert list(found.swap) == ["mcs_faces", "mcs_taichi", "scops_faces300w", "scops_horses"]
    assert found.descriptors == {"dve_faces300w": "dve_faces300w"}
    # face swaps default to the part motion fitted on the face descriptors' matches
    assert found.default_motion("mcs_faces") == "dve_faces300w"
    assert found.default_motion("mcs_taichi") == app.OWN_MOTION
    assert found.superpixels == "ssn_bsds500"
    resolve = app.resolve_checkpoint

    def unreachable(name: str) -> tuple[Path, Path]:
        if name == "scops_horses":
            raise app.ModelNotFoundError("scops_horses: the Hub cannot be reached")
        return resolve(name)

    monkeypatch.setattr(app, "resolve_checkpoint", unreachable)
    assert "scops_horses" not in app.DemoModels.from_zoo().parts  # left out, the rest still shown


def test_segment_outputs(models: app.DemoModels, tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", 37, 53)
    overlay, legend, gallery, files = app.segment(models, image, "tiny parts", False)
    assert Image.open(overlay).size == (53, 37)
    assert len(gallery) == 3 and all(Image.open(img).size == (53, 37) for img, _ in gallery)
    labels = np.asarray(Image.open(files[0]))
    assert labels.shape == (37, 53) and labels.max() <= 3
    summary = json.loads(Path(files[1]).read_text())
    assert summary["num_parts"] == 3 and summary["width"] == 53
    areas = [float(caption.split(": ")[1].split("%")[0]) for _, caption in gallery]
    assert sum(areas) == pytest.approx(100 * np.mean(labels > 0), abs=0.2)
    assert Image.open(legend).height > 0


def test_segment_refined_snaps_to_superpixels(models: app.DemoModels, tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", 40, 60)
    _, _, _, files = app.segment(models, image, "tiny parts", True)
    assert np.asarray(Image.open(files[0])).shape == (40, 60)
    _, _, _, files = app.segment(models, image, "tiny parts", False, True)
    assert json.loads(Path(files[1]).read_text())["grabcut"] is True


def test_superpixels_side_by_side(models: app.DemoModels, tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", 60, 80)
    ssn, slic_overlay, text = app.superpixels(models, image, 50)
    assert Image.open(ssn).size == Image.open(slic_overlay).size == (80, 60)
    assert "SSN" in text and "SLIC" in text and "requested 50" in text


def test_slic_runs_at_the_working_size(
    models: app.DemoModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At full size SLIC took 3.4 GB and 40 s per 25 MP request; it now runs where SSN does."""
    monkeypatch.setattr(app, "WORKING_PIXELS", 1200)
    shapes = []
    slic = app.slic

    def recording(image: np.ndarray, **kwargs: Any) -> np.ndarray:
        shapes.append(image.shape[:2])
        return slic(image, **kwargs)

    monkeypatch.setattr(app, "slic", recording)
    image = _png(tmp_path / "a.png", 60, 80)
    _, slic_overlay, text = app.superpixels(models, image, 50)
    (shape,) = shapes
    assert shape[0] * shape[1] <= 1200 and shape[1] / shape[0] == pytest.approx(80 / 60, rel=0.1)
    assert Image.open(slic_overlay).size == (80, 60)
    count, labels = app.slic_labels(Image.open(image).convert("RGB"), 50)
    assert labels.shape == (60, 80) and len(np.unique(labels)) == count
    assert f"SLIC (scikit-image): {count} superpixels" in text


def test_click_toggles_the_part_under_the_pointer() -> None:
    labels = np.zeros((10, 20), dtype=np.int64)
    labels[:, 10:] = 2
    assert app.toggle_part(labels, [], (15, 3)) == [2]
    assert app.toggle_part(labels, [2], (15, 3)) == []
    assert app.toggle_part(labels, [2], (1, 1)) == [0, 2]
    assert app.toggle_part(labels, [2], (50, 50)) == [2]  # outside the image: unchanged
    with pytest.raises(gr.Error, match="Upload a target"):
        app.toggle_part(None, [], (0, 0))


def test_target_parts_gives_the_label_map(models: app.DemoModels, tmp_path: Path) -> None:
    image = _png(tmp_path / "t.png", 30, 40)
    overlay, _legend, labels, update = app.target_parts(models, image, None, "tiny mcs")
    assert Image.open(overlay).size == (40, 30) and labels.shape == (30, 40)
    assert [v for _, v in update["choices"]] == [0, 1, 2, 3]


def test_swap_image_and_video(models: app.DemoModels, tmp_path: Path) -> None:
    src, tgt = _png(tmp_path / "s.png", 50, 40, 1), _png(tmp_path / "t.png", 33, 47, 2)
    image, video, download = app.swap(models, src, tgt, None, "tiny mcs", [1], "soft", "target")
    assert video is None and Image.open(image).size == (47, 33) and Path(download).is_file()
    drawn, _, _ = app.swap(models, src, tgt, None, "tiny mcs", [1], "soft", "target", "generator")
    assert not np.array_equal(np.asarray(Image.open(drawn)), np.asarray(Image.open(image)))
    from copart_hub import create_model

    create_model("dve_small", width=2, descriptor_dim=8, input_size=(16, 16)).save_pretrained(
        tmp_path / "dve"
    )
    with_descriptors = dataclasses.replace(models, descriptors={"tiny dve": str(tmp_path / "dve")})
    matched, _, _ = app.swap(
        with_descriptors, src, tgt, None, "tiny mcs", [1], "soft", "target", "pixels", "tiny dve"
    )
    assert not np.array_equal(np.asarray(Image.open(matched)), np.asarray(Image.open(image)))
    frames = np.random.default_rng(3).integers(0, 256, (3, 30, 42, 3), dtype=np.uint8)
    clip = tmp_path / "clip.mp4"
    _write_mp4(list(frames), 12.0, clip)
    image, video, _ = app.swap(models, src, None, str(clip), "tiny mcs", [1, 2], "hard", "source")
    out, fps = read_video(video)
    assert image is None and out.shape == (3, 30, 42, 3) and fps == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "not an image"),
        ("huge", "too large"),
        ("no_parts", "at least one part"),
        ("no_target", "target image or video"),
        ("bad_model", "Unknown part swap model"),
        ("bad_render", "Render must be one of"),
    ],
)
def test_swap_bad_input_is_a_friendly_error(
    models: app.DemoModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, message: str
) -> None:
    src, tgt = _png(tmp_path / "s.png"), _png(tmp_path / "t.png")
    parts, model, render = [1], "tiny mcs", "pixels"
    if kind == "text":
        (tmp_path / "notes.png").write_text("not pixels")
        src = str(tmp_path / "notes.png")
    elif kind == "huge":
        monkeypatch.setattr(app, "MAX_IMAGE_PIXELS", 1000)
    elif kind == "no_parts":
        parts = []
    elif kind == "no_target":
        tgt = None
    elif kind == "bad_render":
        render = "paint"
    else:
        model = "nope"
    with pytest.raises(gr.Error, match=message):
        app.swap(models, src, tgt, None, model, parts, "soft", "target", render)


def test_long_or_corrupt_video_is_a_friendly_error(
    models: app.DemoModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _png(tmp_path / "s.png")
    clip = tmp_path / "clip.mp4"
    _write_mp4([np.zeros((16, 16, 3), np.uint8)] * 4, 10.0, clip)
    monkeypatch.setattr(app, "MAX_VIDEO_FRAMES", 3)
    with pytest.raises(gr.Error, match="too long"):
        app.swap(models, src, None, str(clip), "tiny mcs", [1], "soft", "target")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(gr.Error, match="not a video"):
        app.swap(models, src, None, str(broken), "tiny mcs", [1], "soft", "target")


def test_cli_demo_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--help"]) == 0
    assert "--port" in capsys.readouterr().out


def test_host_and_port_default_to_gradio_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.build_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    args = app.build_parser().parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 8123)
    args = app.build_parser().parse_args(["--host", "::1", "--port", "9000"])
    assert (args.host, args.port) == ("::1", 9000)


def test_image_size_is_checked_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradio.data_classes import ImageData
    from PIL import ImageFile

    huge = _huge_png(tmp_path / "huge.png")

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    # gradio's preprocess only reads the header and hands the file on ...
    assert app.image_upload().preprocess(ImageData(path=huge, orig_name="huge.png")) == huge
    # ... and read_image refuses it from the header
    with pytest.raises(gr.Error, match=r"too large \(30 MP\).*25 MP"):
        app.read_image(huge)


def test_messages_name_files_without_their_folder(models: app.DemoModels, tmp_path: Path) -> None:
    folder = tmp_path / "uploads" / "0123abcd"
    folder.mkdir(parents=True)
    with pytest.raises(gr.Error) as caught:
        app.segment(models, _truncated_jpeg(folder / "trunc.jpg"), "tiny parts", False)
    assert "trunc.jpg: image file is truncated" in caught.value.message
    assert str(tmp_path) not in caught.value.message and "0123abcd" not in caught.value.message
    message = app._error(
        "cannot decode video '/tmp/gradio/0f3a/clip.mp4': bad; image/video"
    ).message
    assert message == "cannot decode video 'clip.mp4': bad; image/video"


def test_output_folders_are_bounded(
    models: app.DemoModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    image = _png(tmp_path / "a.png", 20, 24)

    def folders() -> set[Path]:
        return set(app.output_root().iterdir())

    for _ in range(3):
        overlay = app.segment(models, image, "tiny parts", False)[0]
        assert Path(overlay).parent.parent == tmp_path / "cache" / app.OUTPUT_DIR_NAME
    old = folders()
    assert len(old) == 3
    past = time.time() - app.OUTPUT_MAX_AGE_S - 60
    for folder in old:
        os.utime(folder, (past, past))
    for _ in range(2):
        app.superpixels(models, image, 50)
    assert len(folders()) == 2 and not folders() & old  # the three old ones are gone


def test_blocks_clean_their_cache_and_send_no_analytics(models: app.DemoModels) -> None:
    assert os.environ[app.ANALYTICS_ENV] == "False"  # the default set when app is imported
    demo = app.build_demo(models)
    assert demo.analytics_enabled is False
    assert demo.delete_cache == app.DELETE_CACHE
    assert demo.get_config_file()["analytics_enabled"] is False


def test_model_calls_share_one_concurrency_limit(models: app.DemoModels) -> None:
    """Gradio limits each event listener on its own unless they share a ``concurrency_id``."""
    demo = app.build_demo(models)
    queued = {fn.api_name: fn for fn in demo.fns.values() if fn.queue}
    cheap = {fn.api_name for fn in queued.values() if fn.name == "on_select"}  # a click, no model
    assert {"segment", "superpixels", "swap", "target_parts"} <= set(queued)
    for name, fn in queued.items():
        if name not in cheap:
            assert (fn.concurrency_id, fn.concurrency_limit) == ("model", app.CONCURRENCY_LIMIT)


# -- the launched app ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(models: app.DemoModels):
    demo = app.build_demo(models)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True
    )
    yield url
    demo.close()


@pytest.mark.slow
def test_client_segment_swap_and_errors(server: str, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    image = _png(tmp_path / "a.png", 41, 57)
    overlay, _, gallery, files = client.predict(
        handle_file(image), "tiny parts", False, False, api_name="/segment"
    )
    assert Image.open(overlay).size == (57, 41) and len(gallery) == 3
    assert json.loads(Path(files[1]).read_text())["num_parts"] == 3
    result, video, download = client.predict(
        handle_file(image), handle_file(image), None, "tiny mcs", [1, 3], "soft", "target",
        api_name="/swap",
    )  # fmt: skip
    assert video is None and Image.open(result).size == (57, 41) and Path(download).is_file()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AppError, match="not an image this demo can read"):
        client.predict(
            handle_file(tmp_path / "notes.txt"), "tiny parts", False, False, api_name="/segment"
        )


def _example_endpoint(client: Any, elem_id: str) -> int:
    """fn_index of the event that loads an example into the component ``elem_id``."""
    components = {c["id"]: c for c in client.config["components"]}
    target = next(i for i, c in components.items() if c["props"].get("elem_id") == elem_id)
    return next(
        dep["id"]
        for dep in client.config["dependencies"]
        if dep["outputs"] == [target]
        and any(components[t]["type"] == "dataset" for t, _ in dep["targets"])
    )


@pytest.mark.slow
def test_client_bad_uploads_after_an_example_get_the_message(server: str, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    bad = [
        (notes, r"notes\.txt is not an image"),
        (_truncated_jpeg(tmp_path / "trunc.jpg"), r"trunc\.jpg: image file is truncated"),
        (_huge_png(tmp_path / "huge.png"), r"too large \(30 MP\)"),
    ]
    client.predict(0, fn_index=_example_endpoint(client, "seg-image"))  # as a click in the page
    folders = (tempfile.gettempdir(), str(Path(tempfile.gettempdir()).resolve()))
    for upload, message in bad:
        with pytest.raises(AppError, match=message) as caught:
            client.predict(handle_file(upload), "tiny parts", False, False, api_name="/segment")
        assert not any(folder in str(caught.value) for folder in folders)
    client.predict(0, fn_index=_example_endpoint(client, "sw-source"))
    with pytest.raises(AppError, match=r"notes\.txt is not an image"):
        client.predict(
            handle_file(notes), None, None, "tiny mcs", [1], "soft", "target", api_name="/swap"
        )


@pytest.mark.slow
def test_client_video_swap_reports_progress(server: str, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    frames = np.random.default_rng(0).integers(0, 256, (80, 72, 88, 3), dtype=np.uint8)
    clip = tmp_path / "clip.mp4"
    _write_mp4(list(frames), 10.0, clip)
    source = handle_file(_png(tmp_path / "s.png"))
    job = client.submit(
        source, None, handle_file(clip), "tiny mcs", [2], "soft", "target", api_name="/swap"
    )
    seen = set()
    while not job.done():
        for p in job.status().progress_data or []:
            seen.add((p.desc, p.length))
        time.sleep(0.02)
    _, video, _ = job.result()
    assert read_video(video)[0].shape == (80, 72, 88, 3)
    assert ("part swap", 80) in seen or ("locate", 80) in seen


@pytest.mark.slow
def test_twenty_concurrent_requests(server: str, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    images = [_png(tmp_path / f"{i}.png", 30 + i, 40, i) for i in range(20)]
    jobs = [
        client.submit(handle_file(p), "tiny parts", False, False, api_name="/segment")
        for p in images
    ]
    for i, job in enumerate(jobs):
        overlay = job.result(timeout=300)[0]
        assert Image.open(overlay).size == (40, 30 + i)  # each answer belongs to its request


@pytest.mark.slow
def test_at_most_two_model_calls_run_at_once(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segment and superpixels requests together: never more than ``CONCURRENCY_LIMIT`` inside
    the tab functions (it was 2 per button: 4 with these two, 8 with every tab)."""
    import threading

    from gradio_client import Client, handle_file

    lock, running, peak = threading.Lock(), [0], [0]
    read_image = app.read_image

    def counting(*args: Any) -> Image.Image:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.5)  # long enough for the queue to start every call it would allow
            return read_image(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(app, "read_image", counting)
    client = Client(server, verbose=False)
    image = handle_file(_png(tmp_path / "a.png", 30, 40))
    jobs = [client.submit(image, "tiny parts", False, False, api_name="/segment") for _ in range(3)]
    jobs += [client.submit(image, 50, api_name="/superpixels") for _ in range(3)]
    for job in jobs:
        job.result(timeout=300)
    assert peak[0] == app.CONCURRENCY_LIMIT


@pytest.mark.slow
def test_browser_click_a_part_and_swap(server: str, tmp_path: Path) -> None:
    pytest.importorskip("playwright", reason="the browser test needs playwright (dev extra)")
    if find_chromium() is None:
        pytest.skip("no Chromium: install Debian's chromium package or set COPART_CHROMIUM")
    source, target = _png(tmp_path / "s.png", 64, 64, 1), _png(tmp_path / "t.png", 80, 96, 2)
    with browser_page(server) as page:
        chosen = run_swap(page, source, target, clicks=[(0.5, 0.5)])
        page.screenshot(path=str(tmp_path / "swap.png"), full_page=True)
        result = page.locator("#sw-result img")
        assert chosen == 1
        assert result.evaluate("img => img.naturalWidth") == 96
    assert (tmp_path / "swap.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "message"),
    [
        # an image's name, text inside: gradio's page sends it on, and our check answers
        ("notes.png", "notes.png is not an image this demo can read (try PNG or JPEG)."),
        # not an image's name: the page refuses it itself (accept="image/*"), the box stays empty
        ("notes.txt", "Please upload an image first."),
    ],
)
def test_browser_non_image_after_an_example_shows_the_message(
    server: str, tmp_path: Path, name: str, message: str
) -> None:
    """Click an example, replace it by a file that is not an image and press Segment: the page
    shows our message (gradio's toast), not only the red "Error" badges on the outputs."""
    pytest.importorskip("playwright", reason="the browser test needs playwright (dev extra)")
    if find_chromium() is None:
        pytest.skip("no Chromium: install Debian's chromium package or set COPART_CHROMIUM")
    upload = tmp_path / name
    upload.write_text("hello, not pixels")
    with browser_page(server) as page:
        page.get_by_role("tab", name="Part segmentation").click()
        box = page.locator("#seg-image")
        page.locator(".gallery-item:visible").first.click()  # this tab's first example
        box.locator("img").wait_for()
        box.get_by_role("button", name="Remove Image").click()  # as a user replaces it
        box.locator("input[type=file]").set_input_files(str(upload))
        if name.endswith(".txt"):
            page.get_by_text("Invalid file type: notes.txt").first.wait_for()  # gradio's own
        page.get_by_role("button", name="Segment").click()
        shown = page.locator(".toast-body").get_by_text(message)
        shown.first.wait_for()  # toasts stay 10 s
        page.screenshot(path=str(tmp_path / "message.png"), full_page=True)
        text = page.locator("body").inner_text()
        assert "Traceback" not in text and str(tmp_path) not in text
        assert tempfile.gettempdir() + "/" not in text  # no server path in the page
        assert page.locator("#seg-overlay img").count() == 0  # no result was shown
