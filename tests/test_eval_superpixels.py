"""BSDS500 superpixel evaluation: SSN and skimage SLIC rows, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import copart_hub
from copart_hub.evaluation.superpixels import (
    evaluate_superpixels,
    format_table,
    load_superpixel_model,
    main,
    slic_method,
    ssn_method,
)


def _grid_method(image: np.ndarray, n: int) -> np.ndarray:
    """A fixed square grid with about ``n`` cells."""
    h, w = image.shape[:2]
    step = max(1, int(np.sqrt(h * w / n)))
    yy, xx = np.indices((h, w)) // step
    return yy * (w // step + 1) + xx


def test_evaluate_rows(bsds_root: Path) -> None:
    rows = evaluate_superpixels({"grid": _grid_method}, bsds_root, counts=(50, 200), limit=2)
    assert [(r["method"], r["requested"]) for r in rows] == [("grid", 50), ("grid", 200)]
    for r in rows:
        assert r["n_images"] == 2
        assert 0.5 < r["asa"] <= 1 and 0 < r["br"] <= 1 and 0 < r["bp"] <= 1
        assert 0.7 < r["co"] < 0.8  # near-square cells score close to pi/4
        assert r["seconds"] >= 0
    assert rows[1]["n_segments"] > rows[0]["n_segments"]
    assert rows[1]["asa"] > rows[0]["asa"] and rows[1]["br"] > rows[0]["br"]
    table = format_table(rows)
    assert table.count("\n") == 3 and "| grid | 200 |" in table


@pytest.mark.slow
def test_ssn_pix_and_slic(bsds_root: Path) -> None:
    methods = {
        "ssn_pix": ssn_method(load_superpixel_model("ssn_pix")),
        "slic": slic_method(),
    }
    rows = evaluate_superpixels(methods, bsds_root, counts=(100,), limit=2)
    assert {r["method"] for r in rows} == {"ssn_pix", "slic"}
    for r in rows:
        assert 0.5 < r["asa"] <= 1
        assert 20 < r["n_segments"] < 300


@pytest.mark.slow
def test_main_with_saved_ssn_deep(
    bsds_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ssn_deep"
    copart_hub.create_model("ssn_deep").save_pretrained(folder)
    out = tmp_path / "eval.json"
    args = ["--model", str(folder), "--counts", "100", "--limit", "1", "--json", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "tolerance 1 px" in printed and "skimage_slic" in printed
    result = json.loads(out.read_text())
    assert result["settings"]["tolerance"] == 1 and result["settings"]["n_images"] == 1
    assert [r["method"] for r in result["rows"]] == [str(folder), "skimage_slic"]


def test_main_errors(capsys: pytest.CaptureFixture[str]) -> None:
    # not a folder, not a zoo name, not a valid Hub repo id: fails without network access
    assert main(["--model", "no such model", "--limit", "1"]) == 2
    # a registered model with learned weights needs a checkpoint
    assert main(["--model", "ssn_deep", "--limit", "1"]) == 2
    assert main(["--model", "ssn_pix", "--counts", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_main_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "ssn_pix", "--root", str(tmp_path)]) == 2
    assert "BSDS500 not found" in capsys.readouterr().err


def test_matched_comparison_interpolates_at_reference_counts():
    from copart_hub.evaluation.superpixels import format_matched, matched_comparison

    def row(method, n, asa):
        return {"method": method, "n_segments": n, "asa": asa, "br": asa, "bp": 0.1, "co": 0.3}

    rows = [
        row("ours", 100, 0.90),
        row("ours", 400, 0.96),
        row("skimage_slic", 200, 0.91),
        row("skimage_slic", 50, 0.80),
        row("skimage_slic", 800, 0.95),
    ]
    matched = matched_comparison(rows)
    assert [m["n_segments"] for m in matched] == [200]  # 50 and 800 lie outside ours' range
    assert matched[0]["asa"] == pytest.approx(0.93)  # halfway in log count
    assert matched[0]["skimage_slic_asa"] == 0.91
    assert "0.9300" in format_matched(matched)


def test_card_section_is_replaced(tmp_path: Path) -> None:
    from copart_hub.hub.card import SCORES_HEADING, replace_card_section

    card = tmp_path / "README.md"
    card.write_text(f"# m\n\n{SCORES_HEADING}\n\nold\n\n## Samples\n\nkeep\n")
    replace_card_section(card, SCORES_HEADING, "| new | table |")
    text = card.read_text()
    assert "old" not in text and "| new | table |" in text and text.endswith("## Samples\n\nkeep\n")
    with pytest.raises(ValueError, match="no section"):
        replace_card_section(card, "## Missing", "x")


def test_card_subsections_are_added_then_replaced(tmp_path: Path) -> None:
    from copart_hub.hub.card import SCORES_HEADING, replace_card_section

    card = tmp_path / "README.md"
    card.write_text(f"# m\n\n{SCORES_HEADING}\n\nintro\n\n## Samples\n\nkeep\n")
    replace_card_section(card, "### faces", "A1", parent=SCORES_HEADING)
    replace_card_section(card, "### horses", "B1", parent=SCORES_HEADING)
    replace_card_section(card, "### faces", "A2", parent=SCORES_HEADING)
    text = card.read_text()
    assert "A1" not in text
    order = [text.index(s) for s in ("intro", "### faces", "A2", "### horses", "B1", "## Samples")]
    assert order == sorted(order)
    assert text.endswith("## Samples\n\nkeep\n")


def test_card_section_heading_must_be_a_whole_line(tmp_path: Path) -> None:
    """``### faces`` is not found inside ``#### faces`` (a previous release's copy) or
    ``### faces300w``: the new table goes under the held-out scores, the old one stays."""
    from copart_hub.hub.card import SCORES_HEADING, replace_card_section

    card = tmp_path / "README.md"
    card.write_text(
        f"# m\n\n{SCORES_HEADING}\n\nintro\n\n### faces300w\n\nF\n\n## Previous release\n\n"
        "#### faces\n\nold table\n"
    )
    replace_card_section(card, "### faces", "new table", parent=SCORES_HEADING)
    text = card.read_text()
    assert "#### faces\n\nold table" in text and "### faces300w\n\nF" in text
    assert text.index("### faces\n\nnew table") < text.index("## Previous release")
