"""copart_hub: self-supervised co-part segmentation and superpixels for the Hub / timm ecosystem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import models as models  # registers the model families
from .hub import CopartModel, ModelNotFoundError, model_names, zoo_names
from .hub.registry import get_architecture, get_entry

__version__ = "0.1.0"


def create_model(name: str, **overrides: Any) -> CopartModel:
    """Build a model by registered name (``list_models()``) with randomly initialised weights."""
    entry = get_entry(name)
    return get_architecture(entry.architecture)(**{**entry.defaults, **overrides})


def from_pretrained(name_or_path: str | Path, **kwargs: Any) -> CopartModel:
    """Load any copart_hub checkpoint (local folder, bundled zoo name, or Hub repo id)."""
    return CopartModel.from_pretrained(name_or_path, **kwargs)


def list_models(pretrained: bool = False) -> list[str]:
    """Registered model names, or with ``pretrained=True`` the checkpoints bundled in the zoo."""
    return zoo_names() if pretrained else model_names()


__all__ = ["CopartModel", "ModelNotFoundError", "create_model", "from_pretrained", "list_models"]
