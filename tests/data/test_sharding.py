"""Tests for `tfmeta.data.sharding.TaskShard`: replicas' slices tile the global meta-batch."""

import pytest
import tensorflow as tf

from tfmeta.data.sharding import TaskShard


def test_without_context_one_slice_per_step():
    shard = TaskShard.from_context(8)
    assert shard == TaskShard(tasks=8, replicas=1, first_replica=0)
    assert [shard.locate(i) for i in range(3)] == [(0, 0), (1, 0), (2, 0)]


@pytest.mark.parametrize("pipelines, replicas", [(1, 4), (2, 4), (4, 4)])
def test_slices_of_all_pipelines_tile_each_step(pipelines, replicas):
    covered = {}  # step -> first tasks
    for p in range(pipelines):
        shard = TaskShard.from_context(12, tf.distribute.InputContext(pipelines, p, replicas))
        assert shard.tasks == 3 and shard.replicas == replicas // pipelines
        for element in range(2 * shard.replicas):  # two steps
            step, first = shard.locate(element)
            covered.setdefault(step, []).append(first)
    assert {step: sorted(firsts) for step, firsts in covered.items()} == {0: [0, 3, 6, 9], 1: [0, 3, 6, 9]}


def test_locate_works_on_tensors():
    shard = TaskShard.from_context(4, tf.distribute.InputContext(1, 0, 2))
    step, first = shard.locate(tf.constant(3, tf.int64))
    assert (int(step), int(first)) == (1, 2)


@pytest.mark.parametrize(
    "meta_batch_size, context, match",
    [
        (0, None, "meta_batch_size=0"),
        (True, None, "meta_batch_size=True"),
        (6, tf.distribute.InputContext(1, 0, 4), "divide evenly among 4 replicas. Received: meta_batch_size=6"),
    ],
)
def test_bad_meta_batch_size(meta_batch_size, context, match):
    with pytest.raises(ValueError, match=match):
        TaskShard.from_context(meta_batch_size, context)
