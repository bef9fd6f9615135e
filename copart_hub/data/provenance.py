"""Where the training data of released weights comes from, and under which terms.

Weights inherit the terms of their training data: a card says ``license: other`` with the id
and the ``LICENSE.md`` written beside the weights (:func:`licence_text`), and a model-index on
the held-out split named here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DataSource:
    """A training collection: what it is, its terms, and its held-out split."""

    description: str
    licence_id: str  # the card's ``license_name``
    terms: str
    dataset: str  # the card's ``datasets`` entry and model-index dataset type
    eval_name: str  # the held-out split of the model-index


SOURCES = {
    "faces300w": DataSource(
        "300-W faces (AFW + HELEN train), 4/5 of the 1207 crops",
        "300w-non-commercial",
        "300-W (iBUG, Imperial College London): non-commercial research use only; images "
        "from Flickr remain their authors' property.",
        "300-W",
        "300-W faces, every 5th crop (held out)",
    ),
    "weizmann_horse": DataSource(
        "Weizmann horses 1-180",
        "weizmann-horse-research-only",
        "Weizmann Horse Database (Borenstein & Ullman): research use only.",
        "Weizmann-Horse",
        "Weizmann horses 181-228 (held out)",
    ),
    "taichi": DataSource(
        "Tai-Chi-HD clips 00-11 (14 public demo clips, 12-13 held out for validation)",
        "taichi-hd-research-only",
        "Tai-Chi-HD footage (YouTube) as shown in public research demo videos: research use only.",
        "Tai-Chi-HD",
        "Tai-Chi-HD clips 12-13 (held out), MediaPipe pseudo ground truth",
    ),
    "talking_face": DataSource(
        "one talking-head clip (169 frames, the Thin-Plate Spline Motion Model demo's driving "
        "video)",
        "talking-face-research-only",
        "Talking-head demo clip of a public research repository (MIT-licensed code; footage "
        "from YouTube): research use only.",
        "talking-face-clip",
        "not used for scores",
    ),
    "bsds500": DataSource(
        "BSDS500 train (200 images); selected on BSDS500 val",
        "bsds500-non-commercial",
        "Berkeley Segmentation Dataset 500: non-commercial research use only.",
        "BSDS500",
        "BSDS500 val",
    ),
    "bsds500_backgrounds": DataSource(
        "BSDS500 train photos (200) as copy-paste backgrounds, no annotations used",
        "bsds500-non-commercial",
        "Berkeley Segmentation Dataset 500: non-commercial research use only.",
        "BSDS500",
        "not used for scores",
    ),
}


def card_facts(*sources: str) -> dict[str, object]:
    """The card keys (:func:`copart_hub.hub.card.card_data`) of the training collections;
    the first one names the licence id and the held-out split."""
    picked = [SOURCES[s] for s in sources]
    first = picked[0]
    return {
        "data": "; ".join(s.description for s in picked),
        "data_licence": " ".join(s.terms for s in picked),
        "license_name": first.licence_id,
        "license_link": "LICENSE.md",
        "datasets": [s.dataset for s in picked],
        "eval_dataset": {"type": first.dataset, "name": first.eval_name},
    }


def licence_title(name: str) -> str:
    """The first line of the ``LICENSE.md`` of weights ``name``."""
    return f"# Terms of the `{name}` weights"


def licence_text(name: str, source: str | Sequence[str]) -> str:
    """``LICENSE.md`` of weights ``name`` trained on ``source`` (one collection or several)."""
    picked = [SOURCES[s] for s in ([source] if isinstance(source, str) else source)]
    described = " and ".join(s.description for s in picked)
    terms = " ".join(s.terms for s in picked)
    return (
        f"{licence_title(name)}\n\n"
        f"These weights were trained on {described}. {terms}\n\n"
        "They inherit these terms: use them for non-commercial research only. The copart_hub "
        "code that produced and runs them is Apache-2.0.\n"
    )
