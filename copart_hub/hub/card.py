"""Model cards: a Hub ``README.md`` with metadata, training facts, scores and samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

TEMPLATE = Path(__file__).with_name("card_template.md")

#: how validation keys of the training tasks appear in a card's ``model-index``:
#: key -> (metric type, readable name)
METRICS = {
    "fg_iou": ("iou", "foreground IoU"),
    "landmark_error_iod_pct": ("landmark_error", "landmark error (% of inter-ocular distance)"),
    "mae_sum": ("mae", "keypoint MAE sum (px)"),
    "asa": ("asa", "achievable segmentation accuracy"),
    "boundary_recall": ("recall", "boundary recall"),
    "landing_iod_pct": (
        "landing_error",
        "landing of landmarks carried to another face by descriptor matching (% IOD)",
    ),
}


TABLE_METRICS = {
    **METRICS,
    "fg_ari": ("ari", "ARI x100 of part labels at foreground landmarks"),
    "fg_nmi": ("nmi", "NMI x100 of part labels at foreground landmarks"),
    "full_ari": ("ari", "ARI x100 of part labels at all landmarks"),
    "full_nmi": ("nmi", "NMI x100 of part labels at all landmarks"),
    "ASA": METRICS["asa"],
    "BR": METRICS["boundary_recall"],
    "BP": ("precision", "boundary precision"),
    "fg_precision": ("precision", "foreground precision"),
    "fg_recall": ("recall", "foreground recall"),
}
#: table columns that qualify a row (they go into the metric name)
KEY_COLUMNS = ("requested", "actual", "actual count")


def table_eval_results(text: str, datasets: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """``EvalResult`` fields of the rows about *this model* in a card's score tables.

    Each ``### <dataset>`` section under ``## Held-out scores`` (as written by ``copart-hub eval
    ... --card``) holds tables whose first column names the method; rows that start with
    ``this model`` give one result per metric column (:data:`TABLE_METRICS`). ``datasets`` maps
    a section name (``""``: tables before any ``###``) to the dataset's (type, split name).
    A suffix (``this model + GrabCut``) and the
    table's non-metric columns (superpixel counts) go into the metric name.
    """
    span = section_span(text, SCORES_HEADING)
    if span is None:
        return []
    results: list[dict[str, Any]] = []
    section = ""
    header: list[str] = []
    for line in text[span[0] : span[1]].splitlines():
        if line.startswith("### "):
            section, header = line[4:].strip(), []
            continue
        if not line.startswith("|"):
            header = []  # a table ends
            continue
        if section not in datasets:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
            continue
        if not cells[0].startswith("this model"):
            continue
        variant = cells[0][len("this model") :].strip()
        pairs = list(zip(header[1:], cells[1:], strict=False))  # ragged rows: shortest wins
        keys = [f"{h} {c}" for h, c in pairs if h in KEY_COLUMNS and c]
        for col, cell in pairs:
            if col not in TABLE_METRICS or not cell:
                continue
            metric_type, metric_name = TABLE_METRICS[col]
            detail = ", ".join([variant, *keys] if variant else keys)
            results.append(
                {
                    "task_type": "image-segmentation",
                    "dataset_type": datasets[section][0],
                    "dataset_name": datasets[section][1],
                    "dataset_config": section or None,
                    "metric_type": metric_type,
                    "metric_name": f"{metric_name} ({detail})" if detail else metric_name,
                    "metric_value": float(cell),
                }
            )
    return results


def eval_results(info: dict[str, Any]) -> list[EvalResult] | None:
    """``EvalResult`` rows for a card's ``model-index``: ``info["eval_results"]`` (dicts of
    :class:`~huggingface_hub.EvalResult` fields), else the known keys of ``info["validation"]``
    on ``info["eval_dataset"]`` (``{"type", "name", "split"}``); the task is the card's
    ``pipeline_tag``."""
    task = info.get("pipeline_tag", "image-segmentation")
    if info.get("eval_results"):
        return [EvalResult(**{**row, "task_type": task}) for row in info["eval_results"]]
    dataset = info.get("eval_dataset")
    scores = info.get("validation") or {}
    rows = [
        EvalResult(
            task_type=task,
            dataset_type=dataset["type"],
            dataset_name=dataset["name"],
            dataset_split=dataset.get("split"),
            metric_type=METRICS[key][0],
            metric_name=METRICS[key][1],
            metric_value=round(float(value), 4),
        )
        for key, value in scores.items()
        if key in METRICS and dataset
    ]
    return rows or None


def card_data(name: str, info: dict[str, Any]) -> ModelCardData:
    """Hub metadata: ``license: other`` with an id (``license_name``) and a link when the weights
    carry their training data's terms (``unknown`` when nobody said), datasets, tags and a
    ``model-index`` made from the held-out scores."""
    licence = info.get("license_name")
    pipeline = info.get("pipeline_tag", "image-segmentation")
    kind = ["part-segmentation"] if pipeline == "image-segmentation" else []
    return ModelCardData(
        library_name="copart_hub",
        pipeline_tag=pipeline,
        license="other" if licence else "unknown",
        license_name=licence,
        license_link=info.get("license_link") if licence else None,
        tags=sorted({"copart-hub", *kind, *info.get("tags", [])}),
        datasets=info.get("datasets"),
        model_name=name,
        eval_results=eval_results(info),
    )


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


def build_model_card(model: nn.Module, info: dict[str, Any]) -> ModelCard:
    """Render the card for ``model`` from ``info`` (see the template and :func:`card_data` for
    the keys)."""
    name = info.get("name", type(model).__name__)
    info = {"pipeline_tag": getattr(model, "card_pipeline_tag", "image-segmentation"), **info}
    return ModelCard.from_template(
        card_data(name, info),
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


def write_model_card(model: nn.Module, path: str | Path, info: dict[str, Any]) -> Path:
    """Write :func:`build_model_card` to ``path`` (a ``README.md``)."""
    path = Path(path)
    build_model_card(model, info).save(path)
    return path


def update_card_metadata(card_path: str | Path, name: str, info: dict[str, Any]) -> None:
    """Replace the metadata block of an existing card with :func:`card_data`; the text stays."""
    card = ModelCard.load(card_path)
    card.data = card_data(name, info)
    card.save(card_path)


SCORES_HEADING = "## Held-out scores"


def section_span(text: str, heading: str) -> tuple[int, int] | None:
    """``(body start, body end)`` of ``heading``: up to the next heading of the same or a
    higher level (``## a`` ends at ``## b`` or ``# c``, not at ``### d``). The heading must be
    a whole line (``### a`` is not found in ``#### a``)."""
    if text.startswith(heading + "\n"):
        start = 0
    else:
        start = text.find("\n" + heading + "\n")
        if start < 0:
            return None
        start += 1
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
    span = section_span(text, heading)
    if span is None:
        parent_span = section_span(text, parent) if parent else None
        if parent_span is None:
            raise ValueError(f"{path} has no section {heading!r}")
        at = parent_span[1]
        text = text[:at] + heading + "\n" + block + text[at:]
    else:
        text = text[: span[0]] + block + text[span[1] :]
    path.write_text(text, encoding="utf-8")
