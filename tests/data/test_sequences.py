"""Label-offset sequences (`tfmeta.data.sequences`): label inputs, presentation indices, the sampler, the pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import ClassDataset, SequenceSampler, presentation_indices, previous_labels, sequence_dataset
from tfmeta.data.sequences import presentation_indices_np

CLASSES, PER_CLASS = 12, 6


@pytest.fixture(scope="module")
def tiny() -> ClassDataset:
    """12 classes of 6 images, each image holding its own index (/72) everywhere."""
    images = np.arange(72, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32) / 72
    return ClassDataset.from_arrays(images, np.repeat(np.arange(CLASSES), PER_CLASS))


def _image_ids(x):  # (..., 4, 4, 1) -> (...,) indices into `tiny`
    return np.rint(x[..., 0, 0, 0] * 72).astype(int)


def test_previous_labels_by_hand():
    expected = [[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]]  # label of step t-1, zeros at t = 0
    np.testing.assert_array_equal(previous_labels([2, 0, 1, 1], 3).numpy(), expected)
    batched = previous_labels(tf.constant([[2, 0, 1, 1], [1, 1, 0, 2]]), 3).numpy()  # (2, 4, 3)
    np.testing.assert_array_equal(batched[0], expected)
    np.testing.assert_array_equal(batched[1], [[0, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]])


def test_presentation_indices_by_hand():
    np.testing.assert_array_equal(presentation_indices([2, 0, 2, 2, 0], 3).numpy(), [1, 1, 2, 3, 2])
    np.testing.assert_array_equal(presentation_indices_np([2, 0, 2, 2, 0]), [1, 1, 2, 3, 2])
    batched = presentation_indices(tf.constant([[1, 1, 0], [0, 1, 0]]), 2).numpy()
    np.testing.assert_array_equal(batched, [[1, 2, 1], [1, 1, 2]])


def test_sampler_draws_whole_classes_shuffled_with_fresh_labels(tiny):
    sampler = SequenceSampler(tiny.class_offsets, ways=4, instances=3, seed=5)
    maps, orders = set(), set()
    for task in range(12):
        index, labels, presentation = sampler.sample(step=7, task=task)
        assert index.shape == labels.shape == presentation.shape == (12,)
        assert len(set(index.tolist())) == 12  # distinct images
        classes = index // PER_CLASS
        assert len(set(classes.tolist())) == 4
        for label in range(4):  # each label is one class, `instances` times
            assert len(set(classes[labels == label].tolist())) == 1
            assert np.sum(labels == label) == 3
        np.testing.assert_array_equal(presentation, presentation_indices_np(labels))
        maps.add(tuple(classes[np.argsort(labels, kind="stable")][::3]))  # label -> class
        orders.add(tuple(labels))
    assert len(maps) == 12 and len(orders) > 6  # labels reshuffled per sequence; orders shuffled
    again = sampler.sample(step=7, task=3)
    np.testing.assert_array_equal(again[0], sampler.sample(step=7, task=3)[0])  # a pure function of (seed, step, task)


def test_dataset_is_the_sampler_as_episodes_and_resumes(tiny):
    dataset = sequence_dataset(tiny, ways=3, instances=4, meta_batch_size=5, seed=2)
    assert [tuple(s.shape) for s in dataset.element_spec] == [(5, 12, 4, 4, 1), (5, 12), (5, 0, 4, 4, 1), (5, 0)]
    sampler = SequenceSampler(tiny.class_offsets, 3, 4, seed=2)
    episodes = list(dataset.take(3))
    for step, episode in enumerate(episodes):
        index, labels, _ = sampler.sample_batch(step, range(5))
        np.testing.assert_array_equal(_image_ids(episode.support_x.numpy()), index)
        np.testing.assert_array_equal(episode.support_y.numpy(), labels)
    resumed = next(iter(sequence_dataset(tiny, 3, 4, 5, seed=2, start_step=2)))
    np.testing.assert_array_equal(resumed.support_x.numpy(), episodes[2].support_x.numpy())
    other = next(iter(sequence_dataset(tiny, 3, 4, 5, seed=3)))
    assert not np.array_equal(other.support_y.numpy(), episodes[0].support_y.numpy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(ways=1, instances=3), "`ways` must be an integer >= 2. Received: ways=1"),
    (dict(ways=3, instances=0), "`instances` must be an integer >= 1. Received: instances=0"),
    (dict(ways=13, instances=2), "only 12. Received: ways=13"),
    (dict(ways=3, instances=7), "has 6 images, fewer than instances=7"),
])
def test_bad_sequences_are_named(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sequence_dataset(tiny, meta_batch_size=2, **kwargs)


@pytest.mark.data
def test_omniglot_test_sequences_hold_test_alphabets(omniglot_data_dir):
    from tfmeta.data.splits import load_class_split

    split = load_class_split("omniglot", omniglot_data_dir, image_size=20)
    episode = next(iter(sequence_dataset(split.test, 5, 10, 2, seed=0)))
    assert tuple(episode.support_x.shape) == (2, 50, 20, 20, 1)
    assert {c.split("/")[0] for c in split.test.class_names} == {"Sanskrit", "Tagalog"}
