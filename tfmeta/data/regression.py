"""Sinusoid regression tasks (Finn et al., 2017), as an episodic `tf.data.Dataset`.

Each task is `y = A * sin(x - phase)` with `A ~ U[0.1, 5]`, `phase ~ U[0, pi]` and
inputs `x ~ U[-5, 5]`. Tasks are drawn with TensorFlow's stateless random ops, seeded
by `(seed, step)`: task `t` of step `s` is row `t` of one draw, so it is a pure function
of `(seed, s, t)` (for given `shots` and `queries`) and does not depend on the
meta-batch size (up to float rounding in the last bit). Resuming at `start_step` reproduces the stream exactly.

Task metadata (`metadata_noise`): each task can also carry its description, the
amplitude and the phase, with Gaussian noise of a given standard deviation (0: exact),
as a `TaskEpisode`; learners that condition on it (CNP, HyperNetwork) can then predict
from the description alone (`shots=0`). `min_shots` draws the number of support points
per task (uniform in `min_shots..shots`, a prefix mask), so that one learner is trained
for every context size from `min_shots` up.
"""

import math

import tensorflow as tf

from tfmeta.data.episode import Episode, TaskEpisode
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
    metadata_noise: float | None = None,
    min_shots: int | None = None,
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
        metadata_noise: None: no metadata (plain `Episode`s). A number >= 0:
            `TaskEpisode`s whose `metadata` `(B, 2)` is `[amplitude, phase]`
            plus Gaussian noise of this standard deviation (0: exact); `shots`
            may then be 0 (zero-shot: the description alone).
        min_shots: None: `shots` support points per task. An integer in
            `[0, shots]`: `TaskEpisode`s whose number of support points is
            drawn per task, uniform in `min_shots..shots`; the support is
            padded to `shots` (zeros) and `support_mask` marks the real points.

    Returns:
        A `tf.data.Dataset` of batched `Episode`s with static shapes:
        `support_x`, `support_y` `(B, K, 1)` float32 and `query_x`, `query_y`
        `(B, Q, 1)` float32. Without `input_context`, element `i` is step
        `start_step + i`; with it, elements `i*R .. i*R + R-1` are the slices
        of step `start_step + i` for this pipeline's `R` replicas. With
        `metadata_noise` or `min_shots`: `TaskEpisode`s, with `support_mask`
        `(B, K)`, `query_mask` `(B, Q)` (ones) and `metadata` `(B, 2)` (or
        `(B, 0)` without metadata). The support and query points and the
        tasks are the same as without them (the extra draws use other seeds).

    Raises:
        ValueError: if `shots` (0 is allowed with metadata), `queries` or
            `meta_batch_size` is not a positive integer, `start_step` is
            negative, a range has `low > high`, `metadata_noise` is negative,
            `min_shots` is outside `[0, shots]`, or `meta_batch_size` does not
            divide among the replicas.

    Example:

    ```python
    tasks = sinusoid_tasks(shots=10, queries=10, meta_batch_size=25, seed=1)
    episode = next(iter(tasks))
    episode.support_x.shape   # (25, 10, 1)
    ```
    """
    if metadata_noise is not None and (isinstance(metadata_noise, bool) or not isinstance(metadata_noise, (int, float))
                                       or not metadata_noise >= 0):
        raise ValueError(f"`metadata_noise` must be None or a number >= 0. Received: metadata_noise={metadata_noise!r}")
    if metadata_noise is not None and shots == 0:  # zero-shot: the description alone
        _check_positive(queries=queries, meta_batch_size=meta_batch_size)
    else:
        _check_positive(shots=shots, queries=queries, meta_batch_size=meta_batch_size)
    if min_shots is not None and (not isinstance(min_shots, int) or isinstance(min_shots, bool)
                                  or not 0 <= min_shots <= shots):
        raise ValueError(f"`min_shots` must be None or an integer in [0, shots={shots}]. Received: min_shots={min_shots!r}")
    task_episodes = metadata_noise is not None or min_shots is not None
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
        key = tf.stack([tf.cast(seed, tf.int64), step])
        draw = tf.random.stateless_uniform([meta_batch_size, 2 + shots + queries], seed=key)
        draw = low + (high - low) * draw  # (meta_batch_size, 2 + K + Q)
        amp, phi, x = draw[:, :1], draw[:, 1:2], draw[:, 2:]
        y = amp * tf.sin(x - phi)  # (meta_batch_size, K + Q)
        # The whole meta-batch is computed, then sliced: bitwise the same values as
        # unsharded (vectorised sin may differ in the last bit on another shape).
        x, y = x[first_task:first_task + batch, :, None], y[first_task:first_task + batch, :, None]
        x, y = tf.ensure_shape(x, (batch, shots + queries, 1)), tf.ensure_shape(y, (batch, shots + queries, 1))
        episode = Episode(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
        if not task_episodes:
            return episode
        # Extra draws under keys of their own: the tasks and points above do not change.
        if metadata_noise is None:
            metadata = tf.zeros([batch, 0], tf.float32)
        else:
            noise = tf.random.stateless_normal([meta_batch_size, 2], seed=tf.random.experimental.stateless_fold_in(key, 1))
            metadata = (draw[:, :2] + metadata_noise * noise)[first_task:first_task + batch]  # (B, 2)
        support_mask = tf.ones([batch, shots], tf.float32)
        if min_shots is not None:
            u = tf.random.stateless_uniform([meta_batch_size], seed=tf.random.experimental.stateless_fold_in(key, 2))
            counts = min_shots + tf.minimum(tf.cast(u * (shots - min_shots + 1), tf.int32), shots - min_shots)
            support_mask = tf.cast(tf.range(shots)[None, :] < counts[first_task:first_task + batch, None], tf.float32)
        return TaskEpisode(episode.support_x * support_mask[..., None], episode.support_y * support_mask[..., None],
                           episode.query_x, episode.query_y, support_mask, tf.ones([batch, queries], tf.float32),
                           metadata)

    elements = tf.data.Dataset.counter(dtype=tf.int64)
    return elements.map(make_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )
