"""Fixtures for the data tests: real Omniglot decoded once per session, tiny image folders."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from tfmeta.data.sources import ClassDataset

TRAIN_ALPHABETS = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin", "Japanese_(katakana)"]
TEST_ALPHABETS = ["Sanskrit", "Tagalog"]


@pytest.fixture(scope="session")
def omniglot(omniglot_data_dir) -> ClassDataset:
    """Real Omniglot from the two published zips, 28x28, decoded once."""
    return ClassDataset.from_omniglot(omniglot_data_dir)


def write_png(path: pathlib.Path, value: int, size=(8, 8)) -> None:
    """Writes a greyscale PNG filled with `value`, with one pixel of 255 - value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size, value, np.uint8)
    pixels[0, 0] = 255 - value
    Image.fromarray(pixels).save(path)


def make_folder(root: pathlib.Path, classes: dict[str, int]) -> pathlib.Path:
    """Creates `root/<class>/<i>.png` with `classes[class]` images each; value = 10 * i."""
    for name, count in classes.items():
        for i in range(count):
            write_png(root / name / f"{i}.png", 10 * i)
    return root
