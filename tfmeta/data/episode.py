"""The `Episode`: one few-shot task (or a meta-batch of tasks); `TaskEpisode` adds masks and metadata."""

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

    # The fields a `TaskEpisode` adds; an `Episode` has none (every point is real, no metadata).
    @property
    def support_mask(self) -> None:
        """None: every support example is real (see `TaskEpisode.support_mask`)."""
        return None

    @property
    def query_mask(self) -> None:
        """None: every query example is real (see `TaskEpisode.query_mask`)."""
        return None

    @property
    def metadata(self) -> None:
        """None: no task metadata (see `TaskEpisode.metadata`)."""
        return None


class TaskEpisode(NamedTuple):
    """An `Episode` with masks for padded points and a per-task metadata tensor.

    The first four fields are an `Episode`'s; the learners, the loop, the
    evaluator and `tf.map_fn` (`tfmeta.learners.map_over_tasks`) take either
    type. Streams whose tasks have a variable number of points (GP tasks:
    3-9 context points) pad them to one static shape and mark the real ones
    in the masks; streams that describe each task (sinusoid amplitude and
    phase, Omniglot alphabets) put the description in `metadata`. Every
    field is a tensor (tf.data, `tf.distribute` and `tf.map_fn` need no
    `None`): a stream without metadata gives a zero-width `metadata`.

    Attributes:
        support_x: `([tasks,] S, *example_shape)`; zeros where padded.
        support_y: `([tasks,] S)` int32 labels or `([tasks,] S, 1)` targets.
        query_x: `([tasks,] Q, *example_shape)`.
        query_y: labels or targets of the queries.
        support_mask: `([tasks,] S)` float32, 1 for a real support example, 0 for padding.
        query_mask: `([tasks,] Q)` float32, likewise for the queries.
        metadata: float32 task description: `([tasks,] M)` for a regression task,
            `([tasks,] ways, M)` per class for a classification task; `M = 0`: none.

    Example:

    ```python
    batch = next(iter(sinusoid_tasks(5, 5, 25, metadata_noise=0.1)))
    batch.metadata.shape          # (25, 2): amplitude and phase, with noise
    batch.support_mask.shape      # (25, 5)
    ```
    """

    support_x: tf.Tensor
    support_y: tf.Tensor
    query_x: tf.Tensor
    query_y: tf.Tensor
    support_mask: tf.Tensor
    query_mask: tf.Tensor
    metadata: tf.Tensor

    @property
    def episode(self) -> Episode:
        """The support and query sets as an `Episode` (masks and metadata dropped)."""
        return Episode(self.support_x, self.support_y, self.query_x, self.query_y)

    @property
    def is_batched(self) -> bool:
        """Whether the episode holds a leading `tasks` axis."""
        return self.support_mask.shape.rank == 2

    @property
    def num_tasks(self) -> int:
        """Number of tasks in a batched episode (static), 1 otherwise."""
        return int(self.support_mask.shape[0]) if self.is_batched else 1

    @property
    def support_size(self) -> int:
        """Support slots per task (static), padding included."""
        return int(self.support_mask.shape[-1])

    @property
    def query_size(self) -> int:
        """Query slots per task (static), padding included."""
        return int(self.query_mask.shape[-1])

    @property
    def metadata_dim(self) -> int:
        """`M`, the size of one task's (or class's) description; 0: no metadata."""
        return int(self.metadata.shape[-1])

    def task(self, index: int) -> "TaskEpisode":
        """Returns task `index` of a batched episode as an unbatched `TaskEpisode`."""
        if not self.is_batched:
            raise ValueError("`task()` needs a batched episode (with a leading tasks axis).")
        return TaskEpisode(*(t[index] for t in self))

    @classmethod
    def from_episode(cls, episode: Episode, metadata=None, support_mask=None, query_mask=None) -> "TaskEpisode":
        """An `Episode` with masks (default: all ones) and metadata (default: none, zero-width).

        Args:
            episode: a batched or unbatched `Episode`.
            metadata: float `([tasks,] M)` or `([tasks,] ways, M)`, or None.
            support_mask, query_mask: float masks, or None for all ones.

        Returns:
            A `TaskEpisode`.
        """
        batch = list(episode.support_y.shape[:1]) if episode.is_batched else []

        def ones(y):
            shape = y.shape[: len(batch) + 1]
            return tf.ones(shape if shape.is_fully_defined() else tf.shape(y)[: len(batch) + 1], tf.float32)

        support_mask = ones(episode.support_y) if support_mask is None else tf.cast(support_mask, tf.float32)
        query_mask = ones(episode.query_y) if query_mask is None else tf.cast(query_mask, tf.float32)
        if metadata is None:
            metadata = tf.zeros(batch + [0], tf.float32)
        return cls(*episode, support_mask, query_mask, tf.cast(metadata, tf.float32))


def as_episode(batch):
    """An `Episode` or `TaskEpisode` from a dataset element (a 4- or 7-tuple, or either type).

    The loop, the evaluator and `map_over_tasks` call this on what a pipeline
    yields, so every consumer takes both types.

    Raises:
        ValueError: on a tuple of another length.
    """
    if isinstance(batch, (Episode, TaskEpisode)):
        return batch
    fields = tuple(batch)
    if len(fields) == len(Episode._fields):
        return Episode(*fields)
    if len(fields) == len(TaskEpisode._fields):
        return TaskEpisode(*fields)
    raise ValueError(
        f"A batch must have the fields of an Episode ({len(Episode._fields)}) or a TaskEpisode "
        f"({len(TaskEpisode._fields)}). Received: {len(fields)} fields"
    )
