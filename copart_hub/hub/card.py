"""Model cards: a Hub ``README.md`` with metadata, training facts, scores and samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

TEMPLATE = Path(__file__).with_name("card_template.md")


def scores_table(scores: dict[str, Any]) -> str:
    """Markdown table of ``{metric: value}`` (nested dicts become ``a/b`` rows)."""
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            rows.append((prefix, value))

    walk("", scores)
    if not rows:
        return "No held-out scores were recorded."
    body = "\n".join(
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows
    )
    return "| metric | value |\n|---|---|\n" + body


def write_model_card(model: nn.Module, path: str | Path, info: dict[str, Any]) -> Path:
    """Render the card for ``model`` from ``info`` (see the template for the keys)."""
    name = info.get("name", type(model).__name__)
    card_data = ModelCardData(
        library_name="copart_hub",
        pipeline_tag="image-segmentation",
        license="other",
        license_name=info.get("licence_name", "research-only"),
        tags=["copart-hub", *info.get("tags", [])],
        datasets=info.get("datasets"),
        model_name=name,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        name=name,
        summary=info.get("summary", ""),
        method=info.get("method", type(model).__name__),
        paper=info.get("paper", ""),
        architecture=getattr(model, "architecture", type(model).__name__),
        num_parts=info.get("num_parts", "n/a"),
        data=info.get("data", "unknown"),
        data_licence=info.get("data_licence", "unknown"),
        steps=info.get("steps", "?"),
        batch_size=info.get("batch_size", "?"),
        hardware=info.get("hardware", "?"),
        reference_features=info.get("reference_features", "n/a"),
        load_name=info.get("load_name", name),
        usage=info.get("usage", ""),
        scores=info.get("scores_markdown") or scores_table(info.get("validation", {})),
        sample_image=info.get("sample_image"),
        train_config=json.dumps(info.get("train_config", {}), indent=2),
        limitations=info.get("limitations", "See the project README."),
    )
    path = Path(path)
    card.save(path)
    return path


SCORES_HEADING = "## Held-out scores"


def replace_card_section(card_path: str | Path, heading: str, body: str) -> None:
    """Replace the text under ``heading`` (up to the next ``## `` heading) in a card."""
    path = Path(card_path)
    text = path.read_text(encoding="utf-8")
    start = text.find(heading + "\n")
    if start < 0:
        raise ValueError(f"{path} has no section {heading!r}")
    body_start = start + len(heading) + 1
    nxt = text.find("\n## ", body_start)
    end = len(text) if nxt < 0 else nxt + 1
    path.write_text(text[:body_start] + "\n" + body.strip() + "\n\n" + text[end:], encoding="utf-8")
