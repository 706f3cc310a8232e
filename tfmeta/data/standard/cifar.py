"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018), both from CIFAR-100's python archive.

`data_dir` holds `cifar-100-python.tar.gz` as downloaded, or its extracted folder
`cifar-100-python/` (or the files `train`, `test`, `meta` directly). Both training and
test images of CIFAR-100 are used: 600 per class.

* CIFAR-FS: 64 / 16 / 20 classes (`lists/cifar_fs/`).
* FC100: the classes of 12 / 4 / 4 superclasses, 60 / 20 / 20 classes
  (`lists/fc100/`, TADAM's split by superclass).

Classes are named by CIFAR-100's fine label names and grouped by their superclass
(coarse label name); images stay 32x32 RGB unless another size is asked.
"""

import pathlib
import pickle
import tarfile
from collections.abc import Mapping, Sequence

import numpy as np

from tfmeta.data.splits import ClassSplit
from tfmeta.data.standard import build, cache, lists

IMAGE_SIZE = (32, 32)
_ARCHIVE, _FOLDER = "cifar-100-python.tar.gz", "cifar-100-python"
_FILES = ("train", "test", "meta")


def cifar100_superclasses() -> dict[str, str]:
    """CIFAR-100 fine label name -> its superclass (coarse label name), for the 100 classes."""
    return dict(lists.read_rows("cifar100/superclasses.csv"))


def cifar_fs_classes() -> dict[str, tuple[str, ...]]:
    """CIFAR-FS: `{"train": 64 fine label names, "val": 16, "test": 20}`."""
    return {part: lists.read_names(f"cifar_fs/{part}.txt") for part in build.PARTS}


def fc100_superclasses() -> dict[str, tuple[str, ...]]:
    """FC100's superclasses: `{"train": 12 coarse label names, "val": 4, "test": 4}`."""
    return {part: lists.read_names(f"fc100/{part}.txt") for part in build.PARTS}


def fc100_classes() -> dict[str, tuple[str, ...]]:
    """FC100: `{"train": 60 fine label names, "val": 20, "test": 20}`, by superclass then name."""
    superclass = cifar100_superclasses()
    return {part: tuple(sorted((c for c in superclass if superclass[c] in supers), key=lambda c: (superclass[c], c)))
            for part, supers in fc100_superclasses().items()}


def load_cifar_fs(data_dir, image_size=IMAGE_SIZE, cache_dir=None,
                  classes: Mapping[str, Sequence[str]] | None = None) -> ClassSplit:
    """Reads CIFAR-FS from CIFAR-100's python archive into a cached `ClassSplit`.

    Args:
        data_dir: the folder holding `cifar-100-python.tar.gz` or its extracted files.
        image_size: `(height, width)`; the default keeps CIFAR's 32x32.
        cache_dir: where the images are cached (None: `$TFMETA_CACHE_DIR` or
            `~/.cache/tfmeta`).
        classes: `{"train": names, "val": ..., "test": ...}` to read instead of the
            published split (e.g. a subset); None: `cifar_fs_classes()`.

    Returns:
        A `ClassSplit` of memory-mapped uint8 `ClassDataset`s named by fine label,
        grouped by superclass, with `Preprocessing(image_size, 3, False)`.

    Raises:
        FileNotFoundError: if the archive (or one of its files) is not found, or a
            class of the split is not in it (named).
        ValueError: if the archive's superclass of a class differs from CIFAR-100's.

    Example:

    ```python
    split = load_cifar_fs("/data/cifar100")        # 64 / 16 / 20 classes of 600 32x32 images
    ```
    """
    wanted = cifar_fs_classes() if classes is None else {p: tuple(classes[p]) for p in build.PARTS}
    return _load("CIFAR-FS", "cifar_fs", data_dir, image_size, cache_dir, wanted)


def load_fc100(data_dir, image_size=IMAGE_SIZE, cache_dir=None,
               classes: Mapping[str, Sequence[str]] | None = None) -> ClassSplit:
    """Reads FC100 (CIFAR-100 split by superclass) from CIFAR-100's python archive into a cached `ClassSplit`.

    Args:
        data_dir: the folder holding `cifar-100-python.tar.gz` or its extracted files.
        image_size: `(height, width)`; the default keeps CIFAR's 32x32.
        cache_dir: where the images are cached (None: `$TFMETA_CACHE_DIR` or
            `~/.cache/tfmeta`).
        classes: `{"train": names, "val": ..., "test": ...}` to read instead of the
            published split; None: `fc100_classes()`.

    Returns:
        A `ClassSplit` (60 / 20 / 20 classes of 12 / 4 / 4 superclasses) of
        memory-mapped uint8 `ClassDataset`s, grouped by superclass.

    Raises:
        FileNotFoundError: if the archive (or one of its files) is not found, or a
            class of the split is not in it (named).
        ValueError: if the archive's superclass of a class differs from CIFAR-100's.

    Example:

    ```python
    split = load_fc100("/data/cifar100")
    sorted(set(split.test.groups))    # ['aquatic_mammals', 'insects', 'medium_mammals', 'people']
    ```
    """
    wanted = fc100_classes() if classes is None else {p: tuple(classes[p]) for p in build.PARTS}
    return _load("FC100", "fc100", data_dir, image_size, cache_dir, wanted)


def _load(title: str, name: str, data_dir, image_size, cache_dir, wanted) -> ClassSplit:
    root = build.check_data_dir(title, data_dir)
    size = build.check_image_size(title, image_size)
    source = _find_source(title, root)
    sources = [source] if source.is_file() else [source / f for f in _FILES]
    settings = {"data_dir": str(root.resolve()), "split": name,
                "classes": {part: list(names) for part, names in wanted.items()}}

    def prepare():
        images, fine, coarse, fine_names, coarse_names = _read_cifar100(source)
        superclass = cifar100_superclasses()
        parts = {}
        for part in build.PARTS:
            missing = [c for c in wanted[part] if c not in fine_names or not np.any(fine == fine_names.index(c))]
            if missing:
                raise build.missing_classes(title, part, missing, len(wanted[part]), source, data_dir)
            parts[part] = []
            for class_name in wanted[part]:
                index = np.flatnonzero(fine == fine_names.index(class_name))
                group = coarse_names[int(coarse[index[0]])]
                if class_name in superclass and group != superclass[class_name]:
                    raise ValueError(
                        f"{title}: in {source}, class {class_name} belongs to superclass {group}, not "
                        f"{superclass[class_name]} as in CIFAR-100. Received: data_dir={data_dir}"
                    )
                parts[part].append(build.ClassItems(class_name, group, index))
        return parts, lambda i: images[i]

    return build.build_split(name, prepare, size, cache_dir, cache.fingerprint_files(sources), settings)


def _find_source(title: str, root: pathlib.Path) -> pathlib.Path:
    """The archive, or the folder holding `train`, `test` and `meta`."""
    for candidate in (root / _ARCHIVE, root / _FOLDER, root):
        if candidate.is_file() or (candidate.is_dir() and all((candidate / f).is_file() for f in _FILES)):
            return candidate
    raise FileNotFoundError(
        f"{title}: CIFAR-100's python archive was not found: looked for {root / _ARCHIVE}, and for "
        f"{', '.join(_FILES)} in {root / _FOLDER} and in {root}. Received: data_dir={root}"
    )


def _unpickle(data: bytes) -> dict:
    value = pickle.loads(data, encoding="bytes")
    return {key.decode() if isinstance(key, bytes) else key: item for key, item in value.items()}


def _read_cifar100(source: pathlib.Path):
    """`(images (N, 32, 32, 3) uint8, fine (N,), coarse (N,), fine names, coarse names)`, training then test images."""
    if source.is_file():
        with tarfile.open(source, "r:gz") as archive:
            members = {m.name.rsplit("/", 1)[-1]: m for m in archive.getmembers() if m.isfile()}
            absent = [f for f in _FILES if f not in members]
            if absent:
                raise FileNotFoundError(f"CIFAR-100: {source} holds no {', '.join(absent)}. Received: {source}")
            raw = {f: _unpickle(archive.extractfile(members[f]).read()) for f in _FILES}
    else:
        raw = {f: _unpickle((source / f).read_bytes()) for f in _FILES}
    parts = [raw["train"], raw["test"]]
    images = np.concatenate([np.asarray(p["data"], np.uint8).reshape(-1, 3, 32, 32) for p in parts])
    fine = np.concatenate([np.asarray(p["fine_labels"], np.int64) for p in parts])
    coarse = np.concatenate([np.asarray(p["coarse_labels"], np.int64) for p in parts])
    names = [[n.decode() if isinstance(n, bytes) else n for n in raw["meta"][key]]
             for key in ("fine_label_names", "coarse_label_names")]
    return images.transpose(0, 2, 3, 1), fine, coarse, names[0], names[1]  # (N, 32, 32, 3) HWC
