"""tieredImageNet (Ren et al. 2018): 351 / 97 / 160 ImageNet classes in 20 / 6 / 8 categories.

Two on-disk layouts are read (`data_dir` is the folder holding them):

* The published pickles: `<part>_images_png.pkl` (one PNG-encoded 84x84 image per
  entry) and `<part>_labels.pkl` (`label_specific`, one class index per image, and
  `label_specific_str`, the class names) for `part` in train, val, test. Class
  names are mapped to wnids with `synsets.txt` and `class_names.txt` (one line each
  per ImageNet class) when `data_dir` holds them, else with the WordNet words of
  the shipped list (`lists/tiered_imagenet/words.tsv`). Building the cache unpickles
  one part's image file at a time (the training part is several GB); later runs
  only read the cache. Pickles run code when loaded: read only files you trust.
* Class folders (e.g. made from ImageNet with `yaoyao-liu/tiered-imagenet-tools`, or
  ImageNet's own `train/`): `train/<wnid>/*`, `val/<wnid>/*`, `test/<wnid>/*`, or all
  class folders directly in `data_dir`.

Classes are the wnids of the published split (`lists/tiered_imagenet/`); each class's
group is its category's wnid. Images are resized once to 84x84 RGB and cached.
"""

import pathlib
import pickle
from collections.abc import Mapping, Sequence

import numpy as np

from tfmeta.data.sources import _decode
from tfmeta.data.splits import ClassSplit
from tfmeta.data.standard import build, cache, lists

NAME = "tieredImageNet"
IMAGE_SIZE = (84, 84)
_LISTS = tuple(f"tiered_imagenet/{part}.csv" for part in build.PARTS)


def tiered_imagenet_classes() -> dict[str, tuple[tuple[str, str], ...]]:
    """The published split: `{"train": ((wnid, category wnid), ...) x 351, "val": x 97, "test": x 160}`."""
    return {part: tuple((wnid, category) for wnid, category in lists.read_rows(path))
            for part, path in zip(build.PARTS, _LISTS)}


def tiered_imagenet_words() -> dict[str, str]:
    """WordNet words of the 608 classes and 34 categories, by wnid (e.g. `"n01440764": "tench, Tinca tinca"`)."""
    return lists.read_tsv("tiered_imagenet/words.tsv")


def load_tiered_imagenet(
    data_dir, image_size=IMAGE_SIZE, cache_dir=None, classes: Mapping[str, Sequence[str]] | None = None
) -> ClassSplit:
    """Reads tieredImageNet in either layout (see the module docstring) into a cached `ClassSplit`.

    Args:
        data_dir: the folder holding the pickles or the class folders.
        image_size: `(height, width)` the images are resized to.
        cache_dir: where the decoded images are cached (None: `$TFMETA_CACHE_DIR`
            or `~/.cache/tfmeta`).
        classes: `{"train": wnids, "val": ..., "test": ...}` to read instead of the
            published split (e.g. a subset; each wnid must be one of the 608
            published classes); None: the published split.

    Returns:
        A `ClassSplit` of memory-mapped uint8 `ClassDataset`s named by wnid, grouped
        by category wnid, with `Preprocessing(image_size, 3, False)`.

    Raises:
        FileNotFoundError: if `data_dir` is missing, or classes of the split are
            missing (named, with where they were looked for).
        ValueError: on an unknown wnid in `classes`, class names in the pickles
            that cannot be mapped to wnids, or an image that cannot be decoded.

    Example:

    ```python
    split = load_tiered_imagenet("/data/tiered-imagenet")
    len(set(split.train.groups)), len(set(split.val.groups)), len(set(split.test.groups))   # (20, 6, 8)
    ```
    """
    root = build.check_data_dir(NAME, data_dir)
    size = build.check_image_size(NAME, image_size)
    category = {wnid: cat for rows in tiered_imagenet_classes().values() for wnid, cat in rows}
    if classes is None:
        wanted = {part: tuple(wnid for wnid, _ in rows) for part, rows in tiered_imagenet_classes().items()}
    else:
        wanted = {part: tuple(classes[part]) for part in build.PARTS}
        unknown = sorted({w for names in wanted.values() for w in names} - set(category))
        if unknown:
            raise ValueError(f"{NAME}: unknown class wnids (not among the 608 published): {build.listing(unknown)}. "
                             f"Received: classes={dict(wanted)}")
    settings = {"data_dir": str(root.resolve()), "split": "ren",
                "classes": {part: list(names) for part, names in wanted.items()}}
    if (root / "train_images_png.pkl").is_file():
        pickles = [root / f"{part}_{kind}.pkl" for part in build.PARTS for kind in ("images_png", "labels")]
        absent = [str(p) for p in pickles if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"{NAME}: {build.listing(absent)} missing. Received: data_dir={data_dir}")
        names_files = [root / "synsets.txt", root / "class_names.txt"]
        used = pickles + [p for p in names_files if all(q.is_file() for q in names_files)]

        def prepare():
            return _pickle_parts(root, wanted, category), _PickleReader()

        return build.build_split("tiered_imagenet", prepare, size, cache_dir, cache.fingerprint_files(used), settings)
    files = build.class_folder_files(NAME, root, wanted)
    parts = {part: [build.ClassItems(w, category[w], files[w]) for w in wanted[part]] for part in build.PARTS}
    fingerprint = cache.fingerprint_files([f for fs in files.values() for f in fs])
    return build.build_split("tiered_imagenet", lambda: (parts, build.read_image_file), size, cache_dir, fingerprint,
                             settings)


