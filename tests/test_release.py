"""Releasing a run's export into the zoo: float16 weights that reload, curve, previous scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from copart_hub.training.release import main, release
from safetensors.torch import load_file

import copart_hub
from copart_hub.data.provenance import licence_text
from copart_hub.hub.card import SCORES_HEADING


def exported_run(tmp_path: Path) -> Path:
    """A run folder as training leaves it: ``best/`` with a card, and ``metrics.jsonl``."""
    torch.manual_seed(0)
    model = copart_hub.create_model("scops_fpn_resnet18", num_parts=3, input_size=(32, 32))
    best = tmp_path / "run" / "best"
    model.save_pretrained(best)
    (best / "swap_examples.png").write_bytes(b"png")
    (best / "LICENSE.md").write_text(licence_text(best.name, "faces300w"), encoding="utf-8")
    card = best / "README.md"
    card.write_text(
        '# SCOPSFPN\n\n```python\nmodel = copart_hub.from_pretrained("SCOPSFPN")\n```\n\n'
        + SCORES_HEADING
        + "\n\nnew scores\n\n## Training configuration\n\ncfg\n",
        encoding="utf-8",
    )
    rows = [{"step": 1, "loss": 3.0}, {"step": 100, "val": {"score": -40.0}}]
    rows += [{"step": 200, "val": {"score": -35.5}}]
    (best.parent / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return best


def test_release_writes_half_weights_that_reload_close(tmp_path: Path):
    best = exported_run(tmp_path)
    old = tmp_path / "old"
    old.mkdir()
    (old / "README.md").write_text(
        f"# old\n\n{SCORES_HEADING}\n\nThe curve below\n\n### faces\n\n| this model | 32.3 |\n"
        "| this model + GrabCut | 30.1 |\n| mean shape | 40.0 |\n\n## Samples\n"
    )
    target = release(best, "tiny", zoo=tmp_path / "zoo", previous=old)
    assert target == tmp_path / "zoo" / "tiny"
    state = load_file(str(target / "model.safetensors"))
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    size = (target / "model.safetensors").stat().st_size
    assert size < 0.6 * (best / "model.safetensors").stat().st_size
    a, b = copart_hub.from_pretrained(best).eval(), copart_hub.from_pretrained(target).eval()
    assert next(b.parameters()).dtype == torch.float32
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert (a(x).softmax(1) - b(x).softmax(1)).abs().max() < 0.02
    card = (target / "README.md").read_text()
    assert card.startswith("# tiny\n") and 'from_pretrained("tiny")' in card
    assert "SCOPSFPN" not in card
    assert (target / "swap_examples.png").read_bytes() == b"png"
    licence = (target / "LICENSE.md").read_text()
    assert licence.startswith("# Terms of the `tiny` weights\n") and "`best`" not in licence
    assert "![validation curve](curve.png)" in card and (target / "curve.png").is_file()
    assert "| 200 | -35.5 |" in card and "| 1 |" not in card  # validation rows only
    previous = card[card.index("## Previous release") : card.index("## Training configuration")]
    assert "#### faces" in previous and "curve below" not in previous  # its tables, not its words
    assert "| previous release | 32.3 |" in previous and "| this model" not in previous
    assert "| previous release + GrabCut | 30.1 |" in previous
    assert "| mean shape | 40.0 |" in previous
    assert card.index("## Previous release") < card.index("## Training configuration")
    assert not list((tmp_path / "zoo").glob(".*"))  # no staging folder left behind


def test_release_refuses_to_overwrite_and_checks_its_input(tmp_path: Path, capsys):
    best = exported_run(tmp_path)
    zoo = tmp_path / "zoo"
    release(best, "tiny", zoo=zoo)
    before = (zoo / "tiny" / "model.safetensors").read_bytes()
    assert main([str(best), "--name", "tiny", "--zoo", str(zoo)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (zoo / "tiny" / "model.safetensors").read_bytes() == before
    assert main([str(best), "--name", "tiny", "--zoo", str(zoo), "--overwrite"]) == 0
    assert main([str(tmp_path), "--name", "x", "--zoo", str(zoo)]) == 2
    assert "has no model.safetensors" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        release(best, "y", zoo=zoo, previous=tmp_path / "missing")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "README.md").write_text(f"# bare\n\n{SCORES_HEADING}\n\nno table\n")
    with pytest.raises(ValueError, match="no `### <dataset>` section"):
        release(best, "y", zoo=zoo, previous=tmp_path / "bare")


def test_gpu_burst_commands_and_collection(tmp_path: Path, capsys):
    """The burst's train commands (bf16, wall-time budget, every job's overrides) and the
    release of a finished run into ``$OUT/zoo`` with the file-size limit of the device tool."""
    from copart_hub.training import gpu_burst

    cmd = gpu_burst.command("mcs_taichi", tmp_path / "r", 7.5, 3, ["batch_size=64"])
    assert cmd[1:4] == ["-m", "copart_hub.training.launch", "--config"]
    for item in ("mcs_taichi", "max_minutes=7.5", "mixed_precision=bf16", "num_workers=3"):
        assert item in cmd
    assert "batch_size=32" in cmd and cmd[-1] == "batch_size=64"  # the caller's wins
    assert gpu_burst.main(["--out", str(tmp_path / "o"), "--jobs", "nope"]) == 2
    assert "unknown jobs ['nope']" in capsys.readouterr().err
    best = exported_run(tmp_path)
    out = gpu_burst.collect("scops_faces300w", best.parent, tmp_path / "zoo", 2**26)
    assert (out / "metrics.jsonl").is_file() and (out / "curve.png").is_file()
    assert copart_hub.from_pretrained(out).config["num_parts"] == 3
    whole = (out / "model.safetensors").read_bytes()
    cut = gpu_burst.collect("scops_faces300w", best.parent, tmp_path / "zoo", 2**20)
    assert not (cut / "model.safetensors").exists()
    parts = sorted(cut.glob("model.safetensors.part*"))
    assert len(parts) == -(-len(whole) // 2**20) and all(p.stat().st_size <= 2**20 for p in parts)
    assert gpu_burst.main(["--join", str(cut)]) == 0
    assert (cut / "model.safetensors").read_bytes() == whole and not list(cut.glob("*.part*"))
