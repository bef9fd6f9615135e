"""Release a trained checkpoint into the zoo (a local mirror of its Hub repo).

``python -m copart_hub.training.release RUN/best --name scops_faces300w [--previous OLD]``
copies the exported folder (card, licence, config, sample images) to ``zoo/<name>/``, stores the
weights as float16 safetensors (half the bytes; loading casts them back to the model's
float32), checks the reloaded model against the original, draws the validation curve of the
run's ``metrics.jsonl`` into ``curve.png`` and puts it, and the previous release's held-out
scores, into the card. Held-out tables then come from ``copart-hub eval parts --card``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from copart_hub import from_pretrained
from copart_hub.data.provenance import licence_title
from copart_hub.hub.card import SCORES_HEADING, replace_card_section, section_span
from copart_hub.hub.resolve import CONFIG_NAME, REPO_ZOO_DIR, WEIGHTS_NAME

CURVE_NAME = "curve.png"


def half_weights(source: Path, target: Path) -> None:
    """Write ``source`` (safetensors) to ``target`` with floating tensors as float16."""
    state = load_file(str(source))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file({k: v.contiguous() for k, v in half.items()}, str(target), metadata={"format": "pt"})


def validation_curve(metrics: Path) -> list[tuple[int, dict[str, float]]]:
    """``(step, scores)`` of the validation rows of a run's ``metrics.jsonl``, one per step."""
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line]
    by_step = {int(r["step"]): r["val"] for r in rows if r.get("val")}  # a resume repeats one
    return sorted(by_step.items())


def plot_curve(curve: list[tuple[int, dict[str, float]]], key: str, path: Path) -> None:
    """A small PNG of validation ``key`` against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s, v in curve if key in v]
    values = [v[key] for _, v in curve if key in v]
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(steps, values, marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def max_output_difference(a: torch.nn.Module, b: torch.nn.Module, size: tuple[int, int]) -> float:
    """Largest difference of the two models' outputs on a fixed random image: part
    probabilities, or the unit descriptors of a descriptor model."""
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    nets = [m.segmenter_only() if hasattr(m, "segmenter_only") else m for m in (a, b)]
    descriptors = getattr(nets[0], "card_pipeline_tag", "") == "image-feature-extraction"
    with torch.no_grad():
        pa, pb = (net.eval()(image).float() for net in nets)
    if not descriptors:
        pa, pb = pa.softmax(1), pb.softmax(1)
    return float((pa - pb).abs().max())


def insert_section(card: Path, heading: str, body: str, before: str) -> None:
    """Set the section ``heading`` of ``card``; a new one goes just before ``before``."""
    text = card.read_text(encoding="utf-8")
    if section_span(text, heading) is None:
        at = text.find("\n" + before + "\n")
        at = len(text) if at < 0 else at + 1
        card.write_text(text[:at] + heading + "\n\n" + text[at:], encoding="utf-8")
    replace_card_section(card, heading, body)


def rename_card(card: Path, name: str) -> None:
    """Give a training-written card the release's name (title, model-index, load example)."""
    text = card.read_text(encoding="utf-8")
    title = re.search(r"^# (.+)$", text, flags=re.MULTILINE)
    if title is None:
        return
    old = title.group(1)
    text = text[: title.start()] + f"# {name}" + text[title.end() :]
    text = text.replace(f"- name: {old}\n", f"- name: {name}\n", 1)
    text = text.replace(f'from_pretrained("{old}")', f'from_pretrained("{name}")')
    card.write_text(text, encoding="utf-8")


def rename_licence(licence: Path, name: str) -> None:
    """Give a training-written ``LICENSE.md`` (titled with the export folder's name, e.g.
    ``final``) the release's name."""
    if licence.is_file():
        text = licence.read_text(encoding="utf-8")
        pattern = "^" + re.escape(licence_title("@")).replace("@", "[^`\n]*") + "$"
        text = re.sub(pattern, lambda _: licence_title(name), text, count=1, flags=re.M)
        licence.write_text(text, encoding="utf-8")


