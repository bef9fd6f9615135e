"""Write the Hub metadata of every released card, and the weights' ``LICENSE.md``.

The ``model-index`` comes from the card's own held-out tables (``this model`` rows), so it
always says what the card says::

    python model_cards/zoo_metadata.py            # rewrite the zoo cards' metadata blocks
    python model_cards/zoo_metadata.py --check    # exit 1 if a card is out of date
"""

from __future__ import annotations

import argparse
import json
import sys

from huggingface_hub import ModelCard

from copart_hub.data.provenance import SOURCES, card_facts, licence_text
from copart_hub.hub.card import card_data, table_eval_results
from copart_hub.hub.registry import get_architecture
from copart_hub.hub.resolve import local_zoo_folder

FACES_SPLIT = "300-W faces, every 5th crop (held out)"
#: released model -> (training data source or sources, tags, {card section: held-out split it
#: scores}; a section of None is the source's own held-out split, "" the tables before any ###)
RELEASES = {
    "ssn_bsds500": ("bsds500", ["superpixels", "ssn"], {"": None}),
    "scops_faces300w": (
        "faces300w",
        ["scops"],
        {"faces300w-zoomshift": FACES_SPLIT + ", random zoom/shift", "faces300w": FACES_SPLIT},
    ),
    "scops_horses": (
        ("weizmann_horse", "bsds500_backgrounds"),
        ["scops"],
        {"weizmann_horse": None},
    ),
    "mcs_taichi": (
        ("taichi", "bsds500_backgrounds"),
        ["mcs", "motion-cosegmentation"],
        {"taichi": None},
    ),
    "mcs_faces": (
        ("faces300w", "talking_face"),
        ["mcs", "motion-cosegmentation", "part-swap"],
        {"faces300w": FACES_SPLIT},
    ),
    "dve_faces300w": ("faces300w", ["descriptors", "dve"], {"faces300w": FACES_SPLIT}),
}


def expected(name: str) -> tuple[ModelCard, str]:
    """The card of ``name`` with up-to-date metadata, and its ``LICENSE.md``."""
    source, tags, sections = RELEASES[name]
    card = ModelCard.load(local_zoo_folder(name) / "README.md")
    sources = (source,) if isinstance(source, str) else source
    src = SOURCES[sources[0]]  # the first names the held-out split
    datasets = {k: (src.dataset, split or src.eval_name) for k, split in sections.items()}
    config = json.loads((local_zoo_folder(name) / "config.json").read_text(encoding="utf-8"))
    info = {
        **card_facts(*sources),
        "pipeline_tag": get_architecture(config["architecture"]).card_pipeline_tag,
        "tags": tags,
        "eval_results": table_eval_results(card.content, datasets),
    }
    card.data = card_data(name, info)
    return card, licence_text(name, source)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    stale = []
    for name in RELEASES:
        card, licence = expected(name)
        folder = local_zoo_folder(name)
        current = (folder / "README.md").read_text(encoding="utf-8")
        licence_file = folder / "LICENSE.md"
        old_licence = licence_file.read_text(encoding="utf-8") if licence_file.exists() else ""
        if current == str(card) and old_licence == licence:
            continue
        stale.append(name)
        if not args.check:
            card.save(folder / "README.md")
            licence_file.write_text(licence, encoding="utf-8")
    print(("out of date: " if args.check else "updated: ") + (", ".join(stale) or "none"))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
