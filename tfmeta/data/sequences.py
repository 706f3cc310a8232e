"""Label-offset sequences (Santoro et al. 2016): the tasks of the recurrent classifiers (MANN).

A task is one sequence of `ways * instances` examples: `ways` classes drawn without
replacement, `instances` distinct images of each, shuffled together. The labels
`0..ways-1` are a fresh random assignment of the drawn classes in every sequence (the
`i`-th class drawn is label `i`, and the draw is a random order), so a learner cannot
store a class -> label map across tasks: it must bind each label to its class within
the sequence. At step `t` the learner sees image `x_t` and the label of step `t-1`
(`previous_labels`: one-hot, zeros at `t = 0`), and predicts the label of `x_t`.

```
time     0      1      2      3     ...
input    x_0    x_1    x_2    x_3
         0      y_0    y_1    y_2         (one-hot; the label arrives one step late)
target   y_0    y_1    y_2    y_3
```

The presentation index of step `t` (`presentation_indices`) says which instance of
its class `x_t` is: 1 for the first time the class appears in the sequence, 2 for
the second, ...; accuracy by instance (Santoro et al.'s table) groups the steps by it.

As for the few-shot episodes, choosing a sequence (`SequenceSampler`, seeded numpy, a
pure function of `(seed, step, task)`) is kept apart from reading it
(`sequence_dataset`, tf.data). A sequence travels as an `Episode` so that the
meta-training loop, the evaluator and `tf.distribute` take it unchanged:
`support_x` `(T, H, W, C)` and `support_y` `(T,)` are the sequence in order, and the
query set is empty (`(0, H, W, C)`, `(0,)`): the recurrent learners score every step
of the sequence online (see `tfmeta.learners.recurrent.mann`).
"""

import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.data.pipeline import _counted_call
from tfmeta.data.sharding import TaskShard
from tfmeta.data.sources import ClassDataset


