"""`TaskShard`: which tasks of which step each element of an episodic dataset holds.

Under `tf.distribute`, the global meta-batch of step `s` (tasks
`0..meta_batch_size-1`) is cut into one slice of `B = meta_batch_size /
num_replicas_in_sync` tasks per replica, replica `r` getting tasks `r*B..(r+1)*B-1`.
An input pipeline feeding `R` replicas yields, in turn, the slices of its replicas:
its elements `i*R .. i*R + R-1` are the slices of step `start_step + i`. So the slices
of all replicas concatenate to exactly the unsharded meta-batch, and no task is drawn
twice. Without an input context there is one slice: the whole meta-batch.
"""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class TaskShard:
    """The slice of every step's meta-batch that one input pipeline yields.

    Attributes:
        tasks: tasks per element (per replica), `B`.
        replicas: replicas this pipeline feeds, `R` (elements per step).
        first_replica: the first replica this pipeline feeds.

    Example:

    ```python
    shard = TaskShard.from_context(32, tf.distribute.InputContext(2, 1, 2))
    shard.tasks                 # 16
    shard.locate(3)             # (3, 16): step start_step + 3, tasks 16..31
    ```
    """

    tasks: int
    replicas: int = 1
    first_replica: int = 0

    @classmethod
    def from_context(cls, meta_batch_size: int, input_context: tf.distribute.InputContext | None = None) -> "TaskShard":
        """The shard of `input_context` (the whole meta-batch if None).

        Raises:
            ValueError: if `meta_batch_size` is not a positive integer or does not
                divide evenly among the replicas.
        """
        if not isinstance(meta_batch_size, int) or isinstance(meta_batch_size, bool) or meta_batch_size < 1:
            raise ValueError(
                f"`meta_batch_size` must be a positive integer. Received: meta_batch_size={meta_batch_size!r}"
            )
        if input_context is None:
            return cls(meta_batch_size)
        if meta_batch_size % input_context.num_replicas_in_sync:
            raise ValueError(
                f"`meta_batch_size` must divide evenly among {input_context.num_replicas_in_sync} replicas. "
                f"Received: meta_batch_size={meta_batch_size}"
            )
        replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        return cls(
            tasks=input_context.get_per_replica_batch_size(meta_batch_size),
            replicas=replicas,
            first_replica=input_context.input_pipeline_id * replicas,
        )

    def locate(self, element):
        """`(steps after start_step, first task)` of element `element` (an int or an int tensor)."""
        return element // self.replicas, (self.first_replica + element % self.replicas) * self.tasks