def release(
    folder: Path,
    name: str,
    zoo: Path = REPO_ZOO_DIR,
    previous: Path | None = None,
    metrics: Path | None = None,
    key: str = "score",
    overwrite: bool = False,
) -> Path:
    """Copy the exported ``folder`` to ``zoo/name`` (float16 weights, curve, previous scores)."""
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME} and {CONFIG_NAME}")
    target = zoo / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists: pass --overwrite to replace it")
    previous_scores = None
    if previous is not None:
        text = (previous / "README.md").read_text(encoding="utf-8")
        span = section_span(text, SCORES_HEADING)
        if span is None:
            raise ValueError(f"{previous}/README.md has no {SCORES_HEADING!r} section")
        previous_scores = previous_tables(text[span[0] : span[1]])
    staging = zoo / f".{name}.staging"  # written fully, then swapped in
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for file in folder.iterdir():  # card, licence, config, sample images
        if file.is_file() and file.name != WEIGHTS_NAME:
            shutil.copy2(file, staging / file.name)
    half_weights(folder / WEIGHTS_NAME, staging / WEIGHTS_NAME)
    original, reloaded = from_pretrained(folder), from_pretrained(staging)
    size = tuple(original.config.get("input_size", (64, 64)))
    difference = max_output_difference(original, reloaded, size)
    if difference > 0.02:
        shutil.rmtree(staging)
        raise ValueError(f"float16 weights change the outputs by {difference:.3f}")
    card = staging / "README.md"
    if card.is_file():
        rename_card(card, name)
    rename_licence(staging / "LICENSE.md", name)
    metrics = metrics or folder.parent / "metrics.jsonl"
    if metrics.is_file() and card.is_file():
        curve = validation_curve(metrics)
        if curve:
            plot_curve(curve, key, staging / CURVE_NAME)
            table = "\n".join(
                f"| {step} | {scores.get(key, float('nan')):.4g} |" for step, scores in curve
            )
            body = (
                f"Validation `{key}` during training (`metrics.jsonl` of the run):\n\n"
                f"![validation curve]({CURVE_NAME})\n\n| step | {key} |\n|---:|---:|\n{table}"
            )
            insert_section(card, "## Training curve", body, before="## Training configuration")
    if previous_scores is not None and card.is_file():
        body = (
            "The scores of the release this one replaces, per dataset as its card gave them "
            "(its own rows as `previous release`):\n\n" + previous_scores
        )
        insert_section(card, "## Previous release", body, before="## Training configuration")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    print(f"released {target} (float16 weights; outputs within {difference:.2g})")
    return target


def previous_tables(scores: str) -> str:
    """A card's scores section, as the next release's card quotes it: from its first
    ``### <dataset>`` on (the preamble speaks of that card's curve and checkpoint), one heading
    level down, its ``this model`` rows renamed ``previous release``."""
    start = re.search(r"^### ", scores, flags=re.MULTILINE)
    if start is None:
        raise ValueError("the previous card's scores have no `### <dataset>` section")
    tables = re.sub(r"^### ", "#### ", scores[start.start() :].strip(), flags=re.MULTILINE)
    return re.sub(r"^\| this model\b", "| previous release", tables, flags=re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m copart_hub.training.release", description=__doc__)
    p.add_argument("folder", type=Path, help="an exported model folder (a run's best/ or final/)")
    p.add_argument("--name", required=True, help="zoo name, e.g. scops_faces300w")
    p.add_argument("--zoo", type=Path, default=REPO_ZOO_DIR, help="zoo folder (default: zoo/)")
    p.add_argument("--previous", type=Path, help="the release this replaces (its scores)")
    p.add_argument("--metrics", type=Path, help="metrics.jsonl (default: next to the folder)")
    p.add_argument("--key", default="score", help="validation key of the curve")
    p.add_argument("--overwrite", action="store_true", help="replace zoo/<name> if it exists")
    args = p.parse_args(argv)
    try:
        release(
            args.folder, args.name, args.zoo, args.previous, args.metrics, args.key, args.overwrite
        )
    except (OSError, ValueError) as err:
        print(f"release: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
