"""Where the real data lives: ``$COPART_DATA`` or ``../shared/data`` next to the repository."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path | None:
    """The data folder, or ``None`` when it is not available on this machine."""
    env = os.environ.get("COPART_DATA")
    candidates = [Path(env)] if env else []
    candidates += [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None
