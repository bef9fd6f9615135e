"""Find a checkpoint folder: a local path, a model bundled in the zoo, or a Hugging Face repo."""

from __future__ import annotations

import contextlib
from pathlib import Path

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from .errors import ModelNotFoundError

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
CONFIG_NAME = constants.CONFIG_NAME  # config.json
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
CARD_FILES = ("README.md", "LICENSE.md")  # kept with the weights by save_pretrained / push


def zoo_names() -> list[str]:
    """Names of the checkpoints bundled with the package."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def _check_folder(folder: Path) -> tuple[Path, Path]:
    config, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config.is_file():
        raise ModelNotFoundError(f"{folder} has no {CONFIG_NAME}; is it a copart_hub checkpoint?")
    if not weights.is_file():
        legacy = " (only pickled weights found; copart_hub loads safetensors only)"
        has_bin = (folder / constants.PYTORCH_WEIGHTS_NAME).is_file()
        raise ModelNotFoundError(f"{folder} has no {WEIGHTS_NAME}{legacy if has_bin else ''}")
    return config, weights


def resolve_checkpoint(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> tuple[Path, Path]:
    """Return ``(config.json, model.safetensors)`` paths for a folder, zoo name or Hub repo id.

    Local folders and zoo names never touch the network. A Hub repo id is looked up with
    ``hf_hub_download``, which reads the local cache when ``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True``.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _check_folder(path)
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is a file; pass the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    name = str(name_or_path)
    if name in zoo_names():
        return _check_folder(ZOO_DIR / name)
    if "/" not in name:  # not a folder, not bundled, and not an "owner/name" Hub id
        raise ModelNotFoundError(
            f"{name!r} is not a local folder, a bundled model "
            f"({', '.join(zoo_names()) or 'none'}) or a Hugging Face repo id (owner/name)"
        )
    files = []
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            files.append(
                Path(
                    hf_hub_download(
                        repo_id=name,
                        filename=filename,
                        revision=revision,
                        cache_dir=cache_dir,
                        local_files_only=local_files_only,
                        token=token,
                    )
                )
            )
        except HFValidationError:
            raise ModelNotFoundError(
                f"{name!r} is not a local folder, a bundled model ({', '.join(zoo_names())}) "
                "or a valid Hugging Face repo id"
            ) from None
        except LocalEntryNotFoundError:
            raise ModelNotFoundError(
                f"{name!r} ({filename}) is not in the local Hugging Face cache and the Hub cannot "
                "be reached (offline: HF_HUB_OFFLINE=1, local_files_only=True, or no network). "
                "Download it once while online, or pass a local folder."
            ) from None
        except (RepositoryNotFoundError, EntryNotFoundError) as err:
            raise ModelNotFoundError(f"{name!r}: {filename} not found on the Hub ({err})") from None
    for filename in CARD_FILES:  # the card and the weights' terms, when the repo has them
        with contextlib.suppress(LocalEntryNotFoundError, EntryNotFoundError):
            hf_hub_download(
                repo_id=name,
                filename=filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
            )
    return files[0], files[1]