def check_sequence_shape(ways, instances) -> None:
    """Raises ValueError unless `ways >= 2` and `instances >= 1` are integers."""
    for name, value, low in (("ways", ways, 2), ("instances", instances, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")


def presentation_indices_np(labels) -> np.ndarray:
    """Numpy twin of `presentation_indices` for one sequence `(T,)` -> `(T,)` int32 (1-based)."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.int32)
    seen = {}
    for t, label in enumerate(labels.tolist()):
        seen[label] = seen.get(label, 0) + 1
        out[t] = seen[label]
    return out


def presentation_indices(labels, ways: int):
    """Which presentation of its class each step is (1st, 2nd, ...).

    Args:
        labels: int `(..., T)` labels in `0..ways-1`.
        ways: the number of classes.

    Returns:
        int32 `(..., T)`: at step `t`, 1 + the number of earlier steps with the
        same label.

    Example:

    ```python
    presentation_indices([2, 0, 2, 2, 0], ways=3)   # [1, 1, 2, 3, 2]
    ```
    """
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), ways, dtype=tf.int32)  # (..., T, ways)
    counts = tf.cumsum(one_hot, axis=-2)  # presentations so far, including step t
    return tf.reduce_sum(counts * one_hot, axis=-1)


def previous_labels(labels, ways: int, dtype=tf.float32):
    """The label inputs of a sequence: at step `t` the one-hot label of step `t-1`, zeros at `t = 0`.

    Args:
        labels: int `(..., T)` labels in `0..ways-1`.
        ways: the number of classes.
        dtype: of the one-hot vectors.

    Returns:
        `(..., T, ways)`.

    Example:

    ```python
    previous_labels([2, 0, 1], ways=3)   # [[0, 0, 0], [0, 0, 1], [1, 0, 0]]
    ```
    """
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), ways, dtype=dtype)  # (..., T, ways)
    rank = len(one_hot.shape)
    paddings = [[0, 0]] * (rank - 2) + [[1, 0], [0, 0]]
    return tf.pad(one_hot, paddings)[..., :-1, :]


class SequenceSampler:
    """Draws label-offset sequences: `ways` classes, `instances` images each, shuffled.

    Each task draws from its own generator seeded by `(seed, step, task)`:

    1. `ways` distinct classes without replacement, in random order: label `i`
       is the `i`-th class drawn (so labels are reshuffled in every sequence);
    2. `instances` distinct images of each class, without replacement;
    3. a random order of the `ways * instances` (image, label) pairs.

    Args:
        class_offsets: int `(num_classes + 1,)` (see `ClassDataset.class_offsets`).
        ways: classes per sequence, >= 2.
        instances: images per class in a sequence, >= 1.
        seed: non-negative integer seed.
        class_names: optional names, used in error messages.

    Raises:
        ValueError: if `ways` or `instances` is out of range, there are fewer
            classes than `ways`, or a class has fewer than `instances` images.

    Example:

    ```python
    sampler = SequenceSampler(dataset.class_offsets, ways=5, instances=10, seed=0)
    index, labels, presentation = sampler.sample(step=0, task=0)   # each (50,)
    ```
    """

    def __init__(self, class_offsets, ways: int, instances: int, seed: int = 0, class_names=None):
        check_sequence_shape(ways, instances)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
        self._offsets = np.asarray(class_offsets, np.int64)
        self._counts = np.diff(self._offsets)
        if len(self._counts) < ways:
            raise ValueError(f"A sequence needs `ways` distinct classes but there are only {len(self._counts)}. "
                             f"Received: ways={ways}")
        short = np.flatnonzero(self._counts < instances)
        if len(short):
            c = int(short[0])
            name = class_names[c] if class_names is not None else f"#{c}"
            raise ValueError(f"Class {name!r} has {self._counts[c]} images, fewer than instances={instances} "
                             f"({len(short)} such classes); images are never repeated in a sequence.")
        self.ways, self.instances, self.seed = int(ways), int(instances), int(seed)
        self.length = self.ways * self.instances

    def sample(self, step: int, task: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Task `task` of step `step`: image indices, labels and presentation indices, each `(T,)`."""
        rng = np.random.default_rng((self.seed, int(step), int(task)))
        classes = rng.choice(len(self._counts), self.ways, replace=False)  # label i -> classes[i]
        counts = self._counts[classes]
        keys = rng.random((self.ways, int(counts.max())))
        keys[np.arange(keys.shape[1]) >= counts[:, None]] = np.inf
        picks = np.argsort(keys, axis=1)[:, : self.instances]  # (ways, instances) distinct images
        index = (self._offsets[classes][:, None] + picks).reshape(-1)
        labels = np.repeat(np.arange(self.ways, dtype=np.int32), self.instances)
        order = rng.permutation(self.length)
        labels = labels[order]
        return index[order], labels, presentation_indices_np(labels)

    def sample_batch(self, step: int, tasks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tasks `tasks` of step `step`: `(B, T)` indices, labels and presentation indices."""
        index, labels, presentation = zip(*(self.sample(step, t) for t in tasks))
        return np.stack(index), np.stack(labels), np.stack(presentation)


def sequence_dataset(
    source: ClassDataset,
    ways: int,
    instances: int,
    meta_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    num_steps: int | None = None,
) -> tf.data.Dataset:
    """Meta-batches of label-offset sequences as `Episode`s (the sequence in the support set).

    Args:
        source: the classes to draw from.
        ways: classes per sequence, >= 2 (Santoro et al.: 5 or 15).
        instances: images per class, >= 1 (Santoro et al.: 10 for 5 classes).
        meta_batch_size: sequences per step (global, across all replicas).
        seed: non-negative integer seed; the same seed gives the same stream.
        start_step: step of the first element (to resume a run exactly).
        input_context: a `tf.distribute.InputContext`; each element then holds
            this replica's share of the meta-batch (`TaskShard`).
        num_steps: None for an infinite stream, or the number of steps to yield.

    Returns:
        A `tf.data.Dataset` of `Episode`: `support_x` `(B, T, H, W, C)` float32 (the
        images in sequence order, `T = ways * instances`), `support_y` `(B, T)`
        int32 (their labels), `query_x` `(B, 0, H, W, C)`, `query_y` `(B, 0)`.
        The label inputs and presentation indices follow from `support_y`
        (`previous_labels`, `presentation_indices`). Task `t` of step `s` depends
        only on `(seed, s, t)`.

    Raises:
        ValueError: on `ways < 2`, `instances < 1`, a bad `start_step`/`num_steps`,
            fewer classes than `ways`, or a class with fewer than `instances` images.

    Example:

    ```python
    train = sequence_dataset(omniglot_train, ways=5, instances=10, meta_batch_size=16)
    episode = next(iter(train))
    episode.support_x.shape   # (16, 50, 28, 28, 1)
    previous_labels(episode.support_y, 5).shape   # (16, 50, 5)
    ```
    """
    if not isinstance(start_step, int) or isinstance(start_step, bool) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer. Received: start_step={start_step!r}")
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"`num_steps` must be None or a positive integer. Received: num_steps={num_steps!r}")
    sampler = SequenceSampler(source.class_offsets, ways, instances, seed, source.class_names)
    shard = TaskShard.from_context(meta_batch_size, input_context)
    batch, length = shard.tasks, sampler.length
    image_shape = source.image_shape

    def gather(element: np.int64) -> tuple[np.ndarray, np.ndarray]:
        with _counted_call():
            steps, first_task = shard.locate(int(element))
            index, labels, _ = sampler.sample_batch(start_step + steps, range(first_task, first_task + batch))
            return source.gather(index), labels  # (B, T, H, W, C) float32, (B, T) int32

    def make(element):
        images, labels = tf.numpy_function(gather, [element], (tf.float32, tf.int32), stateful=False)
        images = tf.ensure_shape(images, (batch, length, *image_shape))
        labels = tf.ensure_shape(labels, (batch, length))
        return Episode(images, labels, tf.zeros((batch, 0, *image_shape), tf.float32), tf.zeros((batch, 0), tf.int32))

    elements = tf.data.Dataset.counter(dtype=tf.int64)
    if num_steps is not None:
        elements = elements.take(num_steps * shard.replicas)
    dataset = elements.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
