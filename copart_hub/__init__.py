"""copart_hub: self-supervised co-part segmentation and superpixels for the Hub / timm ecosystem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import models as models  # registers the model families
from .hub import CopartModel, ModelNotFoundError, model_names
from .hub.registry import get_architecture, get_entry
from .hub.resolve import PRETRAINED_TAGS

__version__ = "0.1.0"


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> CopartModel:
    """Build a model by registered name (``list_models()``), randomly initialised, or with
    ``pretrained=True`` and a ``<name>.<tag>`` name (``list_models(pretrained=True)``) the
    released weights, as ``from_pretrained`` of that checkpoint gives them."""
    entry = get_entry(name.partition(".")[0])
    if not pretrained:
        return get_architecture(entry.architecture)(**{**entry.defaults, **overrides})
    if name not in PRETRAINED_TAGS:
        known = ", ".join(sorted(PRETRAINED_TAGS))
        raise ValueError(f"no released weights named {name!r}; known: {known}")
    model = from_pretrained(PRETRAINED_TAGS[name], **overrides)
    if model.architecture != entry.architecture:  # the table and the registry disagree
        raise ValueError(f"{name!r} holds a {model.architecture!r}, not {entry.architecture!r}")
    return model


def from_pretrained(name_or_path: str | Path, **kwargs: Any) -> CopartModel:
    """Load any copart_hub checkpoint (local folder, bundled zoo name, or Hub repo id)."""
    return CopartModel.from_pretrained(name_or_path, **kwargs)


def list_models(pretrained: bool = False) -> list[str]:
    """Registered model names, or with ``pretrained=True`` the released weights as
    ``<name>.<tag>`` (each also loads with ``from_pretrained`` of its checkpoint name)."""
    return sorted(PRETRAINED_TAGS) if pretrained else model_names()


__all__ = ["CopartModel", "ModelNotFoundError", "create_model", "from_pretrained", "list_models"]
