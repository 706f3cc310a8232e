"""Class splits: which classes a run trains, validates and tests on.

No class crosses a split. The policy lives here, taking plain arguments, so the
trainers, the benchmarks and user code share it:

* `omniglot_sample_split`: the two Omniglot sample archives (`shared/data`):
  test on the `SAMPLE_TEST_ALPHABETS` (Sanskrit, Tagalog), validate on the
  `SAMPLE_VAL_ALPHABETS` (Early_Aramaic), train on every other alphabet with the
  `ROTATIONS` as new classes.
* `omniglot_split`: that split or one of the published Omniglot splits (Vinyals
  et al.'s characters, Lake et al.'s alphabets), from the lists shipped in
  `tfmeta/data/standard/lists/`.
* `random_class_split`: a seeded random split of any `ClassDataset`.
* `load_class_split`: what `--dataset`/`--data_dir` mean for the trainers.
"""

from typing import NamedTuple

from tfmeta.data.sources import ClassDataset

# Omniglot sample test alphabets (shared/data/README.md); the validation alphabet is the
# smallest of the others (22 characters), held out from training; every other alphabet trains.
SAMPLE_TEST_ALPHABETS = ("Sanskrit", "Tagalog")
SAMPLE_VAL_ALPHABETS = ("Early_Aramaic",)
# Rotations added to the training classes as new classes (Santoro et al. 2016, Finn et al. 2017).
ROTATIONS = (90, 180, 270)


class ClassSplit(NamedTuple):
    """Training, validation and test classes; no class is in two of them.

    Attributes:
        train: the classes meta-training draws from.
        val: the classes validation draws from during training (and model
            selection, `--select=best`). Splits without validation classes of
            their own (TFDS `omniglot`, random splits of a folder or a TFDS data
            set) validate on the test classes, at a disjoint range of task
            indices: monitoring only, nothing may be selected on them.
        test: the classes of the final test.
    """

    train: ClassDataset
    val: ClassDataset
    test: ClassDataset

    @property
    def has_own_validation(self) -> bool:
        """Whether `val` holds classes that are neither training nor test classes."""
        return self.val is not self.test


def omniglot_sample_split(omniglot: ClassDataset, test_alphabets=SAMPLE_TEST_ALPHABETS,
                          val_alphabets=SAMPLE_VAL_ALPHABETS, rotations=ROTATIONS) -> ClassSplit:
    """The Omniglot split the trainers use on the sample archives (and on any Omniglot tree).

    Test: `test_alphabets`. Validation: `val_alphabets`. Train: every other
    alphabet, with `rotations` as new classes. No character crosses the split.
    On the two sample archives: 161 training characters (644 classes with
    rotations; Balinese, Greek, Korean, Latin, Japanese_(katakana)), 22
    validation characters (Early_Aramaic), 59 test characters.

    Args:
        omniglot: a `ClassDataset.from_omniglot(...)` holding the test and validation alphabets.
        test_alphabets: the alphabets held out for testing.
        val_alphabets: the alphabets held out for validation (model selection).
        rotations: angles added to the training classes as new classes.

    Returns:
        A `ClassSplit`.

    Raises:
        ValueError: if a test or validation alphabet is missing (named by `split_by_alphabet`).

    Example:

    ```python
    split = omniglot_sample_split(ClassDataset.from_omniglot("../shared/data/omniglot"))
    split.train.num_classes, split.val.num_classes, split.test.num_classes    # (644, 22, 59)
    ```
    """
    held_out = set(test_alphabets) | set(val_alphabets)
    train_alphabets = [a for a in omniglot.alphabets if a not in held_out]
    train, val, test = omniglot.split_by_alphabet(train_alphabets, list(val_alphabets), list(test_alphabets))
    train = train.with_rotations(rotations) if rotations else train
    return ClassSplit(train, val, test)


