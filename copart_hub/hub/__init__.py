"""Model API shared by all methods: base class, registry, checkpoint resolution."""

from .base import CopartModel, load_weights_strict
from .errors import CheckpointMismatchError, ModelNotFoundError
from .registry import get_architecture, model_names, register_architecture, register_model
from .resolve import zoo_names

__all__ = [
    "CheckpointMismatchError",
    "CopartModel",
    "ModelNotFoundError",
    "get_architecture",
    "load_weights_strict",
    "model_names",
    "register_architecture",
    "register_model",
    "zoo_names",
]
