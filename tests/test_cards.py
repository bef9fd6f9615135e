"""Model cards the Hub reads: metadata of every released card, and cards written by training."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from copart_hub.hub.card import build_model_card, table_eval_results
from copart_hub.hub.resolve import local_zoo_folder, zoo_names

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_card_metadata_follows_hub_conventions(name: str):
    folder = local_zoo_folder(name)
    meta = metadata_load(folder / "README.md")
    assert meta["license"] == "other"
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", meta["license_name"]), meta["license_name"]
    assert (folder / meta["license_link"]).is_file()  # a file of the repo, e.g. LICENSE.md
    assert meta["datasets"] and meta["library_name"] == "copart_hub"
    assert "model_name" not in meta  # consumed into model-index, never a stray key
    card = ModelCard.load(folder / "README.md")
    name_, results = model_index_to_eval_results(meta["model-index"])
    assert name_ == name and results
    assert all(isinstance(r.metric_value, float) and r.dataset_name for r in results)
    assert card.data.eval_results  # the Hub's own parser reads them back


def test_zoo_metadata_is_in_sync_with_the_score_tables():
    """Edited tables without re-running the metadata script fail here."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "model_cards" / "zoo_metadata.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


CARD = """
## Held-out scores

| method | requested | actual | ASA | BR | s / image |
|---|---:|---:|---:|---:|---:|
| this model | 100 | 163.7 | 0.9367 | 0.6645 | 0.230 |
| skimage_slic | 100 | 65.3 | 0.8672 | 0.4572 | 0.085 |

### weizmann_horse

| model | fg_iou |
|---|---:|
| this model | 0.610 |
| this model + GrabCut | 0.768 |
| mean mask | 0.485 |

### elsewhere

| model | fg_iou |
|---|---:|
| this model | 0.1 |

## Limitations

| this model | 9 |
"""


def test_table_eval_results_reads_this_model_rows_only():
    rows = table_eval_results(
        CARD, {"": ("BSDS500", "BSDS500 val"), "weizmann_horse": ("Weizmann-Horse", "181-228")}
    )
    got = [(r["dataset_type"], r["metric_type"], r["metric_value"], r["metric_name"]) for r in rows]
    assert got == [
        (
            "BSDS500",
            "asa",
            0.9367,
            "achievable segmentation accuracy (requested 100, actual 163.7)",
        ),
        ("BSDS500", "recall", 0.6645, "boundary recall (requested 100, actual 163.7)"),
        ("Weizmann-Horse", "iou", 0.61, "foreground IoU"),
        ("Weizmann-Horse", "iou", 0.768, "foreground IoU (+ GrabCut)"),
    ]


def test_training_card_has_licence_id_and_model_index(tmp_path: Path):
    import copart_hub
    from copart_hub.data.provenance import card_facts

    model = copart_hub.create_model("ssn_pix")
    info = {**card_facts("bsds500"), "name": "mine", "validation": {"asa": 0.9, "score": 0.9}}
    build_model_card(model, info).save(tmp_path / "README.md")
    meta = metadata_load(tmp_path / "README.md")
    assert meta["license"] == "other" and meta["license_name"] == "bsds500-non-commercial"
    _, results = model_index_to_eval_results(meta["model-index"])
    assert [(r.metric_type, r.metric_value) for r in results] == [("asa", 0.9)]
    # no provenance: the weights' terms are unknown, and the card says so
    build_model_card(model, {"name": "x"}).save(tmp_path / "README.md")
    meta = metadata_load(tmp_path / "README.md")
    assert meta["license"] == "unknown" and "license_name" not in meta
