"""Sinusoid regression tasks (Finn et al., 2017), as an episodic `tf.data.Dataset`.

Each task is `y = A * sin(x - phase)` with `A ~ U[0.1, 5]`, `phase ~ U[0, pi]` and
inputs `x ~ U[-5, 5]`. Tasks are drawn with TensorFlow's stateless random ops, seeded
by `(seed, step)`: task `t` of step `s` is row `t` of one draw, so it is a pure function
of `(seed, s, t)` (for given `shots` and `queries`) and does not depend on the
meta-batch size (up to float rounding in the last bit). Resuming at `start_step` reproduces the stream exactly.
"""

import math

import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.data.sharding import TaskShard


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def _check_range(**ranges):
    for name, bounds in ranges.items():
        if len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise ValueError(f"`{name}` must be a pair (low, high) with low <= high. Received: {name}={bounds!r}")


def sinusoid_tasks(
    shots: int,
    queries: int,
    meta_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """An infinite stream of meta-batches of sinusoid regression tasks.

    Args:
        shots: support points per task, `K`.
        queries: query points per task, `Q`.
        meta_batch_size: tasks per element, `B`.
        seed: integer seed; the same seed gives the same stream.
        start_step: step number of the first element (to resume a run).
        amplitude: `(low, high)` of the uniform amplitude `A`.
        phase: `(low, high)` of the uniform phase.
        x_range: `(low, high)` of the uniform inputs `x`.
        input_context: a `tf.distribute.InputContext` (from
            `distribute_datasets_from_function`). The global meta-batch of each
            step is cut into one slice of
            `B = meta_batch_size / num_replicas_in_sync` tasks per replica;
            this pipeline yields, in turn, the slices of the replicas it feeds
            (replica `r` gets tasks `r*B .. (r+1)*B - 1`), so the union over
            replicas is exactly the unsharded meta-batch.

    Returns:
        A `tf.data.Dataset` of batched `Episode`s with static shapes:
        `support_x`, `support_y` `(B, K, 1)` float32 and `query_x`, `query_y`
        `(B, Q, 1)` float32. Without `input_context`, element `i` is step
        `start_step + i`; with it, elements `i*R .. i*R + R-1` are the slices
        of step `start_step + i` for this pipeline's `R` replicas.

    Raises:
        ValueError: if `shots`, `queries` or `meta_batch_size` is not a positive
            integer, `start_step` is negative, a range has `low > high`, or
            `meta_batch_size` does not divide among the replicas.

    Example:

    ```python
    tasks = sinusoid_tasks(shots=10, queries=10, meta_batch_size=25, seed=1)
    episode = next(iter(tasks))
    episode.support_x.shape   # (25, 10, 1)
    ```
    """
    _check_positive(shots=shots, queries=queries, meta_batch_size=meta_batch_size)
    if not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer. Received: start_step={start_step!r}")
    _check_range(amplitude=amplitude, phase=phase, x_range=x_range)
    low = tf.constant([amplitude[0], phase[0]] + [x_range[0]] * (shots + queries), tf.float32)
    high = tf.constant([amplitude[1], phase[1]] + [x_range[1]] * (shots + queries), tf.float32)

    shard = TaskShard.from_context(meta_batch_size, input_context)
    batch = shard.tasks

    def make_element(element):
        # Element -> (step, first task of the slice); without sharding: (start_step + element, 0).
        steps, first_task = shard.locate(element)
        step = start_step + steps
        draw = tf.random.stateless_uniform(
            [meta_batch_size, 2 + shots + queries], seed=tf.stack([tf.cast(seed, tf.int64), step])
        )
        draw = low + (high - low) * draw  # (meta_batch_size, 2 + K + Q)
        amp, phi, x = draw[:, :1], draw[:, 1:2], draw[:, 2:]
        y = amp * tf.sin(x - phi)  # (meta_batch_size, K + Q)
        # The whole meta-batch is computed, then sliced: bitwise the same values as
        # unsharded (vectorised sin may differ in the last bit on another shape).
        x, y = x[first_task:first_task + batch, :, None], y[first_task:first_task + batch, :, None]
        x, y = tf.ensure_shape(x, (batch, shots + queries, 1)), tf.ensure_shape(y, (batch, shots + queries, 1))
        return Episode(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])

    elements = tf.data.Dataset.counter(dtype=tf.int64)
    return elements.map(make_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )
