"""Class metadata: `ClassDataset.class_metadata` through constructors, transforms and `episode_dataset`."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfmeta.data.episode import Episode, TaskEpisode
from tfmeta.data.pipeline import episode_dataset
from tfmeta.data.sources import ClassDataset

NUM_CLASSES = 12


def coded_classes() -> ClassDataset:
    """12 classes of unequal sizes (4 to 7 images) whose every pixel is `(c + 1) / 16`, and whose
    metadata row is `[c, -c]`: both name the class, so an episode can be checked against itself."""
    counts = 4 + np.arange(NUM_CLASSES) % 4
    labels = np.repeat(np.arange(NUM_CLASSES), counts)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]  # from_arrays sorts them by class
    images = np.broadcast_to(((labels + 1) / 16.0)[:, None, None, None], (len(labels), 2, 2, 1)).astype(np.float32)
    metadata = np.stack([np.arange(NUM_CLASSES), -np.arange(NUM_CLASSES)], axis=1).astype(np.float32)
    return ClassDataset.from_arrays(images, labels, class_metadata=metadata)


def class_of(images: np.ndarray) -> np.ndarray:
    """The class coded in each image of `(..., 2, 2, 1)` images."""
    return np.rint(images[..., 0, 0, 0] * 16 - 1).astype(int)


def test_metadata_row_of_label_k_is_the_metadata_of_the_class_labelled_k():
    source = coded_classes()
    ways, shots, queries, tasks = 5, 2, 1, 6
    stream = episode_dataset(source, ways, shots, queries, tasks, seed=3, num_steps=3, metadata=True)
    plain = episode_dataset(source, ways, shots, queries, tasks, seed=3, num_steps=3)
    for batch, episode in zip(stream, plain):
        assert isinstance(batch, TaskEpisode) and batch.metadata.shape == (tasks, ways, 2)
        np.testing.assert_array_equal(batch.support_mask, np.ones((tasks, ways * shots)))
        np.testing.assert_array_equal(batch.query_mask, np.ones((tasks, ways * queries)))
        np.testing.assert_array_equal(batch.support_x, episode.support_x)  # the same episodes as without metadata
        support_classes = class_of(batch.support_x.numpy())  # (tasks, ways*shots)
        query_classes = class_of(batch.query_x.numpy())
        labels, query_labels = batch.support_y.numpy(), batch.query_y.numpy()
        for t in range(tasks):
            for k in range(ways):
                (chosen,) = set(support_classes[t][labels[t] == k]) | set(query_classes[t][query_labels[t] == k])
                np.testing.assert_array_equal(batch.metadata[t, k], [chosen, -chosen])
        # Labels are a random order of the classes: the rows are not simply sorted.
    assert any(np.any(np.diff(b.metadata[:, :, 0].numpy(), axis=1) < 0) for b in stream)


def test_default_stream_is_unchanged_and_metadata_needs_a_source_with_it():
    source = coded_classes()
    assert type(next(iter(episode_dataset(source, 3, 1, 1, 2)))) is Episode
    bare = ClassDataset(source.pixels, source.class_offsets, source.class_names)
    with pytest.raises(ValueError, match=r"needs a source with class metadata; ClassDataset\(num_classes=12.*"
                                         r"Received: metadata=True, source.class_metadata=None"):
        episode_dataset(bare, 3, 1, 1, 2, metadata=True)


def test_omniglot_metadata_is_the_one_hot_alphabet_kept_by_rotations_and_splits(tmp_path, omniglot_tree):
    root = omniglot_tree(tmp_path / "omniglot", {"Greek": 2, "Latin": 3, "Sanskrit": 2})
    omniglot = ClassDataset.from_omniglot(root, image_size=(4, 4))
    assert omniglot.metadata_dim == 3 and omniglot.alphabets == ["Greek", "Latin", "Sanskrit"]
    one_hot = {"Greek": [1, 0, 0], "Latin": [0, 1, 0], "Sanskrit": [0, 0, 1]}
    row = dict(zip(omniglot.class_names, omniglot.class_metadata))
    for name, values in row.items():
        np.testing.assert_array_equal(values, one_hot[name.split("/")[0]])
    rotated = omniglot.with_rotations((90, 180))
    assert rotated.class_metadata.shape == (3 * 7, 3)
    for name, values in zip(rotated.class_names, rotated.class_metadata):
        np.testing.assert_array_equal(values, row[name.split("@")[0]])  # a rotated class keeps its alphabet
    train, test = omniglot.split_by_alphabet(["Latin"], ["Sanskrit", "Greek"])
    picked = omniglot.select(["Sanskrit/character02", "Greek/character01"])
    (part,) = omniglot.random_split([4], seed=1)
    for subset in (train, test, picked, part, part.in_memory()):
        assert subset.metadata_dim == 3  # still the one-hot over the alphabets read
        for name, values in zip(subset.class_names, subset.class_metadata):
            np.testing.assert_array_equal(values, row[name])
    np.testing.assert_array_equal(train.class_metadata, [[0, 1, 0]] * 3)


def test_from_arrays_metadata_rows_follow_increasing_labels_and_are_read_only():
    images = np.zeros((4, 2, 2), np.uint8)
    metadata = np.array([[0.5], [1.5]], np.float32)
    classes = ClassDataset.from_arrays(images, np.array([1, 0, 1, 0]), class_metadata=metadata)
    np.testing.assert_array_equal(classes.class_metadata, [[0.5], [1.5]])
    metadata[0, 0] = 9.0  # the dataset holds its own copy
    assert classes.class_metadata[0, 0] == 0.5 and not classes.class_metadata.flags.writeable
    assert ClassDataset.from_arrays(images, np.array([1, 0, 1, 0])).metadata_dim is None


@pytest.mark.parametrize("metadata, match", [
    (np.zeros((3, 2)), r"\(num_classes, M\) = \(2, M\) with M >= 1. Received: class_metadata.shape=\(3, 2\)"),
    (np.zeros((1, 2)), r"Received: class_metadata.shape=\(1, 2\)"),
    (np.zeros(2), r"Received: class_metadata.shape=\(2,\)"),
    (np.zeros((2, 0)), r"Received: class_metadata.shape=\(2, 0\)"),
    (np.array([[0.0], [np.nan]]), "must hold finite numbers"),
])
def test_bad_metadata_shapes_raise_with_the_received_shape(metadata, match):
    with pytest.raises(ValueError, match=match):
        ClassDataset.from_arrays(np.zeros((4, 2, 2), np.uint8), np.array([0, 0, 1, 1]), class_metadata=metadata)


def _image_folder(root, classes):
    for name in classes:
        (root / name).mkdir(parents=True)
        Image.fromarray(np.zeros((3, 3), np.uint8)).save(root / name / "a.png")
    return root


def test_folder_metadata_json_gives_each_class_its_row(tmp_path):
    root = _image_folder(tmp_path / "f", ["cat", "dog", "zoo/eel"])
    (root / "metadata.json").write_text(json.dumps({"zoo/eel": [3, 0.5], "cat": [1, 0], "dog": [2, 0.25]}))
    classes = ClassDataset.from_folder(root)
    assert classes.class_names == ["cat", "dog", "zoo/eel"]
    np.testing.assert_array_equal(classes.class_metadata, [[1, 0], [2, 0.25], [3, 0.5]])
    (root / "metadata.json").unlink()
    assert ClassDataset.from_folder(root).class_metadata is None


@pytest.mark.parametrize("table, match", [
    ({"cat": [1.0]}, r"Missing: \['dog'\] \(1\); unknown: \[\] \(0\)"),
    ({"cat": [1.0], "dog": [2.0], "owl": [3.0]}, r"Missing: \[\] \(0\); unknown: \['owl'\] \(1\)"),
    ({"cat": [1.0], "dog": [2.0, 3.0]}, r"of one length. Received: lengths \[1, 2\]"),
    ({"cat": [1.0], "dog": "x"}, r"Received: lengths \[-1, 1\]"),
    ([[1.0], [2.0]], "must map each class name to a list of numbers. Received: a list"),
])
def test_bad_folder_metadata_raises_naming_the_problem(tmp_path, table, match):
    root = _image_folder(tmp_path / "f", ["cat", "dog"])
    (root / "metadata.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=match):
        ClassDataset.from_folder(root)


def test_augmentation_keeps_the_metadata_and_masks():
    from tfmeta.data.augment import Augmentation, augment_episode

    batch = next(iter(episode_dataset(coded_classes(), 3, 1, 1, 2, metadata=True)))
    augmented = augment_episode(batch, Augmentation(crop_padding=0, flip=True), seed=0, step=0)
    assert isinstance(augmented, TaskEpisode)
    np.testing.assert_array_equal(augmented.metadata, batch.metadata)
    np.testing.assert_array_equal(augmented.support_mask, batch.support_mask)
