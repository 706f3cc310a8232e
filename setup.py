"""Installs tfmeta: `pip install -e .` (library) or `pip install -e ".[test]"`."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements():
    lines = (_HERE / "requirements.txt").read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


setuptools.setup(
    name="tfmeta",
    version="0.1.0",
    description="Meta-learning (MAML, Reptile, ...) for TensorFlow 2 and Keras 3.",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["tfmeta", "tfmeta.*", "trainers", "benchmarks"]),
    # The published class lists of the standard benchmarks (tfmeta/data/standard/lists/SOURCES.md).
    package_data={"tfmeta.data.standard": ["lists/*.md", "lists/*/*.txt", "lists/*/*.csv", "lists/*/*.tsv"]},
    install_requires=_requirements(),
    extras_require={
        # matplotlib: the prediction plots of the amortized trainers (optional; the tests draw them).
        "plots": ["matplotlib>=3.8"],
        # pytest-xdist: the suite runs its test files on the cores in parallel (pytest.ini).
        # gymnasium (pure Python): RL²'s Gymnasium adapter (`--env=gym:<id>`) and its test.
        "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "matplotlib>=3.8", "gymnasium>=1.0"],
        "gym": ["gymnasium>=1.0"],
    },
    license="Apache-2.0",
)
