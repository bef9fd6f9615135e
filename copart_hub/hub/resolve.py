"""Find a checkpoint folder: a local path, a model bundled in the zoo, or a Hugging Face repo."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from .errors import ModelNotFoundError

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"  # bundled (ssn_bsds500 in the wheel)
#: the repository's top-level zoo/ (a source checkout's mirror of the Hub repos): new releases
#: are written there; the older ones still sit in ZOO_DIR until they are re-released
REPO_ZOO_DIR = Path(__file__).resolve().parents[2] / "zoo"
CONFIG_NAME = constants.CONFIG_NAME  # config.json
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
CARD_FILES = ("README.md", "LICENSE.md")  # kept with the weights by save_pretrained / push
MIRROR_ENV = "COPART_HUB_MIRROR"  # a folder of <name>/ Hub repo folders (a local zoo mirror)
HUB_ORG = "copart-hub"

#: released checkpoints, as timm's pretrained configs: name -> (Hub repo id, pinned revision).
#: A local mirror (:func:`_mirrors`) is used first, without any download.
RELEASED: dict[str, tuple[str, str]] = {
    name: (f"{HUB_ORG}/{name}", "main")
    for name in (
        "ssn_bsds500",
        "scops_faces300w",
        "scops_horses",
        "mcs_faces",
        "mcs_taichi",
        "dve_faces300w",
    )
}
#: ``create_model("<entry>.<tag>", pretrained=True)`` names of the released checkpoints
PRETRAINED_TAGS = {
    "ssn_deep.bsds500": "ssn_bsds500",
    "scops_fpn_regnetx_002.faces300w": "scops_faces300w",
    "scops_fpn_regnetx_002.horses": "scops_horses",
    "mcs_k10.taichi": "mcs_taichi",
    "mcs_k10.faces300w": "mcs_faces",
    "dve_small.faces300w": "dve_faces300w",
}


def _mirrors() -> list[Path]:
    """Local folders of Hub repo folders, searched in order: ``$COPART_HUB_MIRROR``, the
    repository's ``zoo/``, the package's bundled zoo."""
    extra = os.environ.get(MIRROR_ENV)
    checkout = (REPO_ZOO_DIR.parent / "pyproject.toml").is_file()  # not site-packages/zoo
    return [
        *([Path(extra).expanduser()] if extra else []),
        *([REPO_ZOO_DIR] if checkout else []),
        ZOO_DIR,
    ]


def local_zoo_folder(name: str) -> Path | None:
    """The local folder of zoo model ``name`` (or of its Hub id ``copart-hub/<name>``)."""
    if name.startswith(HUB_ORG + "/"):
        name = name.split("/", 1)[1]
    if not name or "/" in name or name.startswith("."):
        return None
    return next((m / name for m in _mirrors() if (m / name / CONFIG_NAME).is_file()), None)


def zoo_names() -> list[str]:
    """Names of the checkpoints available locally (mirror or bundled), without a download."""
    names = {p.name for m in _mirrors() if m.is_dir() for p in m.iterdir()}
    return sorted(n for n in names if local_zoo_folder(n) is not None)


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
    local = local_zoo_folder(name)
    if local is not None:
        return _check_folder(local)
    if name in RELEASED:  # released but not mirrored here: the pinned Hub revision
        name, pinned = RELEASED[name]
        revision = revision or pinned
    if "/" not in name:  # not a folder, not bundled, and not an "owner/name" Hub id
        raise ModelNotFoundError(
            f"{name!r} is not a local folder, a bundled model "
            f"({', '.join(zoo_names()) or 'none'}) or a Hugging Face repo id (owner/name)"
        )

    def download(filename: str) -> Path:
        return Path(
            hf_hub_download(
                repo_id=name,
                filename=filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
                **_library(),
            )
        )

    files = []
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            files.append(download(filename))
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
            download(filename)
    return files[0], files[1]


def _library() -> dict[str, str]:
    """``library_name`` / ``library_version`` for the Hub's download statistics."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"library_name": "copart_hub", "library_version": version("copart-hub")}
    except PackageNotFoundError:  # a source tree that is not installed
        return {"library_name": "copart_hub"}
