"""copart_hub demo: part segmentation, superpixels and part swap (a Gradio 6 Blocks app).

Run ``copart-hub demo`` (or ``python app.py`` inside a Space); both serve on
``$GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT``. Locally the models are the bundled zoo, nothing is
downloaded and Gradio's analytics are off unless ``GRADIO_ANALYTICS_ENABLED=True``; a Space also
fetches the released checkpoints from the Hub. Long work is queued with a concurrency limit,
outputs are deleted after an hour, and bad input gets a short message in the page, never a
stack trace.
"""

# The analytics default below must be set before gradio is imported:
# ruff: noqa: E402
from __future__ import annotations

import os

ANALYTICS_ENV = "GRADIO_ANALYTICS_ENABLED"
os.environ.setdefault(ANALYTICS_ENV, "False")  # read by gradio: no telemetry unless asked for

import argparse
import contextlib
import functools
import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from huggingface_hub import metadata_load
from PIL import Image
from skimage.segmentation import slic

from copart_hub.data.paths import shared_data_root
from copart_hub.data.videos import read_video
from copart_hub.examples import example_images
from copart_hub.hub import CopartModel, ModelNotFoundError, zoo_names
from copart_hub.hub.registry import get_architecture
from copart_hub.hub.resolve import RELEASED, resolve_checkpoint
from copart_hub.models.dve import DenseDescriptorNet
from copart_hub.models.mcs import MCSModel
from copart_hub.models.part_base import PartModel
from copart_hub.models.ssn import SSN
from copart_hub.part_swap import RENDERS, PartSwapper, write_video
from copart_hub.pipelines import (
    MIN_PIXELS_PER_SUPERPIXEL,
    PartSegmenter,
    SuperpixelSegmenter,
    load_model,
)
from copart_hub.processing import WORKING_PIXELS, fit_pixels, load_image, upsample_labels
from copart_hub.visualize import overlay_superpixels, part_colors, render_legend

TITLE = "copart_hub: self-supervised co-part segmentation"
MAX_IMAGE_PIXELS = 25_000_000  # larger uploads are refused with a message
MAX_VIDEO_FRAMES = 300  # 10 s at 30 fps
MAX_VIDEO_PIXELS = 1_500_000  # per frame (1280x1080 fits)
CONCURRENCY_LIMIT = 2  # model calls running at once; the rest wait in the queue
#: the one concurrency group of every model call: gradio applies a limit per event listener
#: (each has its own group by default), so without it each tab's button ran 2 calls at once
MODEL_CALLS = dict(concurrency_id="model", concurrency_limit=CONCURRENCY_LIMIT)
QUEUE_SIZE = 64
OUTPUT_MAX_AGE_S = 3600  # outputs older than this are deleted (a user has an hour to download)
DELETE_CACHE = (600, OUTPUT_MAX_AGE_S)  # gr.Blocks(delete_cache=(every, older than)) in seconds
OUTPUT_DIR_NAME = "copart_hub_outputs"  # per-request folders, inside gradio's cache
DEFAULT_SPIXELS = 300
PNG_COMPRESS_LEVEL = 1  # zlib level of the output PNGs: fast (Pillow's default 6 is ~6x slower)
VIDEO_PROGRESS = gr.Progress(track_tqdm=True)
OWN_MOTION = "the model's own"  # the part-swap motion choice without a descriptor model


# -- models -----------------------------------------------------------------------------------


