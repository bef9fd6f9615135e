"""``copart-hub`` command line: superpixels, part segmentation, evaluation and training.

Every input is read and checked before anything is written; errors print one line
``copart-hub: error: ...`` to stderr and return exit code 2. Images over
``$COPART_HUB_MAX_PIXELS`` (default 100 MP) are refused from their header, before decoding.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

PROG = "copart-hub"
MAX_UINT16_LABELS = 65536
MAX_UINT8_LABELS = 256
#: subcommands that hand the rest of the command line to another module's ``main(argv)``
#: (module, help, the extra that installs its dependencies)
DELEGATES = {
    "eval": ("copart_hub.evaluation.{task}", "evaluate a method on a benchmark", "train"),
    "train": ("copart_hub.training.launch", "train a model from a config", "train"),
    "demo": ("copart_hub.spaces_demo.app", "launch the Gradio demo locally", "demo"),
}
EVAL_TASKS = ("superpixels", "parts")


class CliError(Exception):
    """A user error: reported as one line, exit code 2."""


def report_error(prog: str, err: BaseException | str) -> int:
    """Print ``err`` as the one line ``PROG: error: ...`` on stderr; returns exit code 2."""
    print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
    return 2


def check_writable(path: Path, folder: bool = True) -> None:
    """Raise ``ValueError`` unless ``path`` (a folder, or a file when ``folder`` is false;
    existing or not) can be written. Probes the nearest existing folder with a temporary file
    and leaves nothing behind."""
    kind = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{path} exists and is not a {kind}")
    if path.exists() and not folder and not os.access(path, os.W_OK):
        raise ValueError(f"cannot write {path}: the file is read-only")
    base = path if folder else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"cannot create {kind} {path}: {base} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise ValueError(f"cannot write to {path}: {err.strerror or err} (in {base})") from None


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    raise CliError(f"{message} (see '{parser.prog} --help')")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors raise :class:`CliError` (one line, exit 2)."""

    error = _usage_error  # type: ignore[assignment]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _device(text: str) -> str:
    """A torch device that exists on this machine (``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (cpu, cuda, cuda:N or mps)")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA GPU (use cpu)")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    return text


DEVICE_HELP = "torch device (default: cuda if available)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Co-part segmentation and SSN superpixels.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("superpixels", help="SSN superpixels of images")
    sp.add_argument("images", nargs="*", type=Path, help="input image files")
    sp.add_argument("--examples", action="store_true", help="use the bundled example images")
    sp.add_argument("--n", type=_positive_int, default=400, help="number of superpixels")
    sp.add_argument("--model", default="ssn_bsds500", help="model name, folder or Hub repo id")
    sp.add_argument("--out", type=Path, required=True, help="output folder")
    sp.add_argument("--no-connectivity", action="store_true", help="skip connectivity fix-up")
    sp.add_argument("--device", type=_device, help=DEVICE_HELP)
    sp.set_defaults(handler=_superpixels)

    seg = sub.add_parser("segment", help="part segmentation of images")
    seg.add_argument("images", nargs="*", type=Path, help="input image files")
    seg.add_argument("--examples", action="store_true", help="use the bundled example images")
    seg.add_argument("--model", required=True, help="checkpoint folder, zoo name or Hub repo id")
    seg.add_argument("--out", type=Path, required=True, help="output folder")
    seg.add_argument("--batch-size", type=_positive_int, default=8)
    seg.add_argument(
        "--snap", metavar="SSN", help="snap parts to this SSN's superpixels (e.g. ssn_bsds500)"
    )
    seg.add_argument(
        "--grabcut", action="store_true", help="refine the foreground with GrabCut (per image)"
    )
    seg.add_argument("--device", type=_device, help=DEVICE_HELP)
    seg.set_defaults(handler=_segment)

    sal = sub.add_parser(
        "saliency",
        help="unsupervised foreground of any image (boundary-connectivity saliency, GrabCut)",
    )
    sal.add_argument("images", nargs="*", type=Path, help="input image files")
    sal.add_argument("--examples", action="store_true", help="use the bundled example images")
    sal.add_argument("--out", type=Path, required=True, help="output folder")
    sal.add_argument("--n", type=_positive_int, default=200, help="superpixels used (default 200)")
    sal.add_argument(
        "--method",
        choices=("grabcut", "boundary"),
        default="grabcut",
        help="grabcut: binary foreground, saliency refined by GrabCut (default); "
        "boundary: soft boundary-connectivity saliency",
    )
    sal.set_defaults(handler=_saliency)

    sw = sub.add_parser(
        "swap",
        help="swap parts of a source image into a target image or video (MCS)",
        description="Swap MCS parts of --source into --target (image, or .mp4/.gif video) at "
        "full resolution. Output type follows the --out suffix: .png/.jpg for image targets, "
        ".mp4/.gif for videos.",
    )
    sw.add_argument("--source", type=Path, required=True, help="source image (parts come from it)")
    sw.add_argument("--target", type=Path, required=True, help="target image, .mp4 or .gif")
    sw.add_argument(
        "--parts", required=True, help="comma-separated part indices, e.g. 1,3 (0 = background)"
    )
    sw.add_argument("--out", type=Path, required=True, help="output file (.png/.jpg/.mp4/.gif)")
    sw.add_argument(
        "--model", required=True, help="MCS model: zoo name (e.g. mcs_faces), folder or Hub id"
    )
    sw.add_argument(
        "--render",
        choices=("generator", "pixels"),  # part_swap.RENDERS (imported lazily)
        default="generator",
        help="generator: re-drawn by the model (the paper); pixels: the source's own pixels "
        "warped by the part motion (sharp, full resolution)",
    )
    sw.add_argument("--hard", action="store_true", help="threshold the swap mask at 0.5")
    sw.add_argument(
        "--use-source-segmentation",
        action="store_true",
        help="take the swap mask from the source (warped into the target)",
    )
    sw.add_argument("--device", type=_device, help=DEVICE_HELP)
    sw.set_defaults(handler=_swap)

    fr = sub.add_parser(
        "frames", help="extract video frames as PNGs (e.g. to train SCOPS on a video collection)"
    )
    fr.add_argument("videos", nargs="+", type=Path, help="mp4/gif/... files")
    fr.add_argument("--every", type=_positive_int, default=1, help="keep every N-th frame")
    fr.add_argument("--size", type=_positive_int, help="resize frames to SIZE x SIZE")
    fr.add_argument("--out", type=Path, required=True, help="output folder")
    fr.set_defaults(handler=_frames)

    # Listed for --help only: main() hands their arguments over before parsing.
    tasks = ", ".join(EVAL_TASKS)
    sub.add_parser("eval", help=f"{DELEGATES['eval'][1]} (tasks: {tasks}); 'eval TASK --help'")
    sub.add_parser("train", help=f"{DELEGATES['train'][1]}; 'train --help'")
    sub.add_parser("demo", help=f"{DELEGATES['demo'][1]}; 'demo --help'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``copart-hub``; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in DELEGATES:
            return _delegate(args_list[0], args_list[1:])
        args = build_parser().parse_args(args_list)
        return args.handler(args)
    except (CliError, OSError) as err:  # OSError: e.g. the disk filled up while writing
        return report_error(PROG, err)
    except SystemExit as exit_:  # --help, or a delegate's own exit
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1


def _delegate(command: str, rest: list[str]) -> int:
    from unittest import mock

    module_name, _, extra = DELEGATES[command]
    task = ""
    if command == "eval":
        tasks = ", ".join(EVAL_TASKS)
        if rest[:1] in (["-h"], ["--help"]):
            print(f"usage: {PROG} eval TASK [ARGS...]  (TASK: {tasks}; see 'eval TASK --help')")
            return 0
        if not rest or rest[0] not in EVAL_TASKS:
            got = repr(rest[0]) if rest else "nothing"
            raise CliError(f"eval needs a task ({tasks}), got {got}")
        task, module_name, rest = rest[0], module_name.format(task=rest[0]), rest[1:]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise CliError(f"'{command}' is not available: no module {module_name}") from None
        raise CliError(
            f"'{command}' needs the missing package {err.name!r} "
            f"(install it with: pip install 'copart-hub[{extra}]')"
        ) from None
    if command == "eval" and not {"-h", "--help"} & set(rest):
        _check_eval(task, rest)
    # the delegate's own usage errors become one line too
    with mock.patch.object(argparse.ArgumentParser, "error", _usage_error):
        return int(module.main(rest) or 0)


def _check_eval(task: str, rest: list[str]) -> None:
    """Check up front what ``eval TASK`` would only fail on late: the kind and weights of each
    model, ``--device``, and that ``--json`` can be written."""
    from .models.mcs import MCSModel
    from .models.part_base import PartModel
    from .models.ssn import SSN

    parser = Parser(prog=f"{PROG} eval {task}", add_help=False, allow_abbrev=False)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--compare", nargs="+", default=[])
    parser.add_argument("--refine")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", type=_device)
    known, _ = parser.parse_known_args(rest)
    if known.json is not None:
        _check_out(known.json, "--json", folder=False)
    kinds = (PartModel, MCSModel) if task == "parts" else (SSN,)
    for name in known.model + known.compare:
        _load_model(name, kinds, "cpu")
    if known.refine:
        _load_model(known.refine, (SSN,), "cpu")


def _output_paths(inputs: list[Path], out: Path, suffixes: Sequence[str]) -> list[list[Path]]:
    """Output files per input; refuses to overwrite an input or to write one file twice."""
    planned: dict[Path, Path] = {}
    input_files = {p.resolve(): p for p in inputs}
    result = []
    for src in inputs:
        paths = [out / f"{src.stem}{suffix}" for suffix in suffixes]
        for path in paths:
            key = path.resolve()
            if key in input_files or any(_same_file(path, p) for p in inputs):
                raise CliError(f"refusing to overwrite input file {input_files.get(key, path)}")
            if key in planned:
                raise CliError(f"{planned[key]} and {src} would both write {path}")
            planned[key] = src
        result.append(paths)
    return result


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inputs(args: argparse.Namespace) -> tuple[list[Path], list[Any]]:
    """Input names and images: the files given, or the bundled examples (``--examples``)."""
    if args.examples:
        from .examples import example_images

        examples = example_images()
        return [Path(f"{name}.png") for name in examples], list(examples.values())
    if not args.images:
        raise CliError("give at least one image file, or --examples")
    return args.images, _load_inputs(args.images)


def _load_inputs(paths: list[Path]) -> list[Any]:
    from .processing import InvalidImageError, load_image

    try:
        return [load_image(p) for p in paths]
    except InvalidImageError as err:
        raise CliError(str(err)) from None


def _build(factory: Callable[[], Any], name: str = "model") -> Any:
    """Build a model or pipeline, turning loading failures into :class:`CliError`."""
    from safetensors import SafetensorError

    from .hub import CheckpointMismatchError

    try:
        return factory()
    except SafetensorError as err:
        raise CliError(f"{name}: model.safetensors is damaged or truncated ({err})") from None
    except (OSError, CheckpointMismatchError, TypeError, ValueError) as err:
        raise CliError(str(err)) from None


def _describe(cls: type) -> str:
    """What the messages call a kind of model: 'a part model', 'a superpixel model', ..."""
    from .models.mcs import MCSModel
    from .models.part_base import PartModel
    from .models.ssn import SSN

    for base, words in (
        (SSN, "a superpixel model"),
        (MCSModel, "a motion co-segmentation model"),
        (PartModel, "a part model"),
    ):
        if issubclass(cls, base):
            return words
    return "another kind of model"


def _load_model(name: str, kinds: tuple[type, ...], device: str | None) -> Any:
    """Load the checkpoint ``name`` and check that it is one of ``kinds``."""
    from .pipelines import load_model

    model = _build(lambda: load_model(name, device), name)
    if not isinstance(model, kinds):
        got = f"{_describe(type(model))} ({type(model).__name__})"
        raise CliError(f"{name} is {got}, not {_describe(kinds[0])}")
    return model


def _check_out(path: Path, option: str = "--out", folder: bool = True) -> None:
    """Refuse an output ``path`` that cannot be written, before any work is done."""
    try:
        check_writable(path, folder)
    except ValueError as err:
        raise CliError(f"{option}: {err}") from None


def _prepare_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)


def _superpixels(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .models.ssn import SSN
    from .ops.slic import grid_shape
    from .pipelines import SuperpixelSegmenter

    _check_out(args.out)
    names, images = _inputs(args)
    outputs = _output_paths(names, args.out, ("_labels.png", "_overlay.png"))
    for path, img in zip(names, images, strict=True):
        try:
            grid_shape(img.height, img.width, args.n)
        except ValueError as err:
            raise CliError(f"{path}: {err}") from None
    model = _load_model(args.model, (SSN,), args.device)
    segmenter = SuperpixelSegmenter(model, device=args.device)
    results = [segmenter(img, args.n, not args.no_connectivity) for img in images]
    for path, res in zip(names, results, strict=True):
        if res.labels.max() >= MAX_UINT16_LABELS:
            raise CliError(f"{path}: {res.labels.max() + 1} superpixel ids do not fit a 16-bit PNG")
    _prepare_out(args.out)
    for path, res, (labels_png, overlay_png) in zip(names, results, outputs, strict=True):
        Image.fromarray(res.labels.astype(np.uint16)).save(labels_png)
        res.overlay.save(overlay_png)
        print(f"{path}: {res.num_superpixels} superpixels -> {labels_png}")
    return 0


def _segment(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .models.mcs import MCSModel
    from .models.part_base import PartModel
    from .models.ssn import SSN
    from .pipelines import PartSegmenter

    _check_out(args.out)
    names, images = _inputs(args)
    outputs = _output_paths(names, args.out, ("_labels.png", "_overlay.png", ".json"))
    model = _load_model(args.model, (PartModel, MCSModel), args.device)
    snap = _load_model(args.snap, (SSN,), args.device) if args.snap else None
    segmenter = _build(
        lambda: PartSegmenter(
            model, args.device, args.batch_size, refine=snap, grabcut=args.grabcut
        )
    )
    if segmenter.model.num_parts + 1 > MAX_UINT8_LABELS:
        raise CliError(f"{segmenter.model.num_parts} parts do not fit an 8-bit label PNG")
    results = segmenter(images)
    _prepare_out(args.out)
    for path, res, (labels_png, overlay_png, json_file) in zip(
        names, results, outputs, strict=True
    ):
        Image.fromarray(res.labels.astype(np.uint8)).save(labels_png)
        res.overlay.save(overlay_png)
        summary = {"image": str(path), **res.to_json()}
        json_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"{path}: {res.num_parts} parts -> {labels_png}")
    return 0


def _saliency(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .saliency import unsupervised_foreground

    _check_out(args.out)
    names, images = _inputs(args)
    outputs = _output_paths(names, args.out, ("_saliency.png",))
    maps = [unsupervised_foreground(np.array(img), args.method, args.n) for img in images]
    _prepare_out(args.out)
    for path, sal, (png,) in zip(names, maps, outputs, strict=True):
        sal *= 255  # in place: no more full-size float copies
        Image.fromarray(np.rint(sal, out=sal).astype(np.uint8)).save(png)
        print(f"{path}: saliency -> {png}")
    return 0


def _frames(args: argparse.Namespace) -> int:
    """Every ``--every``-th frame of each video -> ``OUT/<stem>_<frame>.png``."""
    from PIL import Image

    from .data.videos import read_video

    _check_out(args.out)
    decoded = []
    for path in args.videos:
        try:
            decoded.append(read_video(path, args.size)[0][:: args.every])
        except (FileNotFoundError, ValueError) as err:
            raise CliError(str(err)) from None
    stems = [
        Path(f"{p.stem}_{i * args.every:05d}")
        for p, f in zip(args.videos, decoded, strict=True)
        for i in range(len(f))
    ]
    outputs = _output_paths(stems, args.out, (".png",))
    _prepare_out(args.out)
    frames = [frame for video in decoded for frame in video]
    for frame, (png,) in zip(frames, outputs, strict=True):
        Image.fromarray(frame).save(png)
    print(f"{len(frames)} frames of {len(args.videos)} videos -> {args.out}")
    return 0


def _parse_parts(text: str) -> list[int]:
    try:
        parts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CliError(f"--parts must be comma-separated integers, got {text!r}") from None
    if not parts:
        raise CliError(f"--parts must name at least one part index, got {text!r}")
    return parts


def _swap(args: argparse.Namespace) -> int:
    from .models.mcs import MCSModel
    from .part_swap import IMAGE_SUFFIXES, VIDEO_SUFFIXES, PartSwapper
    from .processing import InvalidImageError

    parts = _parse_parts(args.parts)
    is_video = args.target.suffix.lower() in VIDEO_SUFFIXES
    out_suffix = args.out.suffix.lower()
    allowed = VIDEO_SUFFIXES + IMAGE_SUFFIXES if is_video else IMAGE_SUFFIXES
    if out_suffix not in allowed:
        kind = "video" if is_video else "image"
        raise CliError(f"--out must end in {', '.join(allowed)} for a {kind} target")
    for path in (args.source, args.target):
        if _same_file(args.out, path) or args.out.resolve() == path.resolve():
            raise CliError(f"refusing to overwrite input file {path}")
    if not args.target.is_file():
        raise CliError(f"{args.target}: no such file")
    _check_out(args.out, folder=False)
    source = _load_inputs([args.source])[0]
    target = None if is_video else _load_inputs([args.target])[0]
    model = _load_model(args.model, (MCSModel,), args.device)
    swapper = _build(lambda: PartSwapper(model, device=args.device, render=args.render))
    try:
        if target is None:
            swapper.swap_video(
                source, args.target, parts, args.out, args.hard, args.use_source_segmentation
            )
        else:
            result = swapper.swap_image(
                source, target, parts, args.hard, args.use_source_segmentation
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            result.save(args.out)
    except (InvalidImageError, FileNotFoundError, ValueError) as err:
        raise CliError(f"{' '.join(str(err).split())}") from None
    print(f"{args.target}: parts {','.join(map(str, parts))} of {args.source} -> {args.out}")
    return 0
