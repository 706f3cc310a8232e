"""Tests for `tfmeta.data.sampling.EpisodeSampler`: without replacement, disjoint, pure in (seed, step, task)."""

import numpy as np
import pytest

from tfmeta.data.sampling import EpisodeSampler

OFFSETS = np.concatenate([[0], np.cumsum([20] * 30 + [16, 25])])  # 32 classes, uneven sizes


def _class_of(index):
    return np.searchsorted(OFFSETS, index, side="right") - 1


@pytest.mark.parametrize("ways, shots, queries", [(5, 1, 15), (20, 5, 11), (2, 1, 1)])
def test_episodes_are_drawn_without_replacement(ways, shots, queries):
    sampler = EpisodeSampler(OFFSETS, ways, shots, queries, seed=1)
    seen_orders = set()
    for task in range(50):
        support, query = sampler.sample(step=3, task=task)
        assert support.shape == (ways * shots,) and query.shape == (ways * queries,)
        assert not set(support) & set(query)  # disjoint
        assert len(set(support)) == len(support) and len(set(query)) == len(query)
        classes = _class_of(support).reshape(ways, shots)
        assert (classes == classes[:, :1]).all()  # label i <-> one class
        assert len(set(classes[:, 0])) == ways  # distinct classes
        np.testing.assert_array_equal(_class_of(query).reshape(ways, queries), np.repeat(classes[:, :1], queries, 1))
        seen_orders.add(tuple(classes[:, 0]))
    assert len(seen_orders) > 40  # the classes vary from task to task
    assert any(list(o) != sorted(o) for o in seen_orders)  # labels follow a shuffled class order
    np.testing.assert_array_equal(sampler.support_labels, np.repeat(np.arange(ways), shots))
    np.testing.assert_array_equal(sampler.query_labels, np.repeat(np.arange(ways), queries))


def test_uses_every_image_of_a_class_when_asked_for_all():
    offsets = np.arange(0, 16 * 5 + 1, 16)  # 5 classes of 16 images
    sampler = EpisodeSampler(offsets, 2, 6, 10, seed=0)
    for task in range(20):
        support, query = sampler.sample(0, task)
        both = np.concatenate([support.reshape(2, 6), query.reshape(2, 10)], axis=1)  # (ways, 16)
        for row in both:
            c = row[0] // 16
            assert sorted(row) == list(range(16 * c, 16 * c + 16))


def test_pure_function_of_seed_step_task():
    a = EpisodeSampler(OFFSETS, 5, 2, 3, seed=4)
    b = EpisodeSampler(OFFSETS, 5, 2, 3, seed=4)
    np.testing.assert_array_equal(a.sample(7, 2)[0], b.sample(7, 2)[0])
    batch_support, batch_query = a.sample_batch(7, range(4))
    assert batch_support.shape == (4, 10) and batch_query.shape == (4, 15)
    np.testing.assert_array_equal(batch_query[2], b.sample(7, 2)[1])
    assert not np.array_equal(a.sample(7, 2)[0], a.sample(8, 2)[0])
    assert not np.array_equal(a.sample(7, 2)[0], a.sample(7, 3)[0])
    assert not np.array_equal(a.sample(7, 2)[0], EpisodeSampler(OFFSETS, 5, 2, 3, seed=5).sample(7, 2)[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ways=1), r"ways.*>= 2\. Received: ways=1"),
        (dict(shots=0), r"shots.*>= 1\. Received: shots=0"),
        (dict(queries=0), r"queries.*>= 1\. Received: queries=0"),
        (dict(ways=33), "only 32.*Received: ways=33"),
        (dict(shots=2, queries=15), r"Class 'c30' has 16 images, fewer than shots \+ queries = 2 \+ 15 = 17"),
        (dict(seed=-1), "seed=-1"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(ways=5, shots=1, queries=1, class_names=[f"c{i}" for i in range(32)]) | kwargs
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(OFFSETS, **args)
