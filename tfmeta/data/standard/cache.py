"""On-disk cache of a data set's decoded images, memory-mapped on later runs.

A data set is decoded and resized once into one `.npy` array, its classes sorted by
part (`train`, `val`, `test`) and each part contiguous, so every part is a slice of
the same memory-mapped file: nothing is read until an episode gathers it.

Layout: `<cache_dir>/<name>-<settings digest>-<source digest>/` holding `pixels.npy`
(`(num_images, H, W, C)`, uint8 or float32) and `index.json` (classes, groups and
image counts of each part, the preprocessing and the full key). The settings digest
covers what the loader was asked (data set, data folder, split, image size, channels,
class lists, the cache format version); the source digest covers the source files
(names, sizes, modification times). A change of either gives a new folder; after a
successful build, the folders of the same settings with another source digest are
removed. A cache is written into a temporary folder beside it and renamed into place
when complete, so a failed or interrupted build leaves nothing that could be read.
"""

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from tfmeta.data.sources import ClassDataset, Preprocessing

CACHE_VERSION = 1
_PIXELS, _INDEX = "pixels.npy", "index.json"
_log = logging.getLogger(__name__)


def default_cache_dir() -> pathlib.Path:
    """`$TFMETA_CACHE_DIR`, or `~/.cache/tfmeta`."""
    return pathlib.Path(os.environ.get("TFMETA_CACHE_DIR") or pathlib.Path.home() / ".cache" / "tfmeta")


def fingerprint_files(paths: Iterable) -> str:
    """sha256 of each file's absolute path, size and modification time (ns), in sorted order.

    Raises:
        FileNotFoundError: if a file does not exist.
    """
    hasher = hashlib.sha256()
    for path in sorted(str(pathlib.Path(p).absolute()) for p in paths):
        stat = os.stat(path)
        hasher.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return hasher.hexdigest()


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class CachedClass:
    """One class of a cached part: its name, group and number of images."""

    name: str
    group: str
    count: int


def load_or_build(
    cache_dir,
    name: str,
    settings: Mapping,
    source_fingerprint: str,
    image_shape: tuple[int, int, int],
    dtype,
    preprocessing: Preprocessing,
    prepare: Callable[[], tuple[Mapping[str, Sequence[CachedClass]], Callable[[np.ndarray], None]]],
) -> dict[str, ClassDataset]:
    """The parts of a data set as memory-mapped `ClassDataset`s, built into the cache first if needed.

    Args:
        cache_dir: folder holding the caches (created if missing); None:
            `default_cache_dir()`.
        name: the data set's name, the start of its cache folder's name.
        settings: JSON-serialisable description of what is loaded (split, image
            size, class lists, data folder...): one cache per distinct settings.
        source_fingerprint: digest of the source files (`fingerprint_files`).
        image_shape: `(H, W, C)` of the stored images.
        dtype: `np.uint8` (pixels) or `np.float32` (values in [0, 1]).
        preprocessing: what the images went through, kept by the datasets.
        prepare: called only to build (the source is not read otherwise); returns
            `(parts, fill)`: `parts` maps each part (e.g. `train`, `val`, `test`),
            in order, to its classes in order, each part with at least one class;
            `fill(array)` writes all images, part after part and class after class,
            into the `(num_images, H, W, C)` array it is given.

    Returns:
        `{part: ClassDataset}`, each backed by a read-only memory map of the cache.

    Raises:
        ValueError: if a part has no class.
        Whatever `prepare` or `fill` raises (the partial cache is removed first).
    """
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    settings = {"version": CACHE_VERSION, "settings": dict(settings), "shape": list(image_shape),
                "dtype": np.dtype(dtype).name, "preprocessing": preprocessing.to_dict()}
    settings_digest = _digest(settings)
    key = _digest({"settings": settings_digest, "source": source_fingerprint})
    folder = root / f"{name}-{settings_digest[:12]}-{key[:12]}"
    index = _read_index(folder, key)
    if index is None:
        parts, fill = prepare()
        empty = [part for part, classes in parts.items() if not classes]
        if not parts or empty:
            raise ValueError(f"Every part needs at least one class. Received: parts={list(parts)}, empty={empty}")
        layout = {part: [[c.name, c.group, int(c.count)] for c in classes] for part, classes in parts.items()}
        index = _build(root, folder, key, settings, layout, image_shape, dtype, fill)
        _remove_stale(root, f"{name}-{settings_digest[:12]}-", keep=folder)
    else:
        _log.info("Reading %s from its cache %s", name, folder)
    pixels = np.load(folder / _PIXELS, mmap_mode="r")  # (num_images, H, W, C), read on demand
    datasets, start = {}, 0
    for part, classes in index["layout"].items():
        counts = [count for _, _, count in classes]
        stop = start + sum(counts)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        datasets[part] = ClassDataset(pixels[start:stop], offsets, [c[0] for c in classes], [c[1] for c in classes],
                                      preprocessing)
        start = stop
    return datasets


def _read_index(folder: pathlib.Path, key: str) -> dict | None:
    """The cache's index if `folder` holds a complete cache of `key`, else None (a damaged one is removed)."""
    if not folder.is_dir():
        return None
    try:
        index = json.loads((folder / _INDEX).read_text())
        header = np.load(folder / _PIXELS, mmap_mode="r")
        total = sum(count for classes in index["layout"].values() for _, _, count in classes)
        if index["key"] == key and header.shape[0] == total:
            return index
    except (OSError, ValueError, KeyError, TypeError):
        pass
    _log.warning("Removing the damaged cache %s", folder)
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _build(root, folder, key, settings, layout, image_shape, dtype, fill) -> dict:
    """Writes the cache into a temporary folder, renames it to `folder` when complete; returns its index."""
    total = sum(count for classes in layout.values() for _, _, count in classes)
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        _log.info("Building the cache %s (%d images); later runs read it in place", folder, total)
        pixels = np.lib.format.open_memmap(temporary / _PIXELS, mode="w+", dtype=dtype, shape=(total, *image_shape))
        fill(pixels)
        pixels.flush()
        del pixels
        index = {"key": key, **settings, "layout": layout}
        (temporary / _INDEX).write_text(json.dumps(index, indent=1))
        try:
            os.rename(temporary, folder)
        except OSError:  # another process finished the same cache first: keep theirs
            index = _read_index(folder, key)
            if index is None:
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return index


def _remove_stale(root: pathlib.Path, prefix: str, keep: pathlib.Path) -> None:
    """Removes the caches of the same settings built from an older version of the source."""
    for folder in root.glob(prefix + "*"):
        if folder != keep and folder.is_dir():
            _log.info("Removing the outdated cache %s", folder)
            shutil.rmtree(folder, ignore_errors=True)