def random_class_split(classes: ClassDataset, ways: int, seed: int = 0) -> ClassSplit:
    """A seeded random split: a fifth of the classes (at least `ways`) test, the rest train.

    Args:
        classes: every class of the source.
        ways: classes per task (the test part must hold at least that many).
        seed: seed of the split.

    Returns:
        A `ClassSplit` (validation on the test classes).

    Raises:
        ValueError: if there are fewer than `2 * ways` classes.

    Example:

    ```python
    split = random_class_split(ClassDataset.from_folder("my_images"), ways=5, seed=0)
    ```
    """
    if classes.num_classes < 2 * ways:
        raise ValueError(
            f"The source must hold at least {2 * ways} classes to split into {ways}-way training and test "
            f"classes. Received: {classes.num_classes} classes"
        )
    num_test = max(ways, classes.num_classes // 5)
    test, train = classes.random_split([num_test, classes.num_classes - num_test], seed=seed)
    return ClassSplit(train, test, test)


OMNIGLOT_SPLITS = ("sample", "vinyals", "lake")


def omniglot_split(omniglot: ClassDataset, split: str = "sample", rotations=ROTATIONS) -> ClassSplit:
    """One of the Omniglot class splits; no character crosses it.

    * `"sample"`: `omniglot_sample_split` (the default; the two sample archives hold
      background alphabets only).
    * `"vinyals"`: Vinyals et al.'s (2016) 1,028 / 172 / 423 characters, as published
      with the Prototypical Networks code. The published lists hold every character
      at 0, 90, 180 and 270 degrees, so `rotations` are added as new classes to all
      three parts (4,112 / 688 / 1,692 classes with the default rotations).
    * `"lake"`: Lake et al.'s (2015) alphabets: the 20 evaluation alphabets test;
      the 30 background alphabets train, except 5 held out for validation (those of
      Meta-Dataset: the 5 background alphabets with the fewest characters,
      `Alphabet_of_the_Magi`, `Blackfoot`, `Inuktitut`, `Ojibwe` and `Tagalog`: 25
      / 5 / 20 alphabets, 883 / 81 / 659 characters). `rotations` are added to the
      training classes only.

    Args:
        omniglot: a `ClassDataset.from_omniglot(...)` holding (at least) the split's
            characters; other characters are left out.
        split: `"sample"`, `"vinyals"` or `"lake"`.
        rotations: angles added as new classes (see above); `()` for none.

    Returns:
        A `ClassSplit` (for `"sample"`, validation on the test classes).

    Raises:
        ValueError: on an unknown `split`, or if characters of the split are missing
            from `omniglot` (counted and named).

    Example:

    ```python
    omniglot = ClassDataset.from_omniglot("/data/omniglot")    # images_background.zip, images_evaluation.zip
    train, val, test = omniglot_split(omniglot, "vinyals")
    train.num_classes, val.num_classes, test.num_classes       # (4112, 688, 1692)
    ```
    """
    if split == "sample":
        return omniglot_sample_split(omniglot, rotations=rotations)
    if split not in OMNIGLOT_SPLITS:
        raise ValueError(f"`split` must be one of {OMNIGLOT_SPLITS}. Received: split={split!r}")
    parts = omniglot_characters(split)
    check_omniglot_characters(omniglot, split, f"the source ({omniglot.num_classes} characters of "
                              f"{len(omniglot.alphabets)} alphabets)", f"omniglot={omniglot!r}")
    train, val, test = (omniglot.select(parts[part]) for part in ("train", "val", "test"))
    if rotations and split == "vinyals":
        return ClassSplit(*(part.with_rotations(rotations) for part in (train, val, test)))
    return ClassSplit(train.with_rotations(rotations) if rotations else train, val, test)


def check_omniglot_characters(omniglot: ClassDataset, split: str, where: str, received: str) -> None:
    """Raises a ValueError counting and naming the characters of `split` missing from `omniglot`.

    Args:
        omniglot: the characters read.
        split: `"vinyals"` or `"lake"`.
        where: where they were read from (for the message).
        received: the argument to quote after "Received:".
    """
    present = set(omniglot.class_names)
    for part, characters in omniglot_characters(split).items():
        missing = [c for c in characters if c not in present]
        if missing:
            absent = sorted({c.split("/")[0] for c in missing} - set(omniglot.alphabets))
            absent_note = f" (whole alphabets absent: {_first(absent)})" if absent else ""
            name = {"train": "training", "val": "validation"}.get(part, part)
            raise ValueError(
                f"Omniglot {split!r} split: {len(missing)} of the {len(characters)} {name} characters are missing "
                f"in {where}: {_first(missing)}{absent_note}. Received: {received}"
            )


def _first(names, limit: int = 5) -> str:
    """`a, b, c` or, past `limit` names, `a, b, c, d, e and 7 more`."""
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def omniglot_characters(split: str) -> dict[str, tuple[str, ...]]:
    """The characters (`"Alphabet/characterNN"`) of each part of a published Omniglot split.

    Args:
        split: `"vinyals"` or `"lake"`.

    Returns:
        `{"train": ..., "val": ..., "test": ...}`, each sorted.

    Raises:
        ValueError: on another `split`.
    """
    from tfmeta.data.standard import lists  # here: tfmeta.data.standard imports this module

    if split == "vinyals":
        return {part: lists.read_names(f"omniglot/vinyals_{part}.txt") for part in ("train", "val", "test")}
    if split != "lake":
        raise ValueError(f"`split` must be 'vinyals' or 'lake'. Received: split={split!r}")
    every = sorted(c for part in ("train", "val", "test") for c in lists.read_names(f"omniglot/vinyals_{part}.txt"))
    alphabets = {
        "train": set(lists.read_names("omniglot/background_alphabets.txt"))
        - set(lists.read_names("omniglot/lake_val_alphabets.txt")),
        "val": set(lists.read_names("omniglot/lake_val_alphabets.txt")),
        "test": set(lists.read_names("omniglot/evaluation_alphabets.txt")),
    }
    return {part: tuple(c for c in every if c.split("/")[0] in names) for part, names in alphabets.items()}


def load_class_split(dataset: str, data_dir=None, ways: int = 5, seed: int = 0, split: str | None = None,
                     image_size: int | None = None, channels: int | None = None) -> ClassSplit:
    """The classes of a trainer's `--dataset` and `--data_dir`; test classes are never seen in training.

    * `omniglot` with `data_dir` (the published zips or an unpacked tree):
      `split="sample"` (the default; `omniglot_sample_split`: test on Sanskrit and
      Tagalog, train on every other alphabet with rotations, validate on the test
      classes), or a published split, `"vinyals"` or `"lake"` (`omniglot_split`,
      from the full release's two archives), with its own validation classes.
    * `omniglot` without `data_dir`: TFDS `omniglot` (downloaded or prepared in
      TFDS's folder): its `train` split (background alphabets, with rotations)
      trains, its `test` split (evaluation alphabets) tests.
    * `mini_imagenet`, `tiered_imagenet`, `cifar_fs`, `fc100`, `cub`: the data set in
      its published layout in `data_dir`, with its published split
      (`tfmeta.data.standard.load_standard_split`, cached on disk).
    * `folder` (`data_dir` holds `<class>/<images>`), or any other TFDS name (its
      `train` split): `random_class_split`. A TFDS `test` split usually holds the
      training classes, so it is not used.

    Args:
        dataset: `"omniglot"`, a standard data set's name, `"folder"` or a TFDS name.
        data_dir: where the data lives (the TFDS data folder for TFDS names).
        ways: classes per task.
        seed: seed of random splits.
        split: Omniglot's class split: `"sample"` (default), `"vinyals"` or `"lake"`.
        image_size: the side of the (square) images, None: the source's usual size
            (28 Omniglot, 84 ImageNet-derived sets and CUB, 32 CIFAR; folders: as stored).
        channels: folders and TFDS: 1 (greyscale) or 3 (RGB); None: 1 for folders,
            the data set's own for TFDS.

    Returns:
        A `ClassSplit`.

    Raises:
        FileNotFoundError: if `data_dir` (or part of a standard data set) does not exist.
        ValueError: on too few classes, a `split` the data set does not have, or
            data that cannot be read (named).

    Example:

    ```python
    split = load_class_split("omniglot", "../shared/data/omniglot")
    split = load_class_split("mini_imagenet", "/data/mini-imagenet")
    ```
    """
    from tfmeta.data.standard import STANDARD_DATASETS, load_standard_split  # noqa: PLC0415 (it imports us)

    size = None if image_size is None else (int(image_size), int(image_size))
    if split not in (None, "sample") and dataset != "omniglot":
        raise ValueError(f"`split` chooses among Omniglot's class splits; {dataset} has its published one. "
                         f"Received: dataset={dataset!r}, split={split!r}")
    if dataset == "omniglot" and data_dir:
        if split in (None, "sample"):
            return omniglot_sample_split(ClassDataset.from_omniglot(data_dir, image_size=size or (28, 28)))
        return load_standard_split("omniglot", data_dir, split=split, image_size=size)
    if dataset == "omniglot":
        tfds_omniglot = dict(image_size=size or (28, 28), invert=True, channels=1, group_key="alphabet")
        train = ClassDataset.from_tfds("omniglot", "train", **tfds_omniglot).with_rotations(ROTATIONS)
        test = ClassDataset.from_tfds("omniglot", "test", **tfds_omniglot)
        return ClassSplit(train, test, test)
    if dataset in STANDARD_DATASETS:
        if not data_dir:
            raise ValueError(f"{dataset} cannot be downloaded by tfmeta: give the folder holding it in its published "
                             f"layout. Received: data_dir={data_dir!r}")
        return load_standard_split(dataset, data_dir, image_size=size)
    if dataset == "folder":
        return random_class_split(ClassDataset.from_folder(data_dir, image_size=size, channels=channels or 1), ways,
                                  seed)
    classes = ClassDataset.from_tfds(dataset, split="train", data_dir=data_dir, image_size=size, channels=channels)
    return random_class_split(classes, ways, seed)
