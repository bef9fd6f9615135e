"""Drive the demo in a real headless browser (Playwright + the system's Chromium).

Used by the browser test and to make the README screenshots::

    python -m copart_hub.spaces_demo.browser --out spaces_demo/screenshots

Playwright is pointed at an installed Chromium (``$COPART_CHROMIUM``, else ``chromium`` on the
PATH, e.g. Debian's package), so no browser is ever downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_MS = 120_000


def find_chromium() -> str | None:
    """Path of an installed Chromium, or ``None``."""
    env = os.environ.get("COPART_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@contextmanager
def browser_page(url: str, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page on ``url`` in headless Chromium; raises ``RuntimeError`` without one."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium found (install Debian's chromium or set COPART_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            yield page
        finally:
            browser.close()


def _upload(page: Any, elem_id: str, path: str | Path) -> None:
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))


def run_segmentation(page: Any, image: str | Path) -> None:
    """Part segmentation tab: upload, segment, wait for the overlay."""
    page.get_by_role("tab", name="Part segmentation").click()
    _upload(page, "seg-image", image)
    page.get_by_role("button", name="Segment").click()
    page.locator("#seg-overlay img").wait_for()


def run_superpixels(page: Any, image: str | Path) -> None:
    """Superpixels tab: upload, compute, wait for both overlays."""
    page.get_by_role("tab", name="Superpixels").click()
    _upload(page, "sp-image", image)
    page.get_by_role("button", name="Compute").click()
    page.locator("#sp-slic img").wait_for()


def run_swap(
    page: Any, source: str | Path, target: str | Path, clicks: Sequence[tuple[float, float]]
) -> int:
    """Part swap tab: upload both images, click the target's parts at ``clicks`` (fractions of
    the shown image), swap, wait for the result. Returns the number of parts chosen."""
    page.get_by_role("tab", name="Part swap").click()
    _upload(page, "sw-source", source)
    _upload(page, "sw-target", target)
    view = page.locator("#sw-target-parts img")
    view.wait_for()
    box = view.bounding_box()
    checked = page.locator("#sw-parts input[type=checkbox]:checked")
    for fx, fy in clicks:
        before = checked.count()
        view.click(position={"x": fx * box["width"], "y": fy * box["height"]})
        page.wait_for_function(
            "([n]) => document.querySelectorAll('#sw-parts input:checked').length !== n",
            arg=[before],
        )
    chosen = checked.count()
    page.locator("#sw-run").click()
    page.locator("#sw-result img").wait_for()
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Launch the demo on the bundled models and save a screenshot of each tab."""
    from .app import build_demo, example_files

    parser = argparse.ArgumentParser(description="screenshots of the demo's tabs")
    parser.add_argument("--out", type=Path, default=Path("spaces_demo/screenshots"))
    parser.add_argument("--port", type=int, default=7870)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images = example_files()["images"]
    face = next((p for p in images if "faces300w" in p), images[0])
    other_face = next((p for p in images if "faces300w" in p and p != face), images[1])
    demo = build_demo()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=args.port, quiet=True)
    try:
        with browser_page(url) as page:
            run_segmentation(page, face)
            page.screenshot(path=str(args.out / "part_segmentation.png"), full_page=True)
            run_superpixels(page, images[0])
            page.screenshot(path=str(args.out / "superpixels.png"), full_page=True)
            run_swap(page, face, other_face, [(0.5, 0.45)])
            page.screenshot(path=str(args.out / "part_swap.png"), full_page=True)
    finally:
        demo.close()
    print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
