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
