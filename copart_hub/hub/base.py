"""The base class every copart_hub model derives from (save / load / hub / config)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from safetensors.torch import load_file
from torch import nn

from .errors import CheckpointMismatchError
from .registry import get_architecture
from .resolve import CARD_FILES, resolve_checkpoint

T = TypeVar("T", bound="CopartModel")

REPO_URL = "https://github.com/copart-hub/copart_hub"


class CopartModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="copart_hub",
    pipeline_tag="image-segmentation",
    repo_url=REPO_URL,
    docs_url=REPO_URL + "#readme",
    tags=["copart-hub", "part-segmentation", "self-supervised"],
):
    """``nn.Module`` + Hub mixin with a JSON config made of the flat ``__init__`` kwargs.

    Subclasses are registered with :func:`copart_hub.hub.registry.register_architecture`, which
    sets :attr:`architecture`; the key is written into ``config.json`` so that
    :func:`copart_hub.from_pretrained` can rebuild the right class. Loading is safetensors-only
    and strict.
    """

    architecture: ClassVar[str] = ""
    #: the Hub ``pipeline_tag`` of its cards (descriptor models: ``image-feature-extraction``)
    card_pipeline_tag: ClassVar[str] = "image-segmentation"
    #: config keys that must be reset before saving (e.g. a local path to backbone weights
    #: that only matters at construction time and is superseded by ``model.safetensors``)
    transient_config: ClassVar[dict[str, Any]] = {}

    @property
    def config(self) -> dict[str, Any]:
        """The JSON config (``architecture`` + constructor kwargs) that rebuilds this model."""
        cfg = dict(self._hub_mixin_config or {})
        cfg.update(self.derived_config())
        cfg.update(self.transient_config)
        return {"architecture": self.architecture, **cfg}

    def derived_config(self) -> dict[str, Any]:
        """Values resolved at construction (e.g. backbone channels and normalisation) that are
        saved so that inference never has to look them up again; ``__init__`` accepts them."""
        return {}

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> str | None:  # type: ignore[override]
        """Write ``config.json`` (with ``architecture``), ``model.safetensors`` and the card.

        A model loaded with :meth:`from_pretrained` keeps its card, licence and sample images
        while its weights are unchanged (the files beside its weights are copied unless the
        folder already has them); any other model, fine-tuned ones included, gets a copart_hub
        card (:meth:`generate_model_card`). ``push_to_hub`` goes through
        here, so what is pushed reloads with :func:`copart_hub.from_pretrained`.
        """
        if kwargs.get("config") is None:  # the mixin's push_to_hub passes config=None
            kwargs["config"] = self.config
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        card_files, digest = getattr(self, "card_files", ((), None))
        unchanged = digest is not None and digest == weights_digest(self)
        for source in card_files if unchanged else ():
            if not (folder / source.name).exists() and source.is_file():
                shutil.copy2(source, folder / source.name)
        return super().save_pretrained(folder, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """A copart_hub card for a model without one (licence ``unknown``: the weights' terms
        are those of their training data, which only their author can state)."""
        from .card import build_model_card

        return build_model_card(self, {"num_parts": getattr(self, "num_parts", "n/a")})

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls: type[T],
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
        **overrides: Any,
    ) -> T:
        """Load a checkpoint from a local folder, the bundled zoo, or a Hub repo id (strict).

        ``overrides`` replace config values that do not change the weights' shapes (for
        example the default number of superpixels).
        """
        config_file, weights_file = resolve_checkpoint(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise CheckpointMismatchError(f"{config_file} must hold a JSON object")
        arch = config.pop("architecture", None)
        if arch is None:
            raise CheckpointMismatchError(f"{config_file} has no 'architecture' key")
        target = get_architecture(arch)
        if not issubclass(target, cls):
            raise CheckpointMismatchError(
                f"{pretrained_model_name_or_path} holds a {target.__name__!r} ({arch}), "
                f"not a {cls.__name__}"
            )
        for key, value in target.transient_config.items():  # e.g. a local weight file
            if config.get(key, value) != value:
                raise CheckpointMismatchError(
                    f"{config_file} sets {key!r} to {config[key]!r}: a saved config may not "
                    f"name files to read at load time (expected {json.dumps(value)})"
                )
        model = target(**{**config, **overrides})
        load_weights_strict(model, weights_file, map_location)
        folder = Path(weights_file).parent
        files = [folder / name for name in CARD_FILES if (folder / name).is_file()]
        model.card_files = (files + sorted(folder.glob("*.png")), weights_digest(model))
        return model.eval()


def weights_digest(model: nn.Module) -> str:
    """SHA-1 of the state dict's tensors: tells whether weights changed since loading."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_weights_strict(
    model: nn.Module, weights_file: str | Path, map_location: str | torch.device = "cpu"
) -> None:
    """Load a safetensors file into ``model``; any missing/unexpected/misshaped key is an error."""
    state = load_file(str(weights_file), device=str(map_location))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if misshaped:
        problems.append("shape mismatch: " + ", ".join(misshaped))
    if problems:
        raise CheckpointMismatchError(
            f"{weights_file} does not match {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    model.to(map_location)
