"""What the standard loaders share: classes as lists of items, decoding, resizing, caching, errors.

A loader fingerprints its source files and, only when the cache must be built, finds
for each part of the published split its classes and each class's *items* (image
files, encoded bytes or decoded arrays) with a `read` function that turns one item
into a uint8 `(h, w, 3)` array. `build_split` then resizes every image once, caches the
result on disk (`cache.py`) and returns the memory-mapped parts.
"""

import dataclasses
import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfmeta.data.sources import IMAGE_EXTENSIONS, Preprocessing, _decode
from tfmeta.data.splits import ClassSplit
from tfmeta.data.standard import cache

PARTS = ("train", "val", "test")
_CHUNK = 256  # images decoded and resized at a time: bounded memory


@dataclasses.dataclass(frozen=True)
class ClassItems:
    """One class to load: its name, group and items (whatever the loader's `read` decodes)."""

    name: str
    group: str
    items: Sequence


def read_image_file(path) -> np.ndarray:
    """An image file as uint8 RGB `(h, w, 3)`; names the file if it cannot be decoded."""
    path = pathlib.Path(path)
    return _decode(path.read_bytes(), str(path), 3)


def image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The image files directly in `folder`, sorted by name (hidden files ignored)."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def resize_to_uint8(images: Sequence[np.ndarray], image_size: tuple[int, int]) -> np.ndarray:
    """uint8 `(h, w, C)` images of any sizes -> one uint8 `(n, H, W, C)` array.

    Images already `image_size` are copied exactly; others are resized as
    `tfmeta.data.read_image_files` does (bilinear with antialiasing) and rounded.
    """
    out = np.empty((len(images), *image_size, images[0].shape[-1]), np.uint8)
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for shape, where in by_shape.items():
        batch = np.stack([images[i] for i in where])  # (n, h, w, C) uint8
        if tuple(shape[:2]) != tuple(image_size):
            resized = tf.image.resize(batch.astype(np.float32), image_size, method="bilinear", antialias=True)
            batch = np.clip(np.rint(resized.numpy()), 0, 255).astype(np.uint8)
        out[where] = batch
    return out


def build_split(
    dataset: str,
    prepare: Callable[[], tuple[Mapping[str, Sequence[ClassItems]], Callable[[object], np.ndarray]]],
    image_size: tuple[int, int],
    cache_dir,
    source_fingerprint: str,
    settings: Mapping,
) -> ClassSplit:
    """The memory-mapped `ClassSplit` of a data set, decoded, resized and cached on the first call.

    Args:
        dataset: the data set's name (cache folder, messages).
        prepare: called only when the cache must be built: returns `(parts, read)`,
            `parts` the classes of `train`, `val` and `test` in order, `read` an item
            -> uint8 RGB `(h, w, 3)`.
        image_size: `(height, width)` of the stored images.
        cache_dir: where caches live (None: `cache.default_cache_dir()`).
        source_fingerprint: digest of the source files; a change rebuilds the cache.
        settings: what else makes this cache distinct (split name, class lists...).

    Returns:
        A `ClassSplit` of uint8, memory-mapped `ClassDataset`s with
        `Preprocessing(image_size, 3, False)`.
    """
    image_size = tuple(int(d) for d in image_size)

    def prepare_cache():
        parts, read = prepare()
        items = [item for part in PARTS for spec in parts[part] for item in spec.items]

        def fill(out: np.ndarray) -> None:  # out: (num_images, H, W, 3) uint8
            for start in range(0, len(items), _CHUNK):
                chunk = items[start : start + _CHUNK]
                out[start : start + len(chunk)] = resize_to_uint8([read(item) for item in chunk], image_size)

        layout = {part: [cache.CachedClass(c.name, c.group, len(c.items)) for c in parts[part]] for part in PARTS}
        return layout, fill

    datasets = cache.load_or_build(
        cache_dir, dataset, {"dataset": dataset, "image_size": list(image_size), **settings}, source_fingerprint,
        (*image_size, 3), np.uint8, Preprocessing(image_size, 3, False), prepare_cache,
    )
    return ClassSplit(datasets["train"], datasets["val"], datasets["test"])


def check_image_size(dataset: str, image_size) -> tuple[int, int]:
    """`image_size` as `(height, width)` of positive ints.

    Raises:
        ValueError: otherwise.
    """
    try:
        size = tuple(int(d) for d in image_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{dataset}: `image_size` must be (height, width). Received: image_size={image_size!r}")
    return size


def listing(names: Sequence[str], limit: int = 5) -> str:
    """`a, b, c` or, past `limit` names, `a, b, c, d, e and 7 more`."""
    names = [str(name) for name in names]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def missing_classes(dataset: str, part: str, missing: Sequence[str], total: int, where, data_dir) -> FileNotFoundError:
    """The error for classes of the published split that were not found."""
    part_name = {"train": "training", "val": "validation", "test": "test"}.get(part, part)
    return FileNotFoundError(
        f"{dataset}: {len(missing)} of the {total} {part_name} classes are missing in {where}: {listing(missing)}. "
        f"Received: data_dir={data_dir}"
    )


def find_folders(names: Sequence[str], roots: Sequence[pathlib.Path]) -> dict[str, pathlib.Path]:
    """For each name, the first `root/name` that is a folder (names found in no root are left out)."""
    found = {}
    for name in names:
        for root in roots:
            if (root / name).is_dir():
                found[name] = root / name
                break
    return found


def class_folder_files(dataset: str, root: pathlib.Path, wanted) -> dict[str, list[pathlib.Path]]:
    """The class-folder layout (`<root>/<part>/<class>/` or `<root>/<class>/`): each wanted class's image files.

    Args:
        dataset: the data set's name (for messages).
        root: the data folder.
        wanted: `{part: class names}`.

    Raises:
        FileNotFoundError: if a class folder is missing or holds no image (named).
    """
    files = {}
    for part in PARTS:
        roots = [root / part, root]
        folders = find_folders(wanted[part], roots)
        missing = [name for name in wanted[part] if name not in folders]
        if missing:
            raise missing_classes(dataset, part, missing, len(wanted[part]), " and ".join(map(str, roots)), root)
        for name, folder in folders.items():
            files[name] = image_files(folder)
            if not files[name]:
                raise FileNotFoundError(f"{dataset}: the class folder {folder} holds no image. Received: data_dir={root}")
    return files


def check_data_dir(dataset: str, data_dir) -> pathlib.Path:
    """`data_dir` as a path to an existing folder.

    Raises:
        FileNotFoundError: if it is not a folder.
    """
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset}: the data folder does not exist. Received: data_dir={data_dir}")
    return root
