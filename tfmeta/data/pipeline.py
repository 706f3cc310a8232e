"""The episodic tf.data pipeline: meta-batches of `Episode`s from a `ClassDataset`.

Element `i` of the dataset is step `start_step + i`. For each element, one
`tf.numpy_function` call asks the `EpisodeSampler` for the image indices of all its
tasks and gathers them from the dataset's single contiguous image array (two numpy
fancy-index copies, no per-image work in TF); labels are constants. Elements are made
in parallel in a deterministic order and prefetched.

Sharding: with an `input_context`, the global meta-batch of step `s` (tasks
`0..meta_batch_size-1`) is cut into one slice per replica; each input pipeline yields,
in turn, the slices of the replicas it feeds. Concatenating the slices of all
replicas gives exactly the unsharded meta-batch.

Exit safety: a `tf.numpy_function` call still running when Python starts finalizing
deadlocks the process (TF's worker thread waits for the interpreter forever). This
happens when a script exits while an iterator is alive and prefetching. An `atexit` hook
therefore waits (at most a few seconds) until no call has run for a moment: by then the
prefetch buffers are full and TF makes no new calls.
"""

import atexit
import threading
import time

import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.data.sampling import EpisodeSampler
from tfmeta.data.sources import ClassDataset

_calls_lock = threading.Lock()
_calls = {"running": 0, "last_end": 0.0}  # numpy calls in progress, time the last one ended


@atexit.register
def _wait_for_numpy_calls(quiet: float = 0.2, timeout: float = 5.0) -> None:
    """Returns once no gather has run for `quiet` seconds (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _calls_lock:
            if not _calls["running"] and time.monotonic() - _calls["last_end"] > quiet:
                return
        time.sleep(0.01)


def episode_dataset(
    source: ClassDataset,
    ways: int,
    shots: int,
    queries: int,
    meta_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    num_steps: int | None = None,
) -> tf.data.Dataset:
    """Meta-batches of `ways`-way `shots`-shot classification episodes.

    Args:
        source: the classes to draw from.
        ways: classes per task, >= 2.
        shots: support examples per class, >= 1.
        queries: query examples per class, >= 1.
        meta_batch_size: tasks per step (global, across all replicas).
        seed: non-negative integer seed; the same seed gives the same stream.
        start_step: step of the first element (to resume a run exactly).
        input_context: a `tf.distribute.InputContext` (from
            `distribute_datasets_from_function`); each element then holds
            `input_context.get_per_replica_batch_size(meta_batch_size)` tasks.
        num_steps: None for an infinite stream, or the number of steps to yield
            (e.g. a fixed set of evaluation episodes).

    Returns:
        A `tf.data.Dataset` of `Episode` with static shapes: `support_x`
        `(B, ways*shots, H, W, C)` float32, `support_y` `(B, ways*shots)` int32,
        `query_x` `(B, ways*queries, H, W, C)` float32, `query_y` `(B, ways*queries)`
        int32. Task `t` of step `s` depends only on `(seed, s, t)`.

    Raises:
        ValueError: on `ways < 2`, `shots < 1`, `queries < 1`, a bad
            `meta_batch_size`/`start_step`/`num_steps`, fewer classes than `ways`, or a
            class with fewer than `shots + queries` images.

    Example:

    ```python
    train = episode_dataset(omniglot_train, ways=5, shots=1, queries=15, meta_batch_size=32)
    episode = next(iter(train))
    episode.support_x.shape   # (32, 5, 28, 28, 1)
    ```
    """
    if not isinstance(meta_batch_size, int) or isinstance(meta_batch_size, bool) or meta_batch_size < 1:
        raise ValueError(f"`meta_batch_size` must be a positive integer. Received: meta_batch_size={meta_batch_size!r}")
    if not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer. Received: start_step={start_step!r}")
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"`num_steps` must be None or a positive integer. Received: num_steps={num_steps!r}")
    sampler = EpisodeSampler(source.class_offsets, ways, shots, queries, seed, source.class_names)

    replicas_per_pipeline, first_replica, batch = 1, 0, meta_batch_size
    if input_context is not None:
        if meta_batch_size % input_context.num_replicas_in_sync:
            raise ValueError(
                f"`meta_batch_size` must divide evenly among {input_context.num_replicas_in_sync} replicas. "
                f"Received: meta_batch_size={meta_batch_size}"
            )
        batch = input_context.get_per_replica_batch_size(meta_batch_size)
        replicas_per_pipeline = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        first_replica = input_context.input_pipeline_id * replicas_per_pipeline

    images = source.images  # (num_images, H, W, C), read-only, shared by all elements

    def gather(element: np.int64) -> tuple[np.ndarray, np.ndarray]:
        with _calls_lock:
            _calls["running"] += 1
        try:
            step = start_step + int(element) // replicas_per_pipeline
            first_task = (first_replica + int(element) % replicas_per_pipeline) * batch
            support, query = sampler.sample_batch(step, range(first_task, first_task + batch))
            return images[support], images[query]  # (B, N*K, H, W, C), (B, N*Q, H, W, C)
        finally:
            with _calls_lock:
                _calls["running"] -= 1
                _calls["last_end"] = time.monotonic()

    support_y = tf.constant(np.tile(sampler.support_labels, (batch, 1)))  # (B, N*K)
    query_y = tf.constant(np.tile(sampler.query_labels, (batch, 1)))  # (B, N*Q)
    image_shape = source.image_shape

    def make(element):
        support_x, query_x = tf.numpy_function(gather, [element], (tf.float32, tf.float32), stateful=False)
        support_x = tf.ensure_shape(support_x, (batch, ways * shots, *image_shape))
        query_x = tf.ensure_shape(query_x, (batch, ways * queries, *image_shape))
        return Episode(support_x, support_y, query_x, query_y)

    elements = tf.data.Dataset.counter(dtype=tf.int64)
    if num_steps is not None:
        elements = elements.take(num_steps * replicas_per_pipeline)
    dataset = elements.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
