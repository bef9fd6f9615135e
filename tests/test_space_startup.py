"""The Hugging Face Space (spaces_demo/): its front matter, its requirements, and a start-up as a
Space runs it (``python app.py`` with the Space's environment variables)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import metadata_load
from packaging.requirements import Requirement

from copart_hub.hub.base import REPO_URL
from copart_hub.hub.resolve import HUB_ORG, RELEASED

SPACE = Path(__file__).resolve().parent.parent / "spaces_demo"
START_TIMEOUT_S = 240  # a busy 2-core machine loads torch, gradio and the zoo in about a minute


def test_front_matter_declares_the_models_and_their_terms() -> None:
    meta = metadata_load(SPACE / "README.md")
    assert meta is not None
    assert meta["sdk"] == "gradio" and (SPACE / meta["app_file"]).is_file()
    gradio = pytest.importorskip("gradio", reason="the Space runs on gradio")
    assert meta["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]
    assert meta["license"] == "other" and meta["license_name"] and meta["license_link"]
    assert meta["models"] == [f"{HUB_ORG}/{name}" for name in RELEASED]


def test_requirements_install_the_library_from_its_repository() -> None:
    lines = (SPACE / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and line[0] != "#"]
    (library,) = [r for r in requirements if r.name == "copart-hub"]
    assert library.url == f"git+{REPO_URL}" and library.extras == {"demo"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_space_starts_on_the_port_it_is_given(tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the Space runs on gradio")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    env.update(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        SYSTEM="spaces",
        SPACE_ID="copart-hub/demo",
        GRADIO_TEMP_DIR=str(tmp_path / "gradio"),
        HF_HUB_OFFLINE="1",  # every released model is in this checkout's zoo
        OMP_NUM_THREADS="1",
    )
    log = tmp_path / "space.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=SPACE, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            config = _wait_for_config(f"http://127.0.0.1:{port}", proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert config is not None, f"no answer on port {port}:\n{log.read_text()[-3000:]}"
    assert config["analytics_enabled"] is False  # the demo's default, before gradio is imported
    elem_ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"seg-image", "sp-image", "sw-source"} <= elem_ids


def _wait_for_config(url: str, proc: subprocess.Popen[bytes]) -> dict | None:
    """The app's ``/config`` once it answers, or ``None`` if the process ends or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/config", timeout=5) as response:
                return json.load(response)
        except OSError:
            time.sleep(1)
    return None
