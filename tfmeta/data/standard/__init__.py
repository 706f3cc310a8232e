"""The standard few-shot benchmarks with their published class splits.

| name | classes train / val / test | images | groups | module |
| --- | --- | --- | --- | --- |
| `omniglot` | Vinyals 1,028 / 172 / 423 characters; Lake 25 / 5 / 20 alphabets | 28x28x1 | alphabet | `omniglot` |
| `mini_imagenet` | 64 / 16 / 20 (Ravi & Larochelle) | 84x84x3 | - | `mini_imagenet` |
| `tiered_imagenet` | 351 / 97 / 160 in 20 / 6 / 8 categories (Ren et al.) | 84x84x3 | category | `tiered_imagenet` |
| `cifar_fs` | 64 / 16 / 20 (Bertinetto et al.) | 32x32x3 | superclass | `cifar` |
| `fc100` | 60 / 20 / 20 in 12 / 4 / 4 superclasses (Oreshkin et al.) | 32x32x3 | superclass | `cifar` |
| `cub` | 100 / 50 / 50 (Chen et al.) | 84x84x3 | - | `cub` |

The class lists ship with the package (`lists/`, sources in `lists/SOURCES.md`); the
data do not. Each loader reads a data set's published on-disk layout, resizes every
image once and caches the result on disk (`cache.py`), memory-mapped on later runs:
the returned `ClassDataset`s hold uint8 pixels that `tfmeta.data.episode_dataset`
streams from the cache (Omniglot is small and held in memory as float32).
"""

from tfmeta.data.splits import ClassSplit
from tfmeta.data.standard.cache import default_cache_dir
from tfmeta.data.standard.cifar import cifar_fs_classes, fc100_classes, load_cifar_fs, load_fc100
from tfmeta.data.standard.cub import cub_classes, load_cub
from tfmeta.data.standard.mini_imagenet import load_mini_imagenet, mini_imagenet_classes
from tfmeta.data.standard.omniglot import load_omniglot
from tfmeta.data.standard.tiered_imagenet import load_tiered_imagenet, tiered_imagenet_classes

# name: (loader, its published split's name(s), the first being the default)
_LOADERS = {
    "omniglot": (load_omniglot, ("vinyals", "lake", "sample")),
    "mini_imagenet": (load_mini_imagenet, ("ravi",)),
    "tiered_imagenet": (load_tiered_imagenet, ("ren",)),
    "cifar_fs": (load_cifar_fs, ("bertinetto",)),
    "fc100": (load_fc100, ("oreshkin",)),
    "cub": (load_cub, ("chen",)),
}
STANDARD_DATASETS = tuple(_LOADERS)


def load_standard_split(name: str, data_dir, split: str | None = None, image_size=None, cache_dir=None,
                        **options) -> ClassSplit:
    """Loads one of the `STANDARD_DATASETS` with its published class split.

    Args:
        name: `"omniglot"`, `"mini_imagenet"`, `"tiered_imagenet"`, `"cifar_fs"`,
            `"fc100"` or `"cub"`.
        data_dir: the folder holding the data set in its published layout (see the
            data set's module).
        split: the published split: for Omniglot `"vinyals"` (default), `"lake"` or
            `"sample"`; the others have one (`"ravi"`, `"ren"`, `"bertinetto"`,
            `"oreshkin"`, `"chen"`), which None selects.
        image_size: `(height, width)`; None: the data set's usual size (28x28
            Omniglot, 84x84 ImageNet-derived sets and CUB, 32x32 CIFAR).
        cache_dir: where decoded images are cached (None: `$TFMETA_CACHE_DIR` or
            `~/.cache/tfmeta`).
        **options: passed to the data set's loader (e.g. `classes=` for a subset).

    Returns:
        A `ClassSplit(train, val, test)` of `ClassDataset`s with class names, groups
        and `Preprocessing`.

    Raises:
        ValueError: on an unknown `name` or `split`, or data the loader rejects.
        FileNotFoundError: if the data set, or part of it, is missing (named, with
            where it was looked for).

    Example:

    ```python
    train, val, test = load_standard_split("mini_imagenet", "/data/mini-imagenet")
    tasks = episode_dataset(train, ways=5, shots=1, queries=15, meta_batch_size=4)   # streams from the cache
    ```
    """
    if name not in _LOADERS:
        raise ValueError(f"`name` must be one of {STANDARD_DATASETS}. Received: name={name!r}")
    loader, splits = _LOADERS[name]
    if split is not None and split not in splits:
        raise ValueError(f"{name} has the split(s) {splits}. Received: split={split!r}")
    if image_size is not None:
        options["image_size"] = image_size
    if name == "omniglot":
        options["split"] = split or splits[0]
    return loader(data_dir, cache_dir=cache_dir, **options)


__all__ = [
    "STANDARD_DATASETS",
    "cifar_fs_classes",
    "cub_classes",
    "default_cache_dir",
    "fc100_classes",
    "load_cifar_fs",
    "load_cub",
    "load_fc100",
    "load_mini_imagenet",
    "load_omniglot",
    "load_standard_split",
    "load_tiered_imagenet",
    "mini_imagenet_classes",
    "tiered_imagenet_classes",
]
