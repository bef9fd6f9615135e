"""Example images that ship with a dependency (scikit-image), so demos work offline anywhere."""

from __future__ import annotations

from PIL import Image

EXAMPLE_NAMES = ("astronaut", "chelsea", "coffee", "rocket")


def example_images() -> dict[str, Image.Image]:
    """``{name: RGB image}`` from ``skimage.data`` (bundled in the scikit-image wheel)."""
    import skimage.data

    return {
        name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        for name in EXAMPLE_NAMES
    }
