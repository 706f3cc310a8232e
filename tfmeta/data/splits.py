"""Class splits: which classes a run trains, validates and tests on.

No class crosses a split. The policy lives here, taking plain arguments, so the
trainers, the benchmarks and user code share it:

* `omniglot_sample_split`: the two Omniglot sample archives (`shared/data`):
  test on the `SAMPLE_TEST_ALPHABETS` (Sanskrit, Tagalog), train on every other
  alphabet with the `ROTATIONS` as new classes.
* `random_class_split`: a seeded random split of any `ClassDataset`.
* `load_class_split`: what `--dataset`/`--data_dir` mean for the trainers.
"""

from typing import NamedTuple

from tfmeta.data.sources import ClassDataset

# Omniglot sample test alphabets (shared/data/README.md); every other alphabet trains.
SAMPLE_TEST_ALPHABETS = ("Sanskrit", "Tagalog")
# Rotations added to the training classes as new classes (Santoro et al. 2016, Finn et al. 2017).
ROTATIONS = (90, 180, 270)


class ClassSplit(NamedTuple):
    """Training, validation and test classes; no class is in two of them.

    Attributes:
        train: the classes meta-training draws from.
        val: the classes validation draws from during training. Splits without
            validation classes of their own (the Omniglot sample, TFDS
            `omniglot`, random splits) validate on the test classes, at a
            disjoint range of task indices: monitoring only, nothing is
            selected on it.
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
                          rotations=ROTATIONS) -> ClassSplit:
    """The Omniglot split the trainers use on the sample archives (and on any Omniglot tree).

    Test: `test_alphabets`. Train: every other alphabet, with `rotations` as new
    classes. No character crosses the split. Validation: the test classes
    (see `ClassSplit.val`).

    Args:
        omniglot: a `ClassDataset.from_omniglot(...)` holding the test alphabets.
        test_alphabets: the alphabets held out for testing.
        rotations: angles added to the training classes as new classes.

    Returns:
        A `ClassSplit`.

    Raises:
        ValueError: if a test alphabet is missing (named by `split_by_alphabet`).

    Example:

    ```python
    split = omniglot_sample_split(ClassDataset.from_omniglot("../shared/data/omniglot"))
    split.train.num_classes, split.test.num_classes    # (732, 59)
    ```
    """
    train_alphabets = [a for a in omniglot.alphabets if a not in test_alphabets]
    train, test = omniglot.split_by_alphabet(train_alphabets, list(test_alphabets))
    train = train.with_rotations(rotations) if rotations else train
    return ClassSplit(train, test, test)


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


def load_class_split(dataset: str, data_dir=None, ways: int = 5, seed: int = 0) -> ClassSplit:
    """The classes of a trainer's `--dataset` and `--data_dir`; test classes are never seen in training.

    * `omniglot` with `data_dir` (the published zips or an unpacked tree):
      `omniglot_sample_split` (test on Sanskrit and Tagalog, train on every other
      alphabet with rotations).
    * `omniglot` without `data_dir`: TFDS `omniglot` (downloaded or prepared in
      TFDS's folder): its `train` split (background alphabets, with rotations)
      trains, its `test` split (evaluation alphabets) tests.
    * `folder` (`data_dir` holds `<class>/<images>`), or any other TFDS name (its
      `train` split): `random_class_split`. A TFDS `test` split usually holds the
      training classes, so it is not used.

    Args:
        dataset: `"omniglot"`, `"folder"` or a TFDS name.
        data_dir: where the data lives (the TFDS data folder for TFDS names).
        ways: classes per task.
        seed: seed of random splits.

    Returns:
        A `ClassSplit`.

    Raises:
        FileNotFoundError: if `data_dir` does not exist.
        ValueError: on too few classes, or data that cannot be read (named).

    Example:

    ```python
    split = load_class_split("omniglot", "../shared/data/omniglot")
    ```
    """
    if dataset == "omniglot" and data_dir:
        return omniglot_sample_split(ClassDataset.from_omniglot(data_dir))
    if dataset == "omniglot":
        tfds_omniglot = dict(image_size=(28, 28), invert=True, channels=1, group_key="alphabet")
        train = ClassDataset.from_tfds("omniglot", "train", **tfds_omniglot).with_rotations(ROTATIONS)
        test = ClassDataset.from_tfds("omniglot", "test", **tfds_omniglot)
        return ClassSplit(train, test, test)
    if dataset == "folder":
        return random_class_split(ClassDataset.from_folder(data_dir), ways, seed)
    return random_class_split(ClassDataset.from_tfds(dataset, split="train", data_dir=data_dir), ways, seed)
