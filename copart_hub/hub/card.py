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


def _section_span(text: str, heading: str) -> tuple[int, int] | None:
    """``(body start, body end)`` of ``heading``: up to the next heading of the same or a
    higher level (``## a`` ends at ``## b`` or ``# c``, not at ``### d``)."""
    start = text.find(heading + "\n")
    if start < 0:
        return None
    level = len(heading) - len(heading.lstrip("#"))
    body_start = start + len(heading) + 1
    end = len(text)
    for k in range(1, level + 1):
        nxt = text.find("\n" + "#" * k + " ", body_start)
        if nxt >= 0:
            end = min(end, nxt + 1)
    return body_start, end


def replace_card_section(
    card_path: str | Path, heading: str, body: str, parent: str | None = None
) -> None:
    """Replace the text under ``heading`` in a card. A missing ``heading`` is appended at the
    end of the ``parent`` section when one is given, else it is an error."""
    path = Path(card_path)
    text = path.read_text(encoding="utf-8")
    block = "\n" + body.strip() + "\n\n"
    span = _section_span(text, heading)
    if span is None:
        parent_span = _section_span(text, parent) if parent else None
        if parent_span is None:
            raise ValueError(f"{path} has no section {heading!r}")
        at = parent_span[1]
        text = text[:at] + heading + "\n" + block + text[at:]
    else:
        text = text[: span[0]] + block + text[span[1] :]
    path.write_text(text, encoding="utf-8")
