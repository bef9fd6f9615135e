"""``copart-hub train``: run a task from a YAML config with ``key=value`` overrides.

One process on CPU or GPU::

    copart-hub train --config ssn_bsds500 max_steps=2000 output_dir=runs/ssn

Several GPUs or nodes (DDP; same arguments)::

    accelerate launch --num_processes 4 --mixed_precision bf16 \
        -m copart_hub.training.launch --config ssn_bsds500
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from copart_hub.cli import CliError, Parser, report_error

from .config import load_config

PROG = "copart-hub train"
CONFIG_DIR = Path(__file__).with_name("configs")


def resolve_config(name: str) -> Path:
    """A path, or the name of a bundled config (``training/configs/<name>.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{name}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"config {name!r} is neither a file nor a bundled config ({known})")


def main(argv: list[str] | None = None) -> int:
    """Check the config, the task arguments and the files they name (one error line and exit
    code 2 for any mistake, before a model or data set is built), then train."""
    from safetensors import SafetensorError

    from copart_hub.hub import CheckpointMismatchError

    parser = Parser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML file or bundled config name")
    parser.add_argument("overrides", nargs="*", help="key=value (nested: task_args.lr=1e-4)")
    try:
        args = parser.parse_args(argv)
        cfg = load_config(resolve_config(args.config) if args.config else None, args.overrides)
        from .trainer import Trainer, TrainingError

        trainer = Trainer(cfg)
    except (CliError, ValueError, OSError, CheckpointMismatchError, SafetensorError) as err:
        return report_error(PROG, err)
    try:
        result = trainer.train()
    except (TrainingError, OSError) as err:
        return report_error(PROG, err)
    print(f"finished at step {result['step']}; final scores: {result['final']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