@dataclass
class DemoModels:
    """What the demo offers: ``{label: checkpoint name or folder}`` per tab."""

    parts: dict[str, str] = field(default_factory=dict)
    swap: dict[str, str] = field(default_factory=dict)
    superpixels: str | None = None
    #: dense descriptor models (label -> checkpoint) and the datasets each was trained on
    descriptors: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, set[str]] = field(default_factory=dict)

    def default_motion(self, swap_label: str | None) -> str:
        """The part motion a swap model gets by default: a descriptor model trained on a
        dataset the swap model was trained on (its matches land parts on the same place of
        another person's face), else the model's own."""
        trained_on = self.datasets.get(self.swap.get(swap_label or "", ""), set())
        for label, name in self.descriptors.items():
            if self.datasets.get(name, set()) & trained_on:
                return label
        return OWN_MOTION

    @classmethod
    def from_zoo(cls, names: Iterable[str] | None = None) -> DemoModels:
        """Sort checkpoints by kind (read from ``config.json``; weights are not loaded). Every
        part model segments and swaps (MCS models first in the swap tab, last in the other);
        dense descriptor models offer their part motion to the swaps (``default_motion``).

        ``names`` defaults to the local zoo, plus inside a Space (``SYSTEM=spaces``) every
        released checkpoint, fetched from the Hub when not bundled (the wheel bundles only
        ``ssn_bsds500``); one that cannot be found is left out with a warning."""
        if names is None:
            names = zoo_names() + (list(RELEASED) if os.environ.get("SYSTEM") == "spaces" else [])
        found = cls()
        for name in dict.fromkeys(names):
            try:
                config_path = resolve_checkpoint(name)[0]
            except ModelNotFoundError as err:
                print(f"copart-hub demo: skipping {name}: {err}", file=sys.stderr)
                continue
            config = json.loads(config_path.read_text(encoding="utf-8"))
            arch = get_architecture(config["architecture"])
            if issubclass(arch, SSN):
                found.superpixels = found.superpixels or name
                continue
            card = metadata_load(config_path.parent / "README.md") or {}
            found.datasets[name] = set(card.get("datasets") or [])
            if issubclass(arch, DenseDescriptorNet):
                found.descriptors[name] = name
            elif issubclass(arch, MCSModel):
                found.swap[name] = name
            elif issubclass(arch, PartModel):
                found.parts[name] = name
        motion = dict(found.swap)
        found.swap.update(found.parts)  # any part segmenter swaps its own pixels; MCS models first
        found.parts.update(motion)  # MCS segmenters last: image-collection models first
        return found


@functools.lru_cache(maxsize=8)
def _model(name_or_path: str) -> CopartModel:
    return load_model(name_or_path)  # CUDA when available


@functools.lru_cache(maxsize=8)
def _segmenter(name_or_path: str, refine: str | None, grabcut: bool) -> PartSegmenter:
    return PartSegmenter(_model(name_or_path), refine=refine and _model(refine), grabcut=grabcut)


@functools.lru_cache(maxsize=4)
def _swapper(name_or_path: str, render: str, correspondence: str | None = None) -> PartSwapper:
    descriptors = _model(correspondence) if correspondence else None
    return PartSwapper(_model(name_or_path), render=render, correspondence=descriptors)


# -- input checks -----------------------------------------------------------------------------


