"""`task_stream`: a `tf.data` stream of RL task parameters seeded by `(seed, step)`.

Shared by the bandit and MDP families: element `i` holds the parameters of the tasks
of step `start_step + i` (or this pipeline's slice of them under `tf.distribute`, see
`tfmeta.data.sharding`) and a seed for the environments' own randomness during the
trial (rewards, transitions).
"""

from typing import Any, Callable, NamedTuple

import tensorflow as tf

from tfmeta.data.sharding import TaskShard


class RLTasks(NamedTuple):
    """A meta-batch of RL tasks.

    Attributes:
        params: the task parameters (a nested structure of `(tasks, ...)` tensors, e.g.
            `BanditParams` or `MDPParams`).
        seed: `(2,)` int64 seed for the environments' randomness during the trial
            (`env.reset(params, seed)`).
    """

    params: Any
    seed: tf.Tensor


def task_stream(
    sample: Callable[[tf.Tensor, int], Any],
    meta_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """An infinite stream of `RLTasks`.

    Task `t` of step `s` is row `t` of `sample(seed_of(seed, s), meta_batch_size)`, a
    pure function of `(seed, s, t)`: the global meta-batch is drawn, then sliced. The
    rollout seed is a function of `(seed, s)` and of the first task of the slice, so
    the slices of one step have independent environment noise.

    Args:
        sample: `sample(seed, num_tasks) -> params`, a stateless sampler (`(2,)` seed).
        meta_batch_size: tasks per step (global across replicas).
        seed: integer seed.
        start_step: step number of the first element.
        input_context: a `tf.distribute.InputContext`, or None.

    Returns:
        A `tf.data.Dataset` of `RLTasks` with static shapes.

    Raises:
        ValueError: if `meta_batch_size` is not a positive integer dividing among the
            replicas, or `start_step` is negative.
    """
    if not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer. Received: start_step={start_step!r}")
    shard = TaskShard.from_context(meta_batch_size, input_context)
    seed = int(seed)

    def make_element(element):
        steps, first_task = shard.locate(element)
        keys = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), start_step + steps]), 2
        )
        params = sample(keys[0], meta_batch_size)
        params = tf.nest.map_structure(
            lambda t: tf.ensure_shape(t[first_task:first_task + shard.tasks], [shard.tasks] + t.shape[1:]), params
        )
        rollout = tf.cast(tf.random.experimental.stateless_fold_in(keys[1], first_task), tf.int64)
        return RLTasks(params, tf.ensure_shape(rollout, [2]))

    elements = tf.data.Dataset.counter(dtype=tf.int64)
    return elements.map(make_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )
