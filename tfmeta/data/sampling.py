"""Choosing episodes: seeded numpy, apart from reading the data (as in meta-dataset).

An `EpisodeSampler` turns `(step, task)` into indices into a `ClassDataset`'s image
array. Each task draws from its own generator seeded by `(seed, step, task)`, so any
task of any step can be reproduced alone, in any order, on any worker:

1. `ways` distinct classes, without replacement; label `i` is the `i`-th class drawn,
   so the label order is a random permutation of the chosen classes;
2. `shots + queries` distinct images of each class, without replacement: the first
   `shots` go to the support set, the rest to the query set (so they are disjoint).

Support labels are `[0]*shots + [1]*shots + ...` and query labels likewise; they are
the same for every task (`support_labels`, `query_labels`).

A `ClassBatchSampler` draws the mini-batches of classifier pre-training instead
(fine-tuning baselines): images of all classes with their global labels, read
epoch by epoch in a seeded order, batch `task` of step `step` again a pure
function of `(seed, step, task)`.
"""

import threading

import numpy as np


def check_episode_shape(ways, shots, queries) -> None:
    """Raises ValueError unless `ways >= 2`, `shots >= 1` and `queries >= 1` are integers."""
    for name, value, low in (("ways", ways, 2), ("shots", shots, 1), ("queries", queries, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")


class EpisodeSampler:
    """Draws `ways`-way `shots`-shot episodes with `queries` queries per class.

    Args:
        class_offsets: int `(num_classes + 1,)`; class `c` owns image indices
            `class_offsets[c]:class_offsets[c + 1]` (see `ClassDataset.class_offsets`).
        ways: classes per episode, >= 2.
        shots: support examples per class, >= 1.
        queries: query examples per class, >= 1.
        seed: non-negative integer seed.
        class_names: optional names, used in error messages.

    Raises:
        ValueError: if `ways`, `shots` or `queries` is out of range, there are fewer
            classes than `ways`, or a class has fewer than `shots + queries` images
            (examples are never drawn with replacement).

    Example:

    ```python
    sampler = EpisodeSampler(dataset.class_offsets, ways=5, shots=1, queries=15, seed=0)
    support, query = sampler.sample(step=0, task=0)   # (5,), (75,) image indices
    images = dataset.images[support]                   # (5, 28, 28, 1)
    ```
    """

    def __init__(self, class_offsets, ways: int, shots: int, queries: int, seed: int = 0, class_names=None):
        check_episode_shape(ways, shots, queries)
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
        self._offsets = np.asarray(class_offsets, np.int64)
        self._counts = np.diff(self._offsets)
        num_classes = len(self._counts)
        if num_classes < ways:
            raise ValueError(
                f"An episode needs `ways` distinct classes but there are only {num_classes}. Received: ways={ways}"
            )
        short = np.flatnonzero(self._counts < shots + queries)
        if len(short):
            c = int(short[0])
            name = class_names[c] if class_names is not None else f"#{c}"
            raise ValueError(
                f"Class {name!r} has {self._counts[c]} images, fewer than shots + queries = {shots} + {queries} "
                f"= {shots + queries} ({len(short)} such classes); examples are never drawn with replacement."
            )
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, int(seed)
        self.support_labels = np.repeat(np.arange(ways, dtype=np.int32), shots)  # (ways*shots,)
        self.query_labels = np.repeat(np.arange(ways, dtype=np.int32), queries)  # (ways*queries,)

    def sample(self, step: int, task: int) -> tuple[np.ndarray, np.ndarray]:
        """Image indices of task `task` of step `step`: support `(ways*shots,)`, query `(ways*queries,)`."""
        rng = np.random.default_rng((self.seed, int(step), int(task)))
        classes = rng.choice(len(self._counts), self.ways, replace=False)  # (ways,) label i -> classes[i]
        counts = self._counts[classes]
        keys = rng.random((self.ways, int(counts.max())))  # a random order of each class's images
        keys[np.arange(keys.shape[1]) >= counts[:, None]] = np.inf  # past a class's end
        picks = np.argsort(keys, axis=1)[:, : self.shots + self.queries]  # (ways, K+Q) distinct
        index = self._offsets[classes][:, None] + picks
        return index[:, : self.shots].reshape(-1), index[:, self.shots :].reshape(-1)

    def sample_batch(self, step: int, tasks) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the tasks `tasks` (e.g. a range) of step `step`: `(B, ways*shots)`, `(B, ways*queries)`."""
        support, query = zip(*(self.sample(step, t) for t in tasks))
        return np.stack(support), np.stack(query)


class ClassBatchSampler:
    """Draws mini-batches of images with their global class labels (classifier pre-training).

    The images are read epoch after epoch, each epoch in its own random order
    (seeded by `(seed, epoch)`), as a shuffled data loader reads them: every
    image once per epoch. The stream is cut into steps of `tasks_per_step`
    batches of `batch_size` images, so batch `task` of step `step` holds the
    images at positions `((step * tasks_per_step + task) * batch_size + i)` of
    that endless sequence: any batch of any step can be drawn alone, in any
    order, on any worker. Labels are the class indices `0..num_classes-1` of the
    source (class `c` owns image indices `class_offsets[c]:class_offsets[c + 1]`).

    Args:
        class_offsets: int `(num_classes + 1,)` (see `ClassDataset.class_offsets`).
        batch_size: images per batch, >= 1.
        tasks_per_step: batches per step (the global meta-batch), >= 1.
        seed: non-negative integer seed.

    Raises:
        ValueError: on a bad `batch_size`, `tasks_per_step` or `seed`, or a source
            without images.

    Example:

    ```python
    sampler = ClassBatchSampler(dataset.class_offsets, batch_size=16, tasks_per_step=1, seed=0)
    index, labels = sampler.sample(step=0, task=0)   # (16,) image indices, (16,) global labels
    images = dataset.images[index]
    ```
    """

    def __init__(self, class_offsets, batch_size: int, tasks_per_step: int = 1, seed: int = 0):
        for name, value in (("batch_size", batch_size), ("tasks_per_step", tasks_per_step)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
        offsets = np.asarray(class_offsets, np.int64)
        self.num_images = int(offsets[-1])
        if self.num_images < 1:
            raise ValueError(f"The source holds no image. Received: class_offsets={offsets.tolist()}")
        self.num_classes = len(offsets) - 1
        self.labels = np.repeat(np.arange(self.num_classes, dtype=np.int32), np.diff(offsets))  # image -> class
        self.batch_size, self.tasks_per_step, self.seed = int(batch_size), int(tasks_per_step), int(seed)
        self._orders = {}  # epoch -> permutation (the last few epochs)
        self._lock = threading.Lock()  # tf.data calls `sample` from several threads

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order `(num_images,)` in which epoch `epoch` reads the images."""
        with self._lock:
            order = self._orders.get(epoch)
            if order is None:
                order = np.random.default_rng((self.seed, int(epoch))).permutation(self.num_images)
                if len(self._orders) >= 4:  # a step spans at most a few epochs
                    self._orders.pop(min(self._orders))
                self._orders[epoch] = order
            return order

    def sample(self, step: int, task: int) -> tuple[np.ndarray, np.ndarray]:
        """Image indices and global labels of batch `task` of step `step`: `(batch_size,)` each."""
        start = (int(step) * self.tasks_per_step + int(task)) * self.batch_size
        positions = start + np.arange(self.batch_size, dtype=np.int64)
        epochs, within = np.divmod(positions, self.num_images)
        index = np.empty(self.batch_size, np.int64)
        for epoch in np.unique(epochs):
            where = epochs == epoch
            index[where] = self.epoch_order(int(epoch))[within[where]]
        return index, self.labels[index]

    def sample_batch(self, step: int, tasks) -> tuple[np.ndarray, np.ndarray]:
        """Indices and labels of the batches `tasks` (e.g. a range) of step `step`: `(B, batch_size)` each."""
        index, labels = zip(*(self.sample(step, t) for t in tasks))
        return np.stack(index), np.stack(labels)