def image_upload(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` whose unreadable uploads raise a friendly ``gr.Error`` instead of PIL's
    exception (wraps the instance's ``preprocess``; subclassing a gradio component would write a
    ``.pyi`` stub next to this file). With ``type="filepath"`` and ``image_mode=None`` gradio
    only reads the header and passes the uploaded file on: ``read_image`` checks the size before
    decoding. Give it examples with :func:`add_examples`, not ``gr.Examples``."""
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    preprocess = component.preprocess

    def checked(payload: Any) -> str | None:
        try:
            return preprocess(payload)
        except Image.DecompressionBombError:
            raise _error(too_large_message()) from None
        except Exception:  # PIL raises many kinds for a file that is not an image
            name = getattr(payload, "orig_name", None) or "the upload"
            raise _error(not_an_image_message(name)) from None

    component.preprocess = checked  # type: ignore[method-assign]
    return component


def add_examples(component: gr.components.Component, paths: Sequence[str], label: str) -> None:
    """Clickable examples that set ``component``'s value. Not ``gr.Examples``: it loads an example
    as an update of the component's properties, after which gradio serves that session with a
    fresh component built from the constructor arguments, without ``image_upload``'s checks."""
    paths = list(paths)
    dataset = gr.Dataset(
        components=[component], samples=[[p] for p in paths], type="index", label=label
    )

    def load(index: int) -> str:
        return paths[index]

    dataset.click(
        load,
        dataset,
        component,
        queue=False,
        show_progress="hidden",
        api_name="load_example",
        api_visibility="undocumented",
    )


#: the folders of an absolute path (POSIX or Windows), as they appear in library messages
_FOLDERS = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"]+)+[\\/]")


def _error(message: str) -> gr.Error:
    """A message for the user (shown in the page; no traceback in the server log). Paths in it
    keep only the file name: ``/tmp/gradio/<hash>/a.jpg`` -> ``a.jpg``."""
    return gr.Error(_FOLDERS.sub("", message), print_exception=False)


def not_an_image_message(name: str) -> str:
    return f"{Path(name).name} is not an image this demo can read (try PNG or JPEG)."


def too_large_message(pixels: int | None = None) -> str:
    size = f" ({pixels / 1e6:.0f} MP)" if pixels else ""
    return f"This image is too large{size}: the demo takes up to {MAX_IMAGE_PIXELS / 1e6:.0f} MP."


def read_image(path: str | None, what: str = "an image") -> Image.Image:
    """Uploaded file -> RGB image, or ``gr.Error`` with a friendly message. The pixel count is
    read from the header (``Image.open`` decodes nothing) and checked before decoding."""
    if not path:
        raise _error(f"Please upload {what} first.")
    try:
        with Image.open(path) as probe:
            pixels = probe.width * probe.height
    except Image.DecompressionBombError:
        raise _error(too_large_message()) from None
    except Exception:
        raise _error(not_an_image_message(path)) from None
    if pixels > MAX_IMAGE_PIXELS:
        raise _error(too_large_message(pixels))
    try:
        return load_image(path)
    except ValueError as err:
        raise _error(str(err)) from None


def read_target_video(path: str) -> tuple[np.ndarray, float]:
    """Uploaded video -> ``(uint8 [T, H, W, 3] frames, fps)``, or ``gr.Error`` if unreadable or
    too big."""
    try:
        frames, fps = read_video(path, max_frames=MAX_VIDEO_FRAMES)
    except ValueError as err:
        if "more than" in str(err):
            raise _error(
                f"This video is too long: the demo takes up to {MAX_VIDEO_FRAMES} frames."
            ) from None
        raise _error(f"{Path(path).name} is not a video this demo can read.") from None
    if frames.shape[1] * frames.shape[2] > MAX_VIDEO_PIXELS:
        raise _error(
            f"This video is too large ({frames.shape[2]}x{frames.shape[1]}): the demo takes "
            f"frames up to {MAX_VIDEO_PIXELS / 1e6:.1f} MP."
        )
    return frames, fps


def _pick(choices: dict[str, str], label: str | None, what: str) -> str:
    if not choices:
        raise _error(f"No {what} model is bundled with this installation.")
    if label not in choices:
        raise _error(f"Unknown {what} model {label!r}; choose one of {', '.join(choices)}.")
    return choices[label]


def _run(fn: Callable[[], Any]) -> Any:
    """Library errors (bad parts, bad files, missing models) -> ``gr.Error`` messages."""
    try:
        return fn()
    except (ValueError, TypeError, ModelNotFoundError) as err:
        raise _error(str(err)) from None


def output_root() -> Path:
    """The parent of the per-request output folders: inside gradio's cache (``$GRADIO_TEMP_DIR``),
    so gradio serves the files where they are and ``delete_cache`` deletes them."""
    return Path(get_upload_folder()) / OUTPUT_DIR_NAME


def _out_dir() -> Path:
    """A new per-request output folder. Folders older than ``OUTPUT_MAX_AGE_S`` are removed
    first (``delete_cache`` deletes the files gradio handed out, not their folders)."""
    root = output_root()
    cutoff = time.time() - OUTPUT_MAX_AGE_S
    for old in root.glob("*"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
    out = root / uuid.uuid4().hex
    out.mkdir(parents=True)
    return out


def _png(image: Image.Image, folder: Path, name: str) -> str:
    """Save ``image`` as ``folder/name.png``; outputs are returned as files, never PIL images:
    gradio caches a PIL output by rewriting a content-addressed file in place, and two requests
    with the same picture (e.g. an empty part mask) then race with the download of the other
    (truncated responses under load); our per-request files are served as they are. The fast
    zlib level writes a 25 MP overlay in ~2.5 s instead of ~15 s (files ~15 % larger)."""
    path = folder / f"{name}.png"
    image.save(path, compress_level=PNG_COMPRESS_LEVEL)
    return str(path)


# -- tab logic (plain functions, tested without a browser) ------------------------------------


def segment(
    models: DemoModels,
    image_path: str | None,
    model_label: str | None,
    refine: bool,
    grabcut: bool = False,
) -> tuple[str, str, list[tuple[str, str]], list[str]]:
    """-> overlay, legend, per-part masks (gallery), [labels PNG, JSON] (all file paths).
    ``refine`` snaps parts to SSN superpixels; ``grabcut`` refines the foreground by GrabCut."""
    image = read_image(image_path)
    name = _pick(models.parts, model_label, "part segmentation")
    if refine and models.superpixels is None:
        raise _error("Boundary refinement needs a superpixel model, and none is bundled.")
    segmenter = _run(lambda: _segmenter(name, models.superpixels if refine else None, grabcut))
    result = _run(lambda: segmenter(image))
    k = result.num_parts
    colors = part_colors(k + 1)
    out = _out_dir()
    gallery = []
    rgb = np.asarray(image)
    dimmed = rgb // 4  # integer arithmetic: no float copies of a large photo
    for part in range(1, k + 1):
        tint = dimmed.copy()
        on = result.labels == part
        tint[on] = (rgb[on].astype(np.uint16) + colors[part]) // 2
        area = f"{100 * result.areas[part - 1]:.1f}% of the image"
        mask = _png(Image.fromarray(tint), out, f"part_{part}")
        gallery.append((mask, f"part {part}: {area}"))
    labels_png, json_path = out / "labels.png", out / "parts.json"
    Image.fromarray(result.labels.astype(np.uint8)).save(
        labels_png, compress_level=PNG_COMPRESS_LEVEL
    )
    summary = {"model": model_label, "refined": refine, "grabcut": grabcut, **result.to_json()}
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    overlay, legend = _png(result.overlay, out, "overlay"), _png(render_legend(k), out, "legend")
    return overlay, legend, gallery, [str(labels_png), str(json_path)]


def slic_labels(image: Image.Image, n: int) -> tuple[int, np.ndarray]:
    """scikit-image's SLIC at the working size of :class:`SuperpixelSegmenter` (the same as the
    SSN's), labels upsampled (nearest) to the image: -> (count, int32 labels [H, W]). At full
    size SLIC's float64 Lab copies and distance maps took ~140 bytes per pixel (3.4 GB and 40 s
    at 25 MP, per request)."""
    small = fit_pixels(image, max(WORKING_PIXELS, MIN_PIXELS_PER_SUPERPIXEL * n))
    labels = slic(np.asarray(small), n_segments=n, compactness=10, start_label=0)
    count = len(np.unique(labels))  # upsampling keeps every label
    return count, upsample_labels(labels.astype(np.int32), (image.height, image.width))


def superpixels(models: DemoModels, image_path: str | None, count: float) -> tuple[str, str, str]:
    """-> SSN overlay, SLIC overlay (file paths), a line with the actual counts."""
    image = read_image(image_path)
    if models.superpixels is None:
        raise _error("No superpixel model is bundled with this installation.")
    n = int(min(count, image.width * image.height))
    ssn = _run(lambda: SuperpixelSegmenter(_model(models.superpixels))(image, n))
    n_slic, slic_map = slic_labels(image, n)
    text = (
        f"SSN ({models.superpixels}): {ssn.num_superpixels} superpixels; "
        f"SLIC (scikit-image): {n_slic} superpixels; requested {n}."
    )
    out = _out_dir()
    slic_overlay = overlay_superpixels(image, slic_map)
    return _png(ssn.overlay, out, "ssn"), _png(slic_overlay, out, "slic"), text


def part_choices(num_parts: int) -> list[tuple[str, int]]:
    return [("0 background", 0)] + [(f"{k}", k) for k in range(1, num_parts + 1)]


def target_parts(
    models: DemoModels, image_path: str | None, video_path: str | None, model_label: str | None
) -> tuple[str | None, str | None, np.ndarray | None, Any]:
    """Target (the video's first frame, else the image) -> its part overlay and legend (file
    paths), label map and the part choices."""
    if not image_path and not video_path:
        return None, None, None, gr.update(value=[])
    if video_path:
        first = Image.fromarray(read_target_video(video_path)[0][0])
    else:
        first = read_image(image_path, "a target image")
    name = _pick(models.swap, model_label, "part swap")
    result = _run(lambda: _segmenter(name, None, False)(first))
    choices = part_choices(result.num_parts)
    out = _out_dir()
    overlay = _png(result.overlay, out, "target_parts")
    legend = _png(render_legend(result.num_parts), out, "legend")
    return overlay, legend, result.labels, gr.update(choices=choices, value=[])


def toggle_part(labels: np.ndarray | None, selected: Sequence[int], xy: Sequence[int]) -> list[int]:
    """Click at pixel ``(x, y)`` of the target overlay -> the part there toggled in ``selected``."""
    if labels is None:
        raise _error("Upload a target first, then click the parts to swap.")
    x, y = int(xy[0]), int(xy[1])
    if not (0 <= y < labels.shape[0] and 0 <= x < labels.shape[1]):
        return list(selected)
    part = int(labels[y, x])
    chosen = set(selected) ^ {part}
    return sorted(chosen)


def swap(
    models: DemoModels,
    source_path: str | None,
    target_image: str | None,
    target_video: str | None,
    model_label: str | None,
    parts: Sequence[int],
    mode: str,
    mask_from: str,
    render: str = "pixels",
    motion: str = OWN_MOTION,
) -> tuple[str | None, str | None, str]:
    """-> (result image path or None, result video path or None, downloadable file path).

    ``render``: ``"pixels"`` (the source's pixels, warped: sharp) or ``"generator"`` (the
    paper's re-drawing). ``motion``: the model's own part motion, or the label of a dense
    descriptor model whose matches the part affines are fitted on."""
    source = read_image(source_path, "a source image")
    name = _pick(models.swap, model_label, "part swap")
    if not parts:
        raise _error("Choose at least one part: click it on the target's segmentation.")
    if not target_image and not target_video:
        raise _error("Please upload a target image or video.")
    if render not in RENDERS:
        raise _error(f"Render must be one of {', '.join(RENDERS)}.")
    correspondence = (
        None if motion == OWN_MOTION else _pick(models.descriptors, motion, "descriptor")
    )
    swapper = _run(lambda: _swapper(name, render, correspondence))
    hard, from_source = mode == "hard", mask_from == "source"
    out = _out_dir()
    if target_video:
        frames, fps = read_target_video(target_video)  # decoded once, with friendly checks
        results = _run(lambda: swapper.swap_frames(source, frames, fps, parts, hard, from_source))
        path = str(write_video(results, fps, out / "part_swap.mp4"))
        return None, path, path
    target = read_image(target_image, "a target image")
    result = _run(lambda: swapper.swap_image(source, target, parts, hard, from_source))
    path = _png(result, out, "part_swap")
    return path, None, path


# -- examples ---------------------------------------------------------------------------------


def example_files() -> dict[str, list[str]]:
    """Example paths per tab: scikit-image's bundled photos (always) plus, when ``shared/data``
    is on this machine, real faces, horses and Tai-Chi frames/clips."""
    folder = Path(tempfile.gettempdir()) / "copart_hub_demo" / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    bundled = []
    for name, image in example_images().items():
        path = folder / f"{name}.png"
        if not path.is_file():
            image.save(path)
        bundled.append(str(path))
    images, videos = list(bundled), []
    root = shared_data_root()
    if root is not None:
        for pattern in ("faces300w/images/*", "weizmann_horse/rgb/*", "celeba_samples/*"):
            images += [str(p) for p in sorted(root.glob(pattern))[:2]]
        clips = sorted(root.glob("taichi/videos/*.mp4"))
        videos += [str(p) for p in clips[-1:]]
        for name in ("ted/source.png", "talking_face/tpsmm_source.png"):
            if (root / name).is_file():
                images.append(str(root / name))
        videos += [str(root / n) for n in ("ted/driving.mp4",) if (root / n).is_file()]
    return {"images": images, "videos": videos}


# -- the app ----------------------------------------------------------------------------------


def build_demo(models: DemoModels | None = None) -> gr.Blocks:
    """The Blocks app for ``models`` (default: everything in the bundled zoo)."""
    models = models or DemoModels.from_zoo()
    examples = example_files()
    part_labels, swap_labels = list(models.parts), list(models.swap)
    analytics = os.environ.get(ANALYTICS_ENV) == "True"  # off unless the user opted in
    with gr.Blocks(title=TITLE, analytics_enabled=analytics, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            f"# {TITLE}\nModels trained from scratch with "
            "[copart_hub](https://github.com/copart-hub/copart_hub): SCOPS (image collections), "
            "motion-supervised co-part segmentation (videos) and SSN superpixels."
        )
        with gr.Tab("Part segmentation"):
            with gr.Row():
                with gr.Column():
                    seg_image = image_upload(label="Image", elem_id="seg-image")
                    seg_model = gr.Dropdown(
                        part_labels, value=part_labels[0] if part_labels else None, label="Model"
                    )
                    seg_refine = gr.Checkbox(False, label="Snap part boundaries to SSN superpixels")
                    seg_grabcut = gr.Checkbox(False, label="Refine the foreground with GrabCut")
                    seg_run = gr.Button("Segment", variant="primary")
                with gr.Column():
                    seg_overlay = gr.Image(label="Parts", interactive=False, elem_id="seg-overlay")
                    seg_legend = gr.Image(label="Legend", interactive=False, height=220)
            seg_masks = gr.Gallery(label="Per-part masks", columns=5, height="auto")
            seg_files = gr.File(
                label="Label map (PNG, 0 = background) and JSON", file_count="multiple"
            )
            add_examples(seg_image, examples["images"], "Examples")
            seg_run.click(
                functools.partial(segment, models),
                [seg_image, seg_model, seg_refine, seg_grabcut],
                [seg_overlay, seg_legend, seg_masks, seg_files],
                api_name="segment",
                **MODEL_CALLS,
            )
        with gr.Tab("Superpixels"):
            with gr.Row():
                with gr.Column():
                    sp_image = image_upload(label="Image", elem_id="sp-image")
                    sp_count = gr.Slider(50, 2000, DEFAULT_SPIXELS, step=50, label="Superpixels")
                    sp_run = gr.Button("Compute", variant="primary")
                sp_text = gr.Markdown()
            with gr.Row():
                sp_ssn = gr.Image(label="SSN (learned features)", interactive=False)
                sp_slic = gr.Image(
                    label="SLIC (colour and position)", interactive=False, elem_id="sp-slic"
                )
            add_examples(sp_image, examples["images"], "Examples")
            sp_run.click(
                functools.partial(superpixels, models),
                [sp_image, sp_count],
                [sp_ssn, sp_slic, sp_text],
                api_name="superpixels",
                **MODEL_CALLS,
            )
        with gr.Tab("Part swap"):
            if not swap_labels:
                gr.Markdown("No part-swap model is bundled with this installation yet.")
            gr.Markdown(
                "1. Upload a source (the parts to copy) and a target image or video. "
                "2. Click parts on the target's segmentation (click again to drop one). "
                "3. Swap."
            )
            labels_state = gr.State(None)
            with gr.Row():
                with gr.Column():
                    sw_source = image_upload(label="Source", elem_id="sw-source")
                    sw_model = gr.Dropdown(
                        swap_labels, value=swap_labels[0] if swap_labels else None, label="Model"
                    )
                    sw_mode = gr.Radio(["soft", "hard"], value="soft", label="Mask")
                    sw_render = gr.Radio(
                        list(RENDERS),
                        value="pixels",
                        label="Render",
                        info="pixels: the source's own pixels, warped (sharp); "
                        "generator: re-drawn by the model (the paper; blurred)",
                    )
                    sw_from = gr.Radio(
                        ["target", "source"], value="target", label="Mask from the segmentation of"
                    )
                    first = swap_labels[0] if swap_labels else None
                    sw_motion = gr.Dropdown(
                        [OWN_MOTION, *models.descriptors],
                        value=models.default_motion(first),
                        label="Part motion",
                        info="the model's own, or fitted on a dense descriptor model's matches "
                        "(lands parts on the same place of another person's face)",
                    )
                with gr.Column():
                    sw_target = image_upload(label="Target image", elem_id="sw-target")
                    sw_video = gr.Video(label="or target video (mp4, gif)", elem_id="sw-video")
                    sw_show = gr.Button("Show target parts", size="sm")
                with gr.Column():
                    sw_parts_view = gr.Image(
                        label="Target parts: click to choose",
                        interactive=False,
                        elem_id="sw-target-parts",
                    )
                    max_parts = max((_model(n).num_parts for n in models.swap.values()), default=0)
                    sw_parts = gr.CheckboxGroup(
                        part_choices(max_parts), label="Parts to swap", elem_id="sw-parts"
                    )
                    sw_legend = gr.Image(label="Legend", interactive=False, height=220)
                    sw_run = gr.Button("Swap", variant="primary", elem_id="sw-run")
            with gr.Row():
                sw_result = gr.Image(
                    label="Result", interactive=False, format="png", elem_id="sw-result"
                )
                sw_result_video = gr.Video(label="Result video", interactive=False)
                sw_file = gr.File(label="Download")
            if examples["videos"]:
                add_examples(sw_video, examples["videos"], "Target videos")
            add_examples(sw_source, examples["images"], "Source images")

            preview = functools.partial(target_parts, models)
            preview_io = dict(
                inputs=[sw_target, sw_video, sw_model],
                outputs=[sw_parts_view, sw_legend, labels_state, sw_parts],
            )
            for trigger in (sw_target.change, sw_video.change, sw_model.change):
                trigger(preview, **preview_io, api_name=False, **MODEL_CALLS)
            sw_show.click(preview, **preview_io, api_name="target_parts", **MODEL_CALLS)

            def on_select(labels: Any, selected: list[int], evt: gr.SelectData) -> list[int]:
                return toggle_part(labels, selected, evt.index)

            sw_parts_view.select(on_select, [labels_state, sw_parts], sw_parts, api_name=False)

            def run_swap(
                source: str | None,
                target: str | None,
                video: str | None,
                model: str | None,
                parts: list[int],
                mode: str,
                mask_from: str,
                render: str,
                motion: str,
                progress: gr.Progress = VIDEO_PROGRESS,  # mirrors the per-frame tqdm bars
            ) -> Any:
                return swap(
                    models, source, target, video, model, parts, mode, mask_from, render, motion
                )

            sw_model.change(
                lambda label: gr.update(value=models.default_motion(label)),
                sw_model,
                sw_motion,
                api_name=False,
                queue=False,  # no model call: it only picks the default
            )
            sw_run.click(
                run_swap,
                [
                    sw_source,
                    sw_target,
                    sw_video,
                    sw_model,
                    sw_parts,
                    sw_mode,
                    sw_from,
                    sw_render,
                    sw_motion,
                ],
                [sw_result, sw_result_video, sw_file],
                api_name="swap",
                **MODEL_CALLS,
            )
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


def build_parser() -> argparse.ArgumentParser:
    """Options of ``copart-hub demo``; the defaults come from Gradio's (and a Space's) variables."""
    parser = argparse.ArgumentParser(prog="copart-hub demo", description=__doc__.splitlines()[0])
    host, port = os.environ.get("GRADIO_SERVER_NAME"), os.environ.get("GRADIO_SERVER_PORT")
    parser.add_argument(
        "--host",
        default=host or "127.0.0.1",
        help="address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=port or "7860",
        help="port (default: $GRADIO_SERVER_PORT, else 7860)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``copart-hub demo`` (and ``python app.py`` in a Space): launch the app."""
    args = build_parser().parse_args(argv)
    build_demo().launch(server_name=args.host, server_port=args.port, max_file_size="50mb")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
