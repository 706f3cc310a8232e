"""The episodic tf.data pipeline: meta-batches of `Episode`s from a `ClassDataset`.

(`class_batch_dataset` is its twin for classifier pre-training: the same
`Episode`s with an empty support set and mini-batches of images with their
global labels as query sets.)

Element `i` of the dataset is step `start_step + i` (see Sharding below for replicas). One
`tf.numpy_function` call asks the `EpisodeSampler` for the image indices of all its
tasks and gathers them from the dataset's single contiguous image array
(`ClassDataset.gather`: two numpy fancy-index copies, uint8 pixels scaled to float32,
no per-image work in TF); labels are constants. Elements are made in parallel in a
deterministic order and prefetched.

Streaming: a source whose array is memory-mapped (the on-disk caches of
`tfmeta.data.standard`) is never read whole; each element reads only the images it
holds, so data sets larger than memory stream from disk with the same episodes as
the same array held in memory.

Sharding: with an `input_context`, each element holds one replica's slice of the
global meta-batch (see `sharding.TaskShard`); the slices of all replicas concatenate
to exactly the unsharded meta-batch.

Exit safety: a `tf.numpy_function` call still running when Python starts finalizing
deadlocks the process (TF's worker thread waits for the interpreter forever). This
happens when a script exits while an iterator is alive and prefetching. An `atexit` hook
therefore waits (at most a few seconds) until no call has run for a moment: by then the
prefetch buffers are full and TF makes no new calls.
"""

import atexit
import contextlib
import threading
import time

import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode, TaskEpisode
from tfmeta.data.sampling import ClassBatchSampler, EpisodeSampler
from tfmeta.data.sharding import TaskShard
from tfmeta.data.sources import ClassDataset

_calls_lock = threading.Lock()
_calls = {"running": 0, "last_end": 0.0}  # numpy calls in progress, time the last one ended


