"""`ClassDataset`: labelled images indexed by class, decoded once and kept in memory.

All constructors end in the same place: one contiguous array of images,
`(num_images, H, W, C)`, sorted by class, plus the offset of each class's first image.
The array holds float32 values in `[0, 1]` (every `from_*` constructor here), or uint8
pixels (1 byte a pixel, for large sources such as the standard benchmarks in
`tfmeta.data.standard`) that `gather` scales to float32 `pixel / 255`. It may be a
read-only `np.memmap` of an on-disk cache: then only the images an episode gathers
are read. Episode samplers pick indices into that array (see `sampling.py`); the
tf.data pipeline gathers them (see `pipeline.py`). Each class also carries a *group*
(for Omniglot, its alphabet) so that splits never let a character cross, and may carry
*class metadata*: a float32 row of `M` numbers describing it (for Omniglot, the one-hot
of its alphabet), which `episode_dataset(..., metadata=True)` hands to the learners
that condition on it. Every transform keeps each class's row.

Sources:
- `from_omniglot`: the published Omniglot zips read in place (no extraction), and/or an
  unpacked `<alphabet>/<character>/*.png` tree; de-duplicated by `alphabet/character`.
- `from_folder`: any folder of class subfolders. A *class* is every folder that
  directly holds image files; its name is its path relative to the root, joined with
  "/" (flat: `root/<class>/*.png` -> `"<class>"`; nested: `root/<a>/<b>/*.png` ->
  `"<a>/<b>"`, group `"<a>"`). Images directly in the root are ignored; a leaf folder
  holding no image is an error. An optional `metadata.json` in the root gives each
  class's metadata: `{"<class name>": [float, ...], ...}`, every class listed, all
  lists of one length.
- `from_tfds`: any TensorFlow Datasets image classification dataset.
- `from_arrays`: images and integer labels already in memory.
"""

import dataclasses
import io
import json
import pathlib
import zipfile
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# The file of a `from_folder` root that holds the classes' metadata (optional).
FOLDER_METADATA_FILE = "metadata.json"
_PIL_MODES = {1: "L", 3: "RGB"}


def _resize_and_scale(images: list[np.ndarray], image_size, invert: bool, channels: int | None, names) -> np.ndarray:
    """uint8 `(H, W, C)` images -> one float32 `(N, H', W', C')` array in [0, 1].

    Images are resized in batches of equal original shape (bilinear with antialiasing,
    i.e. area-like when shrinking) and inverted (`1 - x`) if asked.
    """
    if channels is not None:
        images = [_convert_channels(image, channels) for image in images]
    shapes = {image.shape for image in images}
    if image_size is None and len(shapes) > 1:
        other = next(i for i, image in enumerate(images) if image.shape != images[0].shape)
        raise ValueError(
            f"Images have different shapes and no `image_size` was given: {names[0]} is {images[0].shape}, "
            f"{names[other]} is {images[other].shape}. Pass image_size=(height, width)."
        )
    out_shape = (image_size[0], image_size[1], images[0].shape[-1]) if image_size else images[0].shape
    out = np.empty((len(images), *out_shape), np.float32)
    for shape in shapes:
        where = [i for i, image in enumerate(images) if image.shape == shape]
        for start in range(0, len(where), 256):  # bounded memory for large sources
            chunk = where[start : start + 256]
            batch = np.stack([images[i] for i in chunk]).astype(np.float32) / 255.0  # (n, h, w, c)
            if image_size is not None and tuple(shape[:2]) != tuple(image_size):
                batch = tf.image.resize(batch, image_size, method="bilinear", antialias=True).numpy()
            out[chunk] = batch
    np.clip(out, 0.0, 1.0, out=out)
    return np.subtract(1.0, out, out=out) if invert else out


def _convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """`(H, W)` or `(H, W, C)` uint8 -> `(H, W, channels)`, grey <-> RGB."""
    image = image[..., None] if image.ndim == 2 else image
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        grey = image[..., :3].astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32)
        return np.round(grey)[..., None].astype(np.uint8)
    return np.repeat(image[..., :1], channels, axis=-1)


