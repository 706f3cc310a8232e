"""Omniglot (Lake et al. 2015) with a published split, decoded once and cached on disk.

`data_dir` is what `ClassDataset.from_omniglot` reads: a folder holding the published
zips (`images_background.zip`, `images_evaluation.zip`) and/or an unpacked
`<alphabet>/<character>/*.png` tree, or one zip. The decoded characters (28x28,
inverted, float32 exactly as `from_omniglot` returns them) are cached, so later runs
skip decoding 32,460 PNGs; the split is `tfmeta.data.splits.omniglot_split`.
"""

import pathlib

import numpy as np

from tfmeta.data.sources import ClassDataset, Preprocessing, _check_image_size
from tfmeta.data.splits import ROTATIONS, ClassSplit, check_omniglot_characters, omniglot_split
from tfmeta.data.standard import cache

IMAGE_SIZE = (28, 28)


def load_omniglot(data_dir, split: str = "vinyals", image_size=IMAGE_SIZE, cache_dir=None,
                  rotations=ROTATIONS) -> ClassSplit:
    """Reads Omniglot (cached after the first call) and splits it.

    Args:
        data_dir: the folder holding the zips and/or the unpacked tree, or one zip.
        split: `"vinyals"`, `"lake"` or `"sample"` (see `omniglot_split`).
        image_size: `(height, width)` of the stored characters.
        cache_dir: where the decoded characters are cached (None: `$TFMETA_CACHE_DIR`
            or `~/.cache/tfmeta`).
        rotations: angles added as new classes (see `omniglot_split`).

    Returns:
        A `ClassSplit` of float32 `ClassDataset`s (in memory) grouped by alphabet,
        with `Preprocessing(image_size, 1, True)`.

    Raises:
        FileNotFoundError: if `data_dir` does not exist.
        ValueError: if no Omniglot image is found, an image cannot be decoded, or
            characters of the split are missing (counted and named).

    Example:

    ```python
    train, val, test = load_omniglot("/data/omniglot", split="vinyals")
    ```
    """
    _check_image_size(image_size)
    size = tuple(int(d) for d in image_size)
    root = pathlib.Path(data_dir)
    if not root.exists():
        raise FileNotFoundError(f"Omniglot data not found. Received: data_dir={data_dir}")
    sources = [root] if root.is_file() else [*root.glob("*.zip"), *root.rglob("*.png")]
    preprocessing = Preprocessing(size, 1, True)

    def prepare():
        omniglot = ClassDataset.from_omniglot(root, image_size=size)  # (N, H, W, 1) float32, decoded once
        layout = {"all": [cache.CachedClass(name, group, omniglot.num_images(c))
                          for c, (name, group) in enumerate(zip(omniglot.class_names, omniglot.groups))]}
        return layout, lambda out: np.copyto(out, omniglot.images)

    # One cache of every character serves every split.
    settings = {"dataset": "omniglot", "data_dir": str(root.resolve()), "image_size": list(size)}
    everything = cache.load_or_build(cache_dir, "omniglot", settings, cache.fingerprint_files(sources), (*size, 1),
                                     np.float32, preprocessing, prepare)["all"]
    if split != "sample":  # (the sample split names its missing alphabets itself)
        check_omniglot_characters(everything, split, str(root), f"data_dir={data_dir}")
    return omniglot_split(everything, split, rotations)