@contextlib.contextmanager
def _counted_call():
    """Marks a numpy call as running, for `_wait_for_numpy_calls`."""
    with _calls_lock:
        _calls["running"] += 1
    try:
        yield
    finally:
        with _calls_lock:
            _calls["running"] -= 1
            _calls["last_end"] = time.monotonic()


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
    metadata: bool = False,
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
        metadata: whether to yield `TaskEpisode`s carrying the class metadata of
            `source` (`ClassDataset.class_metadata`) in each task's label order.

    Returns:
        A `tf.data.Dataset` of `Episode` with static shapes: `support_x`
        `(B, ways*shots, H, W, C)` float32, `support_y` `(B, ways*shots)` int32,
        `query_x` `(B, ways*queries, H, W, C)` float32, `query_y` `(B, ways*queries)`
        int32. Task `t` of step `s` depends only on `(seed, s, t)`. With
        `metadata=True`: `TaskEpisode`s with the same four fields, all-ones masks
        and `metadata` float32 `(B, ways, M)`, whose row `k` of a task is the
        metadata of the class labelled `k` in it (the same episodes as without).

    Raises:
        ValueError: on `ways < 2`, `shots < 1`, `queries < 1`, a bad
            `meta_batch_size`/`start_step`/`num_steps`, fewer classes than `ways`, a
            class with fewer than `shots + queries` images, or `metadata=True` with
            a source without class metadata.

    Example:

    ```python
    train = episode_dataset(omniglot_train, ways=5, shots=1, queries=15, meta_batch_size=32)
    episode = next(iter(train))
    episode.support_x.shape   # (32, 5, 28, 28, 1)
    with_alphabets = episode_dataset(omniglot_train, 5, 1, 15, 32, metadata=True)
    next(iter(with_alphabets)).metadata.shape   # (32, 5, num_alphabets): one-hot alphabets, by label
    ```
    """
    if not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer. Received: start_step={start_step!r}")
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"`num_steps` must be None or a positive integer. Received: num_steps={num_steps!r}")
    if metadata and source.class_metadata is None:
        raise ValueError(f"`metadata=True` needs a source with class metadata; {source!r} has none. "
                         f"Received: metadata={metadata!r}, source.class_metadata=None")
    sampler = EpisodeSampler(source.class_offsets, ways, shots, queries, seed, source.class_names)
    shard = TaskShard.from_context(meta_batch_size, input_context)
    batch = shard.tasks

    def gather(element: np.int64) -> tuple[np.ndarray, ...]:
        with _counted_call():
            steps, first_task = shard.locate(int(element))
            support, query = sampler.sample_batch(start_step + steps, range(first_task, first_task + batch))
            images = (source.gather(support), source.gather(query))  # (B, N*K, H, W, C), (B, N*Q, H, W, C) float32
            if not metadata:
                return images
            # Label k owns support[:, k*K:(k+1)*K]; the class holding its first image is label k's class.
            classes = np.searchsorted(source.class_offsets, support[:, ::shots], side="right") - 1  # (B, N)
            return (*images, source.class_metadata[classes])  # ..., (B, N, M) float32

    support_y = tf.constant(np.tile(sampler.support_labels, (batch, 1)))  # (B, N*K)
    query_y = tf.constant(np.tile(sampler.query_labels, (batch, 1)))  # (B, N*Q)
    image_shape = source.image_shape

    def make(element):
        outputs = tf.numpy_function(gather, [element], (tf.float32,) * (3 if metadata else 2), stateful=False)
        support_x = tf.ensure_shape(outputs[0], (batch, ways * shots, *image_shape))
        query_x = tf.ensure_shape(outputs[1], (batch, ways * queries, *image_shape))
        episode = Episode(support_x, support_y, query_x, query_y)
        if not metadata:
            return episode
        return TaskEpisode.from_episode(episode, tf.ensure_shape(outputs[2], (batch, ways, source.metadata_dim)))

    elements = tf.data.Dataset.counter(dtype=tf.int64)
    if num_steps is not None:
        elements = elements.take(num_steps * shard.replicas)
    dataset = elements.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def class_batch_dataset(
    source: ClassDataset,
    batch_size: int,
    meta_batch_size: int = 1,
    seed: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    num_steps: int | None = None,
) -> tf.data.Dataset:
    """Classifier pre-training batches as `Episode`s: all classes, global labels, no support set.

    What the fine-tuning baselines (`tfmeta.learners.FineTuneBaseline`) train
    on, through the same loop as episodic learners: each step holds
    `meta_batch_size` "tasks", each a mini-batch of `batch_size` images (its
    query set) with their class indices in `source` (`0..num_classes-1`, the
    global labels) and an empty support set. Replicas split the tasks of a step
    as they split episodes (`input_context`), so a step is one mini-batch of
    `meta_batch_size * batch_size` images on any number of replicas. Images are
    read epoch by epoch in a seeded random order (`ClassBatchSampler`): task `t`
    of step `s` depends only on `(seed, s, t)`, and `start_step` resumes exactly.

    Args:
        source: the training classes.
        batch_size: images per task, >= 1.
        meta_batch_size: tasks per step (global, across all replicas).
        seed: non-negative integer seed; the same seed gives the same stream.
        start_step: step of the first element (to resume a run exactly).
        input_context: a `tf.distribute.InputContext` (from
            `distribute_datasets_from_function`); each element then holds
            `meta_batch_size / num_replicas` tasks.
        num_steps: None for an infinite stream, or the number of steps to yield.

    Returns:
        A `tf.data.Dataset` of `Episode` with static shapes: `support_x`
        `(B, 0, H, W, C)` float32, `support_y` `(B, 0)` int32, `query_x`
        `(B, batch_size, H, W, C)` float32, `query_y` `(B, batch_size)` int32.

    Raises:
        ValueError: on a bad `batch_size`, `meta_batch_size`, `seed`,
            `start_step` or `num_steps`.

    Example:

    ```python
    batches = class_batch_dataset(omniglot_train, batch_size=16, meta_batch_size=1, seed=0)
    batch = next(iter(batches))
    batch.query_x.shape, batch.query_y.shape   # (1, 16, 28, 28, 1), (1, 16): labels in [0, 732)
    ```
    """
    if not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer. Received: start_step={start_step!r}")
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"`num_steps` must be None or a positive integer. Received: num_steps={num_steps!r}")
    shard = TaskShard.from_context(meta_batch_size, input_context)
    sampler = ClassBatchSampler(source.class_offsets, batch_size, meta_batch_size, seed)
    tasks = shard.tasks

    def gather(element: np.int64) -> tuple[np.ndarray, np.ndarray]:
        with _counted_call():
            steps, first_task = shard.locate(int(element))
            index, labels = sampler.sample_batch(start_step + steps, range(first_task, first_task + tasks))
            return source.gather(index), labels  # (B, batch_size, H, W, C) float32, (B, batch_size) int32

    image_shape = source.image_shape

    def make(element):
        images, labels = tf.numpy_function(gather, [element], (tf.float32, tf.int32), stateful=False)
        images = tf.ensure_shape(images, (tasks, batch_size, *image_shape))
        labels = tf.ensure_shape(labels, (tasks, batch_size))
        return Episode(tf.zeros((tasks, 0, *image_shape)), tf.zeros((tasks, 0), tf.int32), images, labels)

    elements = tf.data.Dataset.counter(dtype=tf.int64)
    if num_steps is not None:
        elements = elements.take(num_steps * shard.replicas)
    dataset = elements.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