def _load_pickle(path: pathlib.Path):
    """Unpickles a file written by Python 2 or 3 (numpy arrays inside need `latin1`)."""
    with open(path, "rb") as handle:
        value = pickle.load(handle, encoding="latin1")
    if isinstance(value, dict):
        value = {key.decode() if isinstance(key, bytes) else key: item for key, item in value.items()}
    return value


def _name_to_wnid(root: pathlib.Path) -> dict[str, str]:
    """Class name -> wnid: from `synsets.txt` + `class_names.txt` in `root`, else the shipped words."""
    synsets, names = root / "synsets.txt", root / "class_names.txt"
    if synsets.is_file() and names.is_file():
        pairs = zip(names.read_text().splitlines(), synsets.read_text().splitlines())
        return {name.strip(): wnid.strip() for name, wnid in pairs}
    return {words: wnid for wnid, words in tiered_imagenet_words().items()}


def _pickle_parts(root: pathlib.Path, wanted, category) -> dict[str, list[build.ClassItems]]:
    """Each part's classes from `<part>_labels.pkl`, items `(images pickle, index)`."""
    to_wnid = _name_to_wnid(root)
    parts = {}
    for part in build.PARTS:
        labels_path = root / f"{part}_labels.pkl"
        labels = _load_pickle(labels_path)
        if not isinstance(labels, dict) or not {"label_specific", "label_specific_str"} <= set(labels):
            keys = sorted(labels) if isinstance(labels, dict) else type(labels).__name__
            raise ValueError(f"{NAME}: {labels_path} lacks `label_specific`/`label_specific_str`. Received: {keys}")
        names = [str(name).strip() for name in labels["label_specific_str"]]
        unmapped = [name for name in names if name not in to_wnid]
        if unmapped:
            raise ValueError(
                f"{NAME}: {len(unmapped)} class names in {labels_path} have no wnid in synsets.txt/class_names.txt "
                f"or the shipped words: {build.listing(unmapped)}. Received: data_dir={root}"
            )
        label_of = {to_wnid[name]: label for label, name in enumerate(names)}
        missing = [wnid for wnid in wanted[part] if wnid not in label_of]
        if missing:
            raise build.missing_classes(NAME, part, missing, len(wanted[part]), labels_path, root)
        specific = np.asarray(labels["label_specific"])
        images_path = root / f"{part}_images_png.pkl"
        parts[part] = []
        for wnid in wanted[part]:
            index = np.flatnonzero(specific == label_of[wnid])
            if not len(index):
                raise build.missing_classes(NAME, part, [wnid], len(wanted[part]), images_path, root)
            parts[part].append(build.ClassItems(wnid, category[wnid], [(images_path, int(i)) for i in index]))
    return parts


class _PickleReader:
    """`(images pickle, index)` -> uint8 RGB image; keeps one unpickled file at a time."""

    def __init__(self):
        self._path, self._images = None, None

    def __call__(self, item) -> np.ndarray:
        path, index = item
        if path != self._path:
            self._images = None  # free the previous part first
            self._images, self._path = _load_pickle(path), path
        encoded = self._images[index]  # a uint8 array of PNG bytes (cv2.imencode) or bytes
        data = encoded if isinstance(encoded, bytes) else np.asarray(encoded, np.uint8).tobytes()
        return _decode(data, f"{path}[{index}]", 3)
