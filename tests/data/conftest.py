"""Fixtures for the data tests: real Omniglot decoded once per session."""

import pytest

from tfmeta.data.sources import ClassDataset


@pytest.fixture(scope="session")
def omniglot(omniglot_data_dir) -> ClassDataset:
    """Real Omniglot from the two published zips, 28x28, decoded once."""
    return ClassDataset.from_omniglot(omniglot_data_dir)
