"""Model registry: architectures (classes) and named entrypoints (class + default kwargs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import CopartModel

_ARCHITECTURES: dict[str, type[CopartModel]] = {}


@dataclass(frozen=True)
class ModelEntry:
    """A named model configuration, like a timm model name."""

    name: str
    architecture: str
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_ENTRYPOINTS: dict[str, ModelEntry] = {}


def register_architecture(name: str) -> Callable[[type[CopartModel]], type[CopartModel]]:
    """Class decorator: make ``name`` the ``architecture`` key written to ``config.json``."""

    def wrap(cls: type[CopartModel]) -> type[CopartModel]:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not cls:
            raise ValueError(f"architecture {name!r} is already registered")
        cls.architecture = name
        _ARCHITECTURES[name] = cls
        return cls

    return wrap


def register_model(name: str, architecture: str, description: str = "", **defaults: Any) -> None:
    """Register a named configuration usable with :func:`create_model`."""
    _ENTRYPOINTS[name] = ModelEntry(name, architecture, dict(defaults), description)


def get_architecture(name: str) -> type[CopartModel]:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(_ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; known: {known}") from None


def get_entry(name: str) -> ModelEntry:
    try:
        return _ENTRYPOINTS[name]
    except KeyError:
        known = ", ".join(sorted(_ENTRYPOINTS))
        raise ValueError(f"unknown model {name!r}; known: {known}") from None


def model_names() -> list[str]:
    return sorted(_ENTRYPOINTS)
