"""The `Episode`: one few-shot task (or a meta-batch of tasks)."""

from typing import NamedTuple

import tensorflow as tf


class Episode(NamedTuple):
    """A few-shot task: a labelled support set and a labelled query set.

    Classification episodes hold images and integer labels relabelled
    `0..way-1` in a shuffled order; regression episodes (sinusoids) hold
    inputs `x` and float targets `y` of shape `(..., 1)`. The same tuple holds
    a single task or a meta-batch of tasks, with a leading `tasks` axis.

    Attributes:
        support_x: `(way * shots, *example_shape)` or
            `(tasks, way * shots, *example_shape)`.
        support_y: `(way * shots,)` int32 labels, or `(..., 1)` float targets.
        query_x: `(way * queries, *example_shape)`, with the same leading axes.
        query_y: labels or targets of the query examples.

    Example:

    ```python
    episode = next(iter(dataset))        # a meta-batch of 5-way 1-shot tasks
    episode.support_x.shape              # (32, 5, 28, 28, 1)
    task = episode.task(0)               # the first task alone
    ```
    """

    support_x: tf.Tensor
    support_y: tf.Tensor
    query_x: tf.Tensor
    query_y: tf.Tensor

    @property
    def is_batched(self) -> bool:
        """Whether the episode holds a leading `tasks` axis."""
        return self.support_y.shape.rank == (2 if self.support_y.dtype.is_integer else 3)

    @property
    def num_tasks(self) -> int:
        """Number of tasks in a batched episode (static), 1 otherwise."""
        return int(self.support_y.shape[0]) if self.is_batched else 1

    @property
    def support_size(self) -> int:
        """Support examples per task (static): `way * shots`."""
        return int(self.support_y.shape[1 if self.is_batched else 0])

    @property
    def query_size(self) -> int:
        """Query examples per task (static): `way * queries`."""
        return int(self.query_y.shape[1 if self.is_batched else 0])

    @property
    def way(self) -> int:
        """Classes per task, read from the support labels (eager tensors only)."""
        if not self.support_y.dtype.is_integer:
            raise ValueError(
                "`way` is defined for classification episodes only. "
                f"Received: support_y.dtype={self.support_y.dtype}"
            )
        return int(tf.reduce_max(self.support_y)) + 1

    @property
    def shots(self) -> int:
        """Support examples per class: `support_size // way`."""
        return self.support_size // self.way

    @property
    def queries(self) -> int:
        """Query examples per class: `query_size // way`."""
        return self.query_size // self.way

    def task(self, index: int) -> "Episode":
        """Returns task `index` of a batched episode as an unbatched `Episode`."""
        if not self.is_batched:
            raise ValueError("`task()` needs a batched episode (with a leading tasks axis).")
        return Episode(*(t[index] for t in self))
