"""miniImageNet (Vinyals et al. 2016) with Ravi & Larochelle's split: 64 / 16 / 20 classes of 600 images.

Two on-disk layouts are read (`data_dir` is the folder holding them):

* Ravi & Larochelle's: `images/` holding every image (`<wnid><8 digits>.jpg`) beside
  `train.csv`, `val.csv`, `test.csv` (rows `filename,label`). A class missing from
  the CSVs is taken from the `images/` files whose names start with its wnid.
* Class folders: `train/<wnid>/*.jpg`, `val/<wnid>/...`, `test/<wnid>/...`, or all
  class folders directly in `data_dir` (`<wnid>/*.jpg`).

Classes are the wnids of the published lists (`lists/mini_imagenet/`); images are
resized once to 84x84 RGB and cached (see `cache.py`).
"""

import csv
import os
import pathlib
from collections.abc import Mapping, Sequence

from tfmeta.data.sources import IMAGE_EXTENSIONS
from tfmeta.data.splits import ClassSplit
from tfmeta.data.standard import build, cache, lists

NAME = "miniImageNet"
IMAGE_SIZE = (84, 84)
IMAGES_PER_CLASS = 600  # in every class of the published data set
_LISTS = tuple(f"mini_imagenet/{part}.txt" for part in build.PARTS)


def mini_imagenet_classes() -> dict[str, tuple[str, ...]]:
    """Ravi & Larochelle's split: `{"train": 64 wnids, "val": 16, "test": 20}`."""
    return {part: lists.read_names(path) for part, path in zip(build.PARTS, _LISTS)}


def load_mini_imagenet(
    data_dir,
    image_size=IMAGE_SIZE,
    cache_dir=None,
    classes: Mapping[str, Sequence[str]] | None = None,
    images_per_class: int | None = IMAGES_PER_CLASS,
) -> ClassSplit:
    """Reads miniImageNet in either published layout (see the module docstring) into a cached `ClassSplit`.

    Args:
        data_dir: the folder holding `images/` and the CSVs, or the class folders.
        image_size: `(height, width)` the images are resized to.
        cache_dir: where the decoded images are cached (None: `$TFMETA_CACHE_DIR`
            or `~/.cache/tfmeta`).
        classes: `{"train": wnids, "val": ..., "test": ...}` to read instead of the
            published split (e.g. a subset); None: `mini_imagenet_classes()`.
        images_per_class: how many images each class must have (600 in the
            published data set); None accepts any number.

    Returns:
        A `ClassSplit` of memory-mapped uint8 `ClassDataset`s named by wnid, with
        `Preprocessing(image_size, 3, False)`.

    Raises:
        FileNotFoundError: if `data_dir` is missing, or classes or image files of
            the split are missing (named, with where they were looked for).
        ValueError: if a class has the wrong number of images or an image cannot be
            decoded (named).

    Example:

    ```python
    split = load_mini_imagenet("/data/mini-imagenet")
    split.train.num_classes, split.val.num_classes, split.test.num_classes   # (64, 16, 20)
    ```
    """
    root = build.check_data_dir(NAME, data_dir)
    size = build.check_image_size(NAME, image_size)
    wanted = mini_imagenet_classes() if classes is None else {part: tuple(classes[part]) for part in build.PARTS}
    if (root / "images").is_dir():
        files, listed_in = _images_folder(root, wanted)
    else:
        files, listed_in = build.class_folder_files(NAME, root, wanted), []
    for part in build.PARTS:
        for wnid in wanted[part]:
            if images_per_class is not None and len(files[wnid]) != images_per_class:
                raise ValueError(
                    f"{NAME}: class {wnid} has {len(files[wnid])} images, not {images_per_class} as in the published "
                    f"data set (a partial copy?), in {files[wnid][0].parent}. Received: data_dir={data_dir}"
                )
    parts = {part: [build.ClassItems(wnid, "", files[wnid]) for wnid in wanted[part]] for part in build.PARTS}
    fingerprint = cache.fingerprint_files([f for part in parts.values() for c in part for f in c.items] + listed_in)
    settings = {"data_dir": str(root.resolve()), "split": "ravi",
                "classes": {part: list(names) for part, names in wanted.items()}}
    return build.build_split("mini_imagenet", lambda: (parts, build.read_image_file), size, cache_dir, fingerprint,
                             settings)


def _images_folder(root: pathlib.Path, wanted) -> tuple[dict[str, list[pathlib.Path]], list[pathlib.Path]]:
    """Ravi & Larochelle's layout: each wanted class's files, and the CSVs read."""
    images = root / "images"
    present = {entry.name for entry in os.scandir(images) if entry.is_file()}
    by_csv: dict[str, list[str]] = {}
    csvs = [root / f"{part}.csv" for part in build.PARTS if (root / f"{part}.csv").is_file()]
    for path in csvs:
        with open(path, newline="") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[0] != "filename":
                    by_csv.setdefault(row[1].strip(), []).append(row[0].strip())
    by_prefix: dict[str, list[str]] = {}
    for name in present:
        if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            by_prefix.setdefault(name[:9], []).append(name)
    files = {}
    for part in build.PARTS:
        missing = [wnid for wnid in wanted[part] if not (by_csv.get(wnid) or by_prefix.get(wnid))]
        if missing:
            where = f"{images}" + (f" and in {', '.join(map(str, csvs))}" if csvs else "")
            raise build.missing_classes(NAME, part, missing, len(wanted[part]), where, root)
        for wnid in wanted[part]:
            names = sorted(by_csv.get(wnid) or by_prefix[wnid])
            absent = [name for name in names if name not in present]
            if absent:
                raise FileNotFoundError(
                    f"{NAME}: {len(absent)} of the {len(names)} images of class {wnid} listed in the CSVs are missing "
                    f"in {images}: {build.listing(absent)}. Received: data_dir={root}"
                )
            files[wnid] = [images / name for name in names]
    return files, csvs