def _decode(data: bytes, name: str, channels: int) -> np.ndarray:
    """Decodes one image file's bytes to uint8 `(H, W, channels)`; names the file on failure."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert(_PIL_MODES[channels]))
    except Exception as error:  # PIL raises several types for corrupt or truncated files.
        raise ValueError(f"Could not decode image file {name}: {error}") from error
    return array.reshape(*array.shape[:2], channels)


def _to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], bit for bit as `from_arrays` scales uint8 input (x / 255)."""
    out = np.asarray(pixels, dtype=np.float32)  # a new array: the dtype changes
    return np.divide(out, np.float32(255.0), out=out)


def _offsets(counts) -> np.ndarray:
    """Class sizes -> `(num_classes + 1,)` offsets of each class's first image."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


def read_image_files(paths, image_size=None, invert: bool = False, channels: int = 1) -> np.ndarray:
    """Reads image files into one float32 `(n, H, W, C)` array in [0, 1], as `ClassDataset`s do.

    Args:
        paths: image files (any format PIL reads).
        image_size: `(height, width)` to resize to, or None (all sizes must then agree).
        invert: whether to return `1 - x`.
        channels: 1 (greyscale) or 3 (RGB).

    Returns:
        float32 `(len(paths), H, W, channels)`.

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: if `paths` is empty, a file cannot be decoded (it is named), sizes
            differ without `image_size`, or `channels`/`image_size` is bad.

    Example:

    ```python
    queries = read_image_files(["a.png", "b.png"], image_size=(28, 28), invert=True)
    ```
    """
    _check_channels(channels)
    _check_image_size(image_size)
    paths = [pathlib.Path(p) for p in paths]
    if not paths:
        raise ValueError("`paths` must name at least one image file. Received: paths=[]")
    raw = [_decode(path.read_bytes(), str(path), channels) for path in paths]
    return _resize_and_scale(raw, image_size, invert, channels, [str(p) for p in paths])


def _check_channels(channels) -> None:
    if channels not in _PIL_MODES:
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")


def _check_image_size(image_size) -> None:
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ValueError(f"`image_size` must be None or (height, width). Received: image_size={image_size!r}")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How raw image files become a source's arrays: what a client must repeat.

    Carried by every `ClassDataset` (set by its constructor, kept by its
    transforms) and written once into the run's config and the model card, so
    that a served model reads new images the way it was trained.

    Attributes:
        image_size: `(height, width)` the images are resized to.
        channels: 1 (greyscale) or 3 (RGB).
        invert: whether pixels are stored as `1 - x` (Omniglot: strokes are 1).

    Example:

    ```python
    omniglot.preprocessing.to_dict()
    # {"image_size": [28, 28], "channels": 1, "invert": True, "scale": "pixel / 255"}
    ```
    """

    image_size: tuple
    channels: int
    invert: bool = False

    def to_dict(self) -> dict:
        """JSON form (as model cards hold it); pixel values are scaled by 1/255."""
        return {"image_size": [int(d) for d in self.image_size], "channels": int(self.channels),
                "invert": bool(self.invert), "scale": "pixel / 255"}

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        """Inverse of `to_dict` (extra keys such as `scale` are ignored)."""
        return cls(tuple(int(d) for d in values["image_size"]), int(values["channels"]), bool(values["invert"]))


