"""Every user mistake on the command line ends in one stderr line and exit code 2: no
traceback, nothing written, input files unchanged, and (for ``train``) nothing built."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import copart_hub
from copart_hub.cli import main
from copart_hub.hub.resolve import ZOO_DIR

TRAIN = ["train", "task=ssn", "num_workers=0", "output_dir={out}/run"]
SWAP = ["swap", "--source", "{image}", "--target", "{image}", "--parts", "1"]
PARTS = ["eval", "parts", "--dataset", "weizmann_horse"]

CASES = {
    # unwritable outputs (under a regular file: unwritable even for root)
    "segment --out": (
        ["segment", "{image}", "--model", "{scops}", "--out", "{blocker}/out"],
        "--out: cannot create folder",
    ),
    "swap --out": (
        [*SWAP, "--out", "{blocker}/swap.png", "--model", "{scops}"],
        "--out: cannot create file",
    ),
    "frames --out": (["frames", "{gif}", "--out", "{blocker}/frames"], "--out: cannot create"),
    "superpixels --out": (
        ["superpixels", "{image}", "--model", "ssn_pix", "--out", "{blocker}/sp"],
        "--out: cannot create folder",
    ),
    "eval superpixels --json": (
        ["eval", "superpixels", "--model", "ssn_pix", "--json", "{blocker}/s.json"],
        "--json: cannot create file",
    ),
    "eval parts --json": (
        [*PARTS, "--model", "{scops}", "--json", "{blocker}/p.json"],
        "--json: cannot create file",
    ),
    # devices
    "segment --device tpu9": (
        ["segment", "{image}", "--model", "{scops}", "--out", "{out}", "--device", "tpu9"],
        "unknown device 'tpu9'",
    ),
    "segment --device cuda:99": (
        ["segment", "{image}", "--model", "{scops}", "--out", "{out}", "--device", "cuda:99"],
        "CUDA GPU",
    ),
    "swap --device tpu9": (
        [*SWAP, "--out", "{out}/s.png", "--model", "{scops}", "--device", "tpu9"],
        "unknown device 'tpu9'",
    ),
    # models of the wrong kind or damaged
    "segment --model ssn_bsds500": (
        ["segment", "{image}", "--model", "ssn_bsds500", "--out", "{out}"],
        "ssn_bsds500 is a superpixel model (SSN), not a part model",
    ),
    "swap --model scops": (
        [*SWAP, "--out", "{out}/s.png", "--model", "{scops}"],
        "is a part model (SCOPS), not a motion co-segmentation model",
    ),
    "eval parts superpixel model": (
        [*PARTS, "--model", "ssn_bsds500"],
        "ssn_bsds500 is a superpixel model (SSN), not a part model",
    ),
    "eval parts truncated": (
        [*PARTS, "--model", "{truncated}"],
        "model.safetensors is damaged or truncated",
    ),
    "eval superpixels truncated": (
        ["eval", "superpixels", "--model", "{truncated}"],
        "model.safetensors is damaged or truncated",
    ),
    "segment truncated": (
        ["segment", "{image}", "--model", "{truncated}", "--out", "{out}"],
        "model.safetensors is damaged or truncated",
    ),
    "eval parts without --model": (
        PARTS,
        "the following arguments are required: --model",
    ),
    # training settings
    "max_steps=abc": ([*TRAIN, "max_steps=abc"], "max_steps must be an integer, got 'abc'"),
    "max_steps=2.5": ([*TRAIN, "max_steps=2.5"], "max_steps must be an integer, got 2.5"),
    "max_steps=true": ([*TRAIN, "max_steps=true"], "max_steps must be an integer"),
    "task=foo": ([*TRAIN, "task=foo"], "unknown task 'foo'"),
    "task_args=5": ([*TRAIN, "task_args=5"], "task_args must be a mapping"),
    "task_args.foo=1": ([*TRAIN, "task_args.foo=1"], "unknown ssn task_args: ['foo']"),
    "batch_size=5 grad_accum=2": (
        [*TRAIN, "batch_size=5", "grad_accum=2"],
        "batch_size=5 is not divisible by grad_accum=2",
    ),
    "mixed_precision=fp8": ([*TRAIN, "mixed_precision=fp8"], "mixed_precision must be one of"),
    "checkpoint_every=0": ([*TRAIN, "checkpoint_every=0"], "checkpoint_every must be >= 1"),
    "max_minutes=0": ([*TRAIN, "max_minutes=0"], "max_minutes must be > 0"),
    "resume=missing": ([*TRAIN, "resume={root}/nothing"], "is not a training checkpoint"),
    "init_from another kind": (
        [*TRAIN, "init_from={scops}"],
        "holds a SCOPS; this task trains a SSN",
    ),
    "missing data root": (
        [*TRAIN, "task_args.data_root={root}/no_data"],
        "task_args.data_root must be an existing folder",
    ),
    "task_args.lr=-1": ([*TRAIN, "task_args.lr=-1"], "task_args.lr must be a positive number"),
    "task_args.patch=0": ([*TRAIN, "task_args.patch=0"], "task_args.patch must be a positive"),
    "task_args.model_kwargs.bogus=1": (
        [*TRAIN, "task_args.model_kwargs.bogus=1"],
        "task_args.model_kwargs: unknown keys ['bogus']",
    ),
    "scops weights.bogus=1": (
        [*TRAIN, "task=scops", "task_args.weights.bogus=1"],
        "task_args.weights: unknown keys ['bogus']",
    ),
    "mcs betas": ([*TRAIN, "task=mcs", "task_args.betas=[2, 3]"], "task_args.betas must be"),
    "mcs video_dir missing": (
        [*TRAIN, "task=mcs", "task_args.video_dir={root}/no_videos"],
        "task_args.video_dir must be an existing folder",
    ),
    "mcs video_dir without videos": (
        [*TRAIN, "task=mcs", "task_args.video_dir={truncated}"],
        "has no readable videos (looked for .mp4",
    ),
    "log_with unknown": ([*TRAIN, "log_with=nope"], "log_with: unknown tracker 'nope'"),
    "malformed yaml": (["train", "--config", "{bad_yaml}"], "bad.yaml is not valid YAML (line "),
    "unwritable output_dir": (
        ["train", "task=ssn", "output_dir={blocker}/run"],
        "cannot create folder",
    ),
    "train --bogus": (["train", "--bogus"], "unrecognized arguments: --bogus"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny inputs: an image, a GIF, a 2-part SCOPS checkpoint, a truncated SSN checkpoint,
    a malformed YAML file and a regular file that blocks any path below it."""
    root = tmp_path_factory.mktemp("cli_errors")
    image = root / "a.png"
    Image.new("RGB", (32, 24), (10, 120, 200)).save(image)
    gif = root / "clip.gif"
    frames = [Image.new("RGB", (16, 8), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=40)
    torch.manual_seed(0)
    scops = copart_hub.create_model("scops_resnet18", num_parts=2, input_size=(32, 32))
    scops.save_pretrained(root / "scops")
    truncated = root / "truncated"
    shutil.copytree(ZOO_DIR / "ssn_bsds500", truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    bad_yaml = root / "bad.yaml"
    bad_yaml.write_text("task: ssn\nmax_steps: [1\n")
    blocker = root / "blocker"
    blocker.write_text("a file, not a folder\n")
    names = {"image": image, "gif": gif, "scops": root / "scops", "truncated": truncated}
    return {**names, "bad_yaml": bad_yaml, "blocker": blocker, "root": root}


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the hash of its content."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def nothing_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a training model or data set is built."""
    from copart_hub.training.tasks.base import _TASKS

    def boom(*args, **kwargs):
        raise AssertionError("a model or data set was built")

    for task in _TASKS.values():
        monkeypatch.setattr(task, "build_model", boom)
        monkeypatch.setattr(task, "train_dataset", boom)


@pytest.mark.usefixtures("nothing_built")
@pytest.mark.parametrize("case", list(CASES))
def test_user_mistake_is_one_line_exit_2_and_writes_nothing(
    case: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, message = CASES[case]
    out = tmp_path / "out"
    argv = [a.format(out=out, **files) for a in argv]
    before = _tree(files["root"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    assert "Traceback" not in err
    assert message in lines[0], lines[0]
    assert len(lines[0]) < 400, lines[0]  # a message, not a module repr
    assert _tree(files["root"]) == before
    assert not out.exists()


def test_cuda_without_a_gpu_is_refused_up_front(files, tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    argv = ["segment", str(files["image"]), "--model", str(files["scops"]), "--device", "cuda"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "this machine has no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unwritable_folder_is_found_by_a_probe_file(tmp_path, monkeypatch, capsys) -> None:
    """A read-only folder (simulated: root may write anywhere) is refused up front."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    out = tmp_path / "ro" / "out"
    assert main(["frames", str(tmp_path / "clip.gif"), "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert (
        line
        == f"copart-hub: error: --out: cannot write to {out}: Permission denied (in {tmp_path})"
    )
    assert sorted(tmp_path.iterdir()) == []
