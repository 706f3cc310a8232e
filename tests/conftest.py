"""Shared test fixtures: where the real Omniglot sample lives."""

import os
import pathlib

import pytest

_DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
OMNIGLOT_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


def omniglot_dir() -> pathlib.Path:
    """`TFMETA_DATA_DIR`, or `../shared/data/omniglot` beside the checkout."""
    return pathlib.Path(os.environ.get("TFMETA_DATA_DIR", _DEFAULT_DATA_DIR))


@pytest.fixture(scope="session")
def omniglot_data_dir() -> pathlib.Path:
    """Folder holding the two real Omniglot archives; skips the test where absent."""
    path = omniglot_dir()
    missing = [name for name in OMNIGLOT_ZIPS if not (path / name).is_file()]
    if missing:
        pytest.skip(
            f"real Omniglot sample not found: {', '.join(missing)} missing in {path} "
            "(set TFMETA_DATA_DIR to the folder holding the Omniglot archives)"
        )
    return path


def write_omniglot_tree(root: pathlib.Path, alphabets: dict, images_per_character: int = 2, size: int = 4):
    """Writes an unpacked Omniglot-layout tree `root/<alphabet>/characterNN/*.png` of tiny images.

    `alphabets` maps each alphabet to its number of characters. Character `k` (counted
    over the whole tree, in sorted order) has one dark stroke pixel at `k % size**2`, so
    its images differ from its neighbours'. Returns `root`.
    """
    from PIL import Image  # noqa: PLC0415 - only the tests that write trees need it
    import numpy as np  # noqa: PLC0415

    k = 0
    for alphabet in sorted(alphabets):
        for c in range(1, alphabets[alphabet] + 1):
            folder = root / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_character):
                pixels = np.full((size, size), 255, np.uint8)
                pixels.flat[k % (size * size)] = 0
                Image.fromarray(pixels).save(folder / f"{k:04d}_{i:02d}.png")
            k += 1
    return root


@pytest.fixture
def omniglot_tree():
    """`write_omniglot_tree`, for tests (a fixture: the `tests` folder is not an importable package)."""
    return write_omniglot_tree