def _scan_folder(root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """Maps each folder under `root` that directly holds images to its sorted image files.

    Keys are paths relative to `root` joined with "/". Hidden files are ignored.

    Raises:
        FileNotFoundError: if `root` is not a folder.
        ValueError: if a leaf folder holds no image.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder not found: {root}")
    classes = {}
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        files = sorted(
            p for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if files:
            classes[folder.relative_to(root).as_posix()] = files
        elif folder != root and not any(p.is_dir() for p in folder.iterdir()):
            raise ValueError(f"Class folder {folder} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    return classes


def _one_hot_groups(groups: Sequence[str]) -> np.ndarray:
    """One float32 row per class: the one-hot of its group among the sorted distinct groups."""
    names = sorted(set(groups))
    return np.eye(len(names), dtype=np.float32)[[names.index(g) for g in groups]]  # (num_classes, num_groups)


def _read_folder_metadata(root: pathlib.Path, class_names: Sequence[str]) -> np.ndarray | None:
    """The `(num_classes, M)` rows of `root/metadata.json` in the order of `class_names`; None without the file.

    Raises:
        ValueError: if the file is not a JSON object of equal-length lists of numbers,
            or a class is missing from it or it names an unknown class.
    """
    path = root / FOLDER_METADATA_FILE
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(table, dict):
        raise ValueError(f"{path} must map each class name to a list of numbers. Received: a {type(table).__name__}")
    missing = [name for name in class_names if name not in table]
    unknown = sorted(set(table) - set(class_names))
    if missing or unknown:
        raise ValueError(f"{path} must list exactly the classes of the folder. Missing: {missing[:5]} "
                         f"({len(missing)}); unknown: {unknown[:5]} ({len(unknown)}).")
    rows = [table[name] for name in class_names]
    lengths = {len(row) if isinstance(row, list) else -1 for row in rows}
    if len(lengths) != 1 or -1 in lengths:
        raise ValueError(f"{path} must give every class a list of numbers of one length. "
                         f"Received: lengths {sorted(lengths)} (-1: not a list)")
    try:
        return np.asarray(rows, np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} holds a value that is not a number: {error}") from error


class ClassDataset:
    """Images indexed by class, decoded once into one contiguous array.

    Build one with a `from_*` constructor; transforms (`select`, `split_by_alphabet`,
    `random_split`, `with_rotations`) return new datasets holding their own contiguous
    copy of the images they keep (a memory-mapped dataset's `select` of consecutive
    classes keeps a memory-mapped slice instead). Arrays are read-only.

    Args:
        images: `(num_images, H, W, C)` sorted by class: float32 in [0, 1] (other
            float or integer dtypes are converted to float32), or uint8 pixels kept
            as they are (and scaled by 1/255 when gathered). A `np.memmap` stays
            memory-mapped.
        class_offsets: int64 `(num_classes + 1,)`; class `c` owns
            `images[class_offsets[c]:class_offsets[c + 1]]`.
        class_names: one unique name per class.
        groups: one group name per class (e.g. the Omniglot alphabet), or None.
        preprocessing: how the images were read (`Preprocessing`); None: the
            array's size and channels, not inverted.
        class_metadata: float `(num_classes, M)`, row `c` describing class `c`
            (e.g. the one-hot of its alphabet), or None. Kept as float32.

    Raises:
        ValueError: if the arrays do not agree with each other, there is no class, a
            class has no image, a name repeats, or `class_metadata` is not
            `(num_classes, M)` with `M >= 1` finite numbers.

    Example:

    ```python
    omniglot = ClassDataset.from_omniglot("/data/omniglot")        # 242 classes
    train, test = omniglot.split_by_alphabet(
        ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin", "Japanese_(katakana)"],
        ["Sanskrit", "Tagalog"])
    train = train.with_rotations((90, 180, 270))                   # 183 * 4 classes
    ```
    """

    def __init__(
        self,
        images: np.ndarray,
        class_offsets: np.ndarray,
        class_names: Sequence[str],
        groups: Sequence[str] | None = None,
        preprocessing: Preprocessing | None = None,
        class_metadata: np.ndarray | None = None,
    ):
        if not (isinstance(images, np.ndarray) and images.dtype in (np.float32, np.uint8)):
            images = np.asarray(images, np.float32)
        images = images.view()  # a view (a memmap stays one): read-only here, not for the caller
        class_offsets = np.asarray(class_offsets, np.int64).view()
        if images.ndim != 4:
            raise ValueError(f"`images` must have shape (num_images, H, W, C). Received: images.shape={images.shape}")
        if len(class_names) < 1:
            raise ValueError("A ClassDataset needs at least one class. Received: 0 classes.")
        if class_offsets.shape != (len(class_names) + 1,) or class_offsets[0] != 0 or class_offsets[-1] != len(images):
            raise ValueError(
                f"`class_offsets` must be ({len(class_names) + 1},), from 0 to {len(images)}. "
                f"Received: class_offsets={class_offsets}"
            )
        counts = np.diff(class_offsets)
        if counts.min() < 1:
            raise ValueError(f"Class {class_names[int(counts.argmin())]!r} has no image.")
        if len(set(class_names)) != len(class_names):
            raise ValueError(
                f"Class names must be unique. Received: {len(class_names)} names, {len(set(class_names))} distinct."
            )
        groups = [""] * len(class_names) if groups is None else list(groups)
        if len(groups) != len(class_names):
            raise ValueError(
                f"`groups` needs one entry per class ({len(class_names)}). Received: {len(groups)} groups."
            )
        if class_metadata is not None:
            class_metadata = np.array(class_metadata, np.float32)  # a copy: read-only here, not for the caller
            if class_metadata.ndim != 2 or class_metadata.shape[0] != len(class_names) or class_metadata.shape[1] < 1:
                raise ValueError(
                    f"`class_metadata` must have shape (num_classes, M) = ({len(class_names)}, M) with M >= 1. "
                    f"Received: class_metadata.shape={class_metadata.shape}"
                )
            if not np.isfinite(class_metadata).all():
                raise ValueError("`class_metadata` must hold finite numbers. Received: NaN or infinite values")
            class_metadata.setflags(write=False)
        self._class_metadata = class_metadata
        images.setflags(write=False)
        class_offsets.setflags(write=False)
        self._images, self._offsets = images, class_offsets
        self._class_names, self._groups = list(class_names), groups
        if preprocessing is None:
            preprocessing = Preprocessing(tuple(images.shape[1:3]), int(images.shape[3]), False)
        self._preprocessing = preprocessing

    # ---------------------------------------------------------------- properties

    @property
    def images(self) -> np.ndarray:
        """All images, float32 `(num_images, H, W, C)` in [0, 1], sorted by class.

        For uint8 storage this is a new float32 array, 4x the size of `pixels`, made
        on every call: episodes use `gather`, which converts only what it picks.
        """
        return self._images if self._images.dtype == np.float32 else _to_float(self._images)

    @property
    def pixels(self) -> np.ndarray:
        """The stored array, read-only: float32 in [0, 1] or uint8 pixels (see `images`)."""
        return self._images

    @property
    def is_memory_mapped(self) -> bool:
        """Whether the images are a memory-mapped file (read on demand, not held in memory)."""
        return isinstance(self._images, np.memmap)

    def gather(self, index) -> np.ndarray:
        """The images at `index` (any integer array or a slice), float32 in [0, 1].

        Reads only those images (also from a memory-mapped array); uint8 pixels are
        scaled by 1/255, float32 images are returned as stored.
        """
        picked = self._images[index]
        return np.asarray(picked) if picked.dtype == np.float32 else _to_float(picked)

    def in_memory(self) -> "ClassDataset":
        """This dataset with its array copied into memory (the same dtype); itself if it is not memory-mapped."""
        if not self.is_memory_mapped:
            return self
        return ClassDataset(np.array(self._images), self._offsets, self._class_names, self._groups,
                            self._preprocessing, self._class_metadata)

    @property
    def class_offsets(self) -> np.ndarray:
        """int64 `(num_classes + 1,)`: class `c` owns `images[offsets[c]:offsets[c + 1]]`."""
        return self._offsets

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @property
    def groups(self) -> list[str]:
        """The group (Omniglot alphabet) of each class, `""` where there is none."""
        return list(self._groups)

    @property
    def class_metadata(self) -> np.ndarray | None:
        """float32 `(num_classes, M)`, read-only: row `c` describes class `c`; None: no metadata."""
        return self._class_metadata

    @property
    def metadata_dim(self) -> int | None:
        """`M`, the size of one class's metadata; None: no metadata."""
        return None if self._class_metadata is None else int(self._class_metadata.shape[1])

    @property
    def alphabets(self) -> list[str]:
        """Sorted distinct groups (alphabets)."""
        return sorted(set(self._groups))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self._images.shape[1:])

    @property
    def preprocessing(self) -> Preprocessing:
        """How the images were read from files (resize, channels, inversion)."""
        return self._preprocessing

    def num_images(self, class_id: int) -> int:
        """Number of images of class `class_id`."""
        return int(self._offsets[class_id + 1] - self._offsets[class_id])

    def class_images(self, class_id: int) -> np.ndarray:
        """The images of class `class_id`, float32 `(n, H, W, C)` (a read-only view of float32 storage)."""
        return self.gather(slice(self._offsets[class_id], self._offsets[class_id + 1]))

    def __repr__(self) -> str:
        return (
            f"ClassDataset(num_classes={self.num_classes}, num_images={len(self._images)}, "
            f"image_shape={self.image_shape})"
        )

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_folder(cls, path, image_size=None, invert: bool = False, channels: int = 1) -> "ClassDataset":
        """Reads a folder of class folders (flat or nested; see the module docstring).

        Args:
            path: the root folder.
            image_size: `(height, width)` to resize to, or None to keep the size (all
                images must then share it).
            invert: whether to store `1 - x` (dark strokes on white become 1 on 0).
            channels: 1 (greyscale) or 3 (RGB).

        Returns:
            A `ClassDataset`; classes sorted by name, group = the class's parent path;
            class metadata from `<path>/metadata.json` if there is one (see the
            module docstring), else None.

        Raises:
            FileNotFoundError: if `path` is not a folder.
            ValueError: if no folder holds images, a leaf folder holds none, an image
                cannot be decoded (the file is named), sizes differ without `image_size`,
                or `metadata.json` is malformed or does not list exactly the classes.

        Example:

        ```python
        # my_images/{cat,dog,...}/*.png, and my_images/metadata.json: {"cat": [1.0, 0.2], "dog": [0.0, 0.7], ...}
        classes = ClassDataset.from_folder("my_images", image_size=(84, 84), channels=3)
        classes.metadata_dim   # 2
        ```
        """
        root = pathlib.Path(path)
        classes = {name: files for name, files in _scan_folder(root).items() if name != "."}
        if not classes:
            raise ValueError(f"No class folders with images found in {root}: expected {root}/<class>/<image files>.")
        metadata = _read_folder_metadata(root, list(classes))  # before decoding: a bad file fails fast
        pixels = read_image_files([f for files in classes.values() for f in files], image_size, invert, channels)
        groups = [name.rpartition("/")[0] for name in classes]
        preprocessing = Preprocessing(tuple(pixels.shape[1:3]), channels, invert)
        return cls(pixels, _offsets([len(files) for files in classes.values()]), list(classes), groups, preprocessing,
                   metadata)

    @classmethod
    def from_omniglot(cls, path, image_size=(28, 28)) -> "ClassDataset":
        """Reads Omniglot: the published zips in place and/or an unpacked tree.

        `path` is a zip file or a folder. In a folder, every `*.zip` directly inside it
        is read (sorted by name), then every folder below it that holds PNGs. A class
        is `<alphabet>/<character>`, the last two folders of an image's path; a class
        found in several sources is taken from the first one only (Greek and Latin are
        in both published archives). Images are resized, inverted (strokes are 1) and
        greyscale.

        Args:
            path: a folder (holding zips or the unpacked tree) or one zip file.
            image_size: `(height, width)`; `None` keeps 105x105.

        Returns:
            A `ClassDataset` with classes named `"Alphabet/characterNN"`, sorted, whose
            groups are the alphabets and whose class metadata is the one-hot of the
            alphabet, over the sorted alphabets read (`alphabets`): `M` is their
            number, so the same data read in full gives the same rows in every split.

        Raises:
            FileNotFoundError: if `path` does not exist.
            ValueError: if no Omniglot image is found or an image cannot be decoded.
        """
        _check_image_size(image_size)
        root = pathlib.Path(path)
        if not root.exists():
            raise FileNotFoundError(f"Omniglot data not found: {root}")
        zips = [root] if root.is_file() else sorted(root.glob("*.zip"))
        sources: dict[str, list[tuple[str, Callable[[], bytes]]]] = {}
        for zip_path in zips:
            archive = zipfile.ZipFile(zip_path)
            found: dict[str, list] = {}
            for member in sorted(archive.namelist()):
                parts = member.split("/")
                if member.lower().endswith(".png") and len(parts) >= 3:
                    found.setdefault(f"{parts[-3]}/{parts[-2]}", []).append(
                        (f"{zip_path}:{member}", lambda a=archive, m=member: a.read(m))
                    )
            for key, files in found.items():
                sources.setdefault(key, files)
        if root.is_dir():
            folders = _scan_folder(root)
            for rel, files in folders.items():
                parts = rel.split("/")
                if len(parts) >= 2 and files[0].suffix.lower() == ".png":
                    sources.setdefault(f"{parts[-2]}/{parts[-1]}", [(str(f), f.read_bytes) for f in files])
        if not sources:
            raise ValueError(f"No Omniglot images found in {root}: expected *.zip or <alphabet>/<character>/*.png.")
        keys = sorted(sources)
        files = [file for key in keys for file in sources[key]]  # (name, read) pairs, by class
        raw = [_decode(read(), name, 1) for name, read in files]
        pixels = _resize_and_scale(raw, image_size, True, 1, [name for name, _ in files])
        preprocessing = Preprocessing(tuple(pixels.shape[1:3]), 1, True)
        groups = [key.split("/")[0] for key in keys]
        return cls(pixels, _offsets([len(sources[key]) for key in keys]), keys, groups, preprocessing,
                   _one_hot_groups(groups))

    @classmethod
    def from_tfds(
        cls,
        name: str,
        split: str,
        image_key: str = "image",
        label_key: str = "label",
        image_size=None,
        invert: bool = False,
        channels: int | None = None,
        data_dir=None,
        group_key: str | None = None,
    ) -> "ClassDataset":
        """Reads an image classification dataset from TensorFlow Datasets.

        Args:
            name: TFDS name, e.g. `"omniglot"`, `"cifar100"`.
            split: TFDS split, e.g. `"train"`, `"test[:10%]"`.
            image_key: feature holding the uint8 image.
            label_key: feature holding the integer class.
            image_size: `(height, width)` to resize to, or None.
            invert: whether to store `1 - x`.
            channels: None to keep the dataset's channels, or 1 / 3 to convert.
            data_dir: TFDS data folder (None: TFDS's default).
            group_key: optional integer feature giving each class's group (e.g.
                `"alphabet"` for Omniglot); a class takes its examples' group.

        Returns:
            A `ClassDataset` with one class per label, named by the label's
            `ClassLabel` name where there is one.

        Raises:
            ValueError: if a key is not a feature of the dataset or arguments are bad.
            ConnectionError: if TFDS must download the data set and cannot (offline).
        """
        import tensorflow_datasets as tfds  # imported here: only this constructor needs it.

        if channels is not None:
            _check_channels(channels)
        _check_image_size(image_size)
        try:
            dataset, info = tfds.load(name, split=split, data_dir=data_dir, with_info=True, shuffle_files=False)
        except OSError as error:  # requests' download errors are OSErrors too
            where = data_dir or "TFDS's default folder (~/tensorflow_datasets)"
            raise ConnectionError(
                f"TFDS could not download or prepare the data set {name!r} into {where}: {error}. Offline, prepare it "
                f"on a machine with internet and copy it there. Received: name={name!r}, split={split!r}"
            ) from error
        for key in (image_key, label_key) + ((group_key,) if group_key else ()):
            if key not in info.features:
                raise ValueError(
                    f"{key!r} is not a feature of {name}; features: {sorted(info.features)}. Received: {key!r}"
                )
        images, labels, groups = [], [], []
        for example in tfds.as_numpy(dataset):
            images.append(example[image_key])
            labels.append(int(example[label_key]))
            groups.append(str(example[group_key]) if group_key else "")
        if not images:
            raise ValueError(f"TFDS split {name}/{split} holds no example. Received: split={split!r}")
        label_names = getattr(info.features[label_key], "names", None)
        group_names = getattr(info.features[group_key], "names", None) if group_key else None
        if group_names:
            groups = [group_names[int(g)] for g in groups]
        images = [image[..., None] if image.ndim == 2 else image for image in images]
        names = [f"{name}/{split}[{i}]" for i in range(len(images))]
        pixels = _resize_and_scale(images, image_size, invert, channels, names)
        dataset = cls.from_arrays(pixels, np.array(labels), class_names=label_names, groups=dict(zip(labels, groups)))
        preprocessing = Preprocessing(tuple(pixels.shape[1:3]), int(pixels.shape[3]), invert)
        return cls(dataset.images, dataset.class_offsets, dataset.class_names, dataset.groups, preprocessing)

    @classmethod
    def from_arrays(
        cls, images, labels, class_names: Sequence[str] | None = None, groups: dict | None = None,
        class_metadata=None,
    ) -> "ClassDataset":
        """Builds from arrays in memory.

        Args:
            images: `(N, H, W, C)` or `(N, H, W)`; uint8 (scaled by 1/255) or float in [0, 1].
            labels: `(N,)` integer class of each image.
            class_names: optional names indexed by label value; default `str(label)`.
            groups: optional `{label: group}`.
            class_metadata: optional float `(num_classes, M)`: one row per distinct
                label, in increasing label order (with labels `0..C-1`, row `k` is label
                `k`'s).

        Returns:
            A `ClassDataset` with one class per distinct label, in increasing label order.

        Raises:
            ValueError: on mismatched lengths, bad ranks, float values outside [0, 1],
                or `class_metadata` not `(num_classes, M)`.

        Example:

        ```python
        classes = ClassDataset.from_arrays(images, labels, class_metadata=np.eye(10))  # labels 0..9
        classes.class_metadata.shape   # (10, 10)
        ```
        """
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or labels.shape != (len(images),):
            raise ValueError(
                "`images` must be (N, H, W[, C]) and `labels` (N,). "
                f"Received: images.shape={images.shape}, labels.shape={labels.shape}"
            )
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        elif images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise ValueError(f"Float images must be in [0, 1]. Received: min={images.min()}, max={images.max()}")
        order = np.argsort(labels, kind="stable")
        values, counts = np.unique(labels, return_counts=True)
        names = [str(v) if class_names is None else class_names[int(v)] for v in values]
        group_list = None if groups is None else [groups.get(int(v), "") for v in values]
        return cls(images[order], _offsets(counts), names, group_list, class_metadata=class_metadata)

    # ---------------------------------------------------------------- transforms

    def _subset(self, class_ids: Sequence[int]) -> "ClassDataset":
        class_ids = [int(c) for c in class_ids]
        counts = [self.num_images(c) for c in class_ids]
        if self.is_memory_mapped and class_ids == list(range(class_ids[0], class_ids[0] + len(class_ids))):
            images = self._images[self._offsets[class_ids[0]] : self._offsets[class_ids[-1] + 1]]  # still mapped
        else:
            index = np.concatenate([np.arange(self._offsets[c], self._offsets[c + 1]) for c in class_ids])
            images = self._images[index]
        return ClassDataset(
            images, _offsets(counts),
            [self._class_names[c] for c in class_ids], [self._groups[c] for c in class_ids], self._preprocessing,
            None if self._class_metadata is None else self._class_metadata[class_ids],
        )

    def select(self, classes: Sequence[str] | Callable[[str], bool]) -> "ClassDataset":
        """The classes named in `classes` (or for which the predicate is true), in this dataset's order.

        Raises:
            ValueError: if a name is unknown or nothing is selected.
        """
        if callable(classes):
            chosen = [i for i, name in enumerate(self._class_names) if classes(name)]
        else:
            unknown = sorted(set(classes) - set(self._class_names))
            if unknown:
                more = " ..." if len(unknown) > 5 else ""
                raise ValueError(f"Unknown class names: {unknown[:5]}{more} ({len(unknown)} unknown).")
            wanted = set(classes)
            chosen = [i for i, name in enumerate(self._class_names) if name in wanted]
        if not chosen:
            raise ValueError(f"No class selected out of {self.num_classes}. Received: classes={classes!r}")
        return self._subset(chosen)

    def split_by_alphabet(self, *alphabets: Sequence[str]) -> tuple["ClassDataset", ...]:
        """One dataset per list of alphabets (groups), e.g. `(train, test)`; no class crosses.

        Raises:
            ValueError: if an alphabet is unknown or appears in two lists.
        """
        known, seen = set(self._groups), set()
        for names in alphabets:
            if isinstance(names, str):
                raise ValueError(f"Each split must be a list of alphabets, not a string. Received: {names!r}")
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(f"Unknown alphabet(s) {unknown}; known: {sorted(known)}.")
            if seen & set(names):
                raise ValueError(f"Alphabet(s) {sorted(seen & set(names))} appear in more than one split.")
            seen |= set(names)
        return tuple(self._subset([i for i, g in enumerate(self._groups) if g in set(names)]) for names in alphabets)

    def random_split(self, sizes: Sequence[int], seed: int = 0) -> tuple["ClassDataset", ...]:
        """Splits the classes at random, reproducibly from `seed`, into parts of `sizes` classes.

        Raises:
            ValueError: if a size is below 1 or the sizes add up to more than `num_classes`.
        """
        if any(s < 1 for s in sizes) or sum(sizes) > self.num_classes:
            raise ValueError(
                f"`sizes` must be positive and add up to at most {self.num_classes}. Received: sizes={list(sizes)}"
            )
        order = np.random.default_rng(seed).permutation(self.num_classes)
        bounds = np.cumsum([0, *sizes])
        return tuple(self._subset(sorted(order[a:b])) for a, b in zip(bounds[:-1], bounds[1:]))

    def with_rotations(self, angles: Sequence[int] = (90, 180, 270)) -> "ClassDataset":
        """Adds each class rotated (counter-clockwise, like `np.rot90`) by each angle as a new class.

        The new classes follow all the originals, one block per angle, named
        `"<name>@rot<angle>"` and keeping the original's group and class metadata.

        Raises:
            ValueError: if an angle is not a multiple of 90 in (0, 360), or images are
                not square.
        """
        if any(a % 90 or not 0 < a < 360 for a in angles):
            raise ValueError(f"`angles` must be multiples of 90 in (0, 360). Received: angles={tuple(angles)}")
        if self.image_shape[0] != self.image_shape[1]:
            raise ValueError(f"Rotations need square images. Received: image_shape={self.image_shape}")
        images = [self._images] + [np.rot90(self._images, a // 90, axes=(1, 2)) for a in angles]
        counts = np.tile(np.diff(self._offsets), len(angles) + 1)
        names = self._class_names + [f"{n}@rot{a}" for a in angles for n in self._class_names]
        metadata = None if self._class_metadata is None else np.tile(self._class_metadata, (len(angles) + 1, 1))
        return ClassDataset(np.concatenate(images), _offsets(counts), names, self._groups * (len(angles) + 1),
                            self._preprocessing, metadata)
