"""CUB-200-2011 (Wah et al. 2011) with Chen et al.'s (2019) split: 100 / 50 / 50 bird species.

`data_dir` holds `CUB_200_2011/images/<class folder>/*.jpg` as extracted from
`CUB_200_2011.tgz` (or is `CUB_200_2011/`, or its `images/` folder). Where the
release's `images.txt` (every image, `<id> <class folder>/<file>`) sits beside
`images/`, every image it lists for the split's classes must be present.

Classes are the class folders (`001.Black_footed_Albatross`, ...) of the published
split (`lists/cub/`); images are resized once to 84x84 RGB (configurable) and cached.
"""

import pathlib
from collections.abc import Mapping, Sequence

from tfmeta.data.splits import ClassSplit
from tfmeta.data.standard import build, cache, lists

NAME = "CUB-200-2011"
IMAGE_SIZE = (84, 84)


def cub_classes() -> dict[str, tuple[str, ...]]:
    """Chen et al.'s split: `{"train": 100 class folders, "val": 50, "test": 50}`."""
    return {part: lists.read_names(f"cub/{part}.txt") for part in build.PARTS}


def load_cub(data_dir, image_size=IMAGE_SIZE, cache_dir=None,
             classes: Mapping[str, Sequence[str]] | None = None) -> ClassSplit:
    """Reads CUB-200-2011's images into a cached `ClassSplit`.

    Args:
        data_dir: the folder holding `CUB_200_2011/` (or that folder, or its `images/`).
        image_size: `(height, width)` the images are resized to (84x84 by default).
        cache_dir: where the decoded images are cached (None: `$TFMETA_CACHE_DIR`
            or `~/.cache/tfmeta`).
        classes: `{"train": class folders, "val": ..., "test": ...}` to read instead
            of the published split; None: `cub_classes()`.

    Returns:
        A `ClassSplit` of memory-mapped uint8 `ClassDataset`s named by class folder,
        with `Preprocessing(image_size, 3, False)`.

    Raises:
        FileNotFoundError: if `data_dir` holds no `images/` folder, or classes or
            images (listed in `images.txt`) of the split are missing (named).
        ValueError: if an image cannot be decoded (named).

    Example:

    ```python
    split = load_cub("/data/cub", image_size=(84, 84))
    split.train.class_names[:2]    # ['001.Black_footed_Albatross', '003.Sooty_Albatross']
    ```
    """
    root = build.check_data_dir(NAME, data_dir)
    size = build.check_image_size(NAME, image_size)
    wanted = cub_classes() if classes is None else {part: tuple(classes[part]) for part in build.PARTS}
    images = _images_folder(root)
    listed = _listed_images(images.parent / "images.txt")
    files = {}
    for part in build.PARTS:
        folders = build.find_folders(wanted[part], [images])
        missing = [name for name in wanted[part] if name not in folders]
        if missing:
            raise build.missing_classes(NAME, part, missing, len(wanted[part]), images, data_dir)
        for name, folder in folders.items():
            files[name] = build.image_files(folder)
            if not files[name]:
                raise FileNotFoundError(
                    f"{NAME}: the class folder {folder} holds no image. Received: data_dir={data_dir}"
                )
            present = {f.name for f in files[name]}
            absent = [f for f in listed.get(name, []) if f not in present]
            if absent:
                raise FileNotFoundError(
                    f"{NAME}: {len(absent)} of the {len(listed[name])} images of class {name} listed in "
                    f"{images.parent / 'images.txt'} are missing in {folder}: {build.listing(absent)}. "
                    f"Received: data_dir={data_dir}"
                )
    parts = {part: [build.ClassItems(name, "", files[name]) for name in wanted[part]] for part in build.PARTS}
    fingerprint = cache.fingerprint_files([f for fs in files.values() for f in fs])
    settings = {"data_dir": str(root.resolve()), "split": "chen",
                "classes": {part: list(names) for part, names in wanted.items()}}
    return build.build_split("cub", lambda: (parts, build.read_image_file), size, cache_dir, fingerprint, settings)


def _images_folder(root: pathlib.Path) -> pathlib.Path:
    for candidate in (root / "CUB_200_2011" / "images", root / "images", root):
        if candidate.is_dir() and any(p.is_dir() and p.name[:3].isdigit() for p in candidate.iterdir()):
            return candidate
    raise FileNotFoundError(
        f"{NAME}: no class folders found in {root / 'CUB_200_2011' / 'images'}, {root / 'images'} or {root}. "
        f"Received: data_dir={root}"
    )


def _listed_images(path: pathlib.Path) -> dict[str, list[str]]:
    """`images.txt` as class folder -> file names ({} if there is none)."""
    listed: dict[str, list[str]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and "/" in parts[1]:
                folder, _, name = parts[1].partition("/")
                listed.setdefault(folder, []).append(name)
    return listed
