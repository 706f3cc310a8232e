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
"""

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
