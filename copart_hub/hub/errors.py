"""Errors raised when resolving and loading checkpoints."""


class ModelNotFoundError(FileNotFoundError):
    """The name is not a local folder, a bundled zoo model, nor a reachable/cached Hub repo."""


class CheckpointMismatchError(RuntimeError):
    """The weights do not match the architecture (strict loading)."""
