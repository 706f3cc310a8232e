"""`DynamicLossScale`: float16 loss scaling done by the loop, in the open.

Under `mixed_float16` small gradients underflow in 16 bits. The loop
differentiates `loss * scale`, reduces the scaled gradients across replicas,
divides them by `scale`, and applies them only if every one is finite:

```
finite:   apply; after `growth_interval` finite steps in a row, scale *= 2
overflow: skip the update (the optimizer's step counter does not move); scale /= 2
```

This is Keras's `LossScaleOptimizer` policy (same initial scale, growth
interval and factors). tfmeta does it in the loop rather than through that
optimizer because the loop applies gradients it has already averaged across
replicas, in cross-replica context, which `LossScaleOptimizer.apply` refuses
(it reduces gradients itself, in replica context).
"""

import tensorflow as tf


class DynamicLossScale(tf.Module):
    """A dynamic loss scale: a variable the loop multiplies the loss by.

    Args:
        initial_scale: the starting scale (Keras: 2**15).
        growth_interval: finite steps in a row before the scale doubles (Keras: 2000).

    Example:

    ```python
    scale = DynamicLossScale()
    grads = [g / scale.scale for g in scaled_grads]
    finite = scale.all_finite(grads)
    scale.update(finite)       # double after 2000 finite steps, halve on overflow
    ```
    """

    def __init__(self, initial_scale: float = 2.0**15, growth_interval: int = 2000):
        super().__init__(name="loss_scale")
        # Mirrored under a strategy; assigned in cross-replica context, so every copy holds the same value.
        self.scale = tf.Variable(float(initial_scale), dtype=tf.float32, trainable=False, name="scale",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps",
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.growth_interval = int(growth_interval)

    @staticmethod
    def all_finite(grads) -> tf.Tensor:
        """Whether every gradient is finite (a boolean scalar)."""
        return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads]))

    def unscale(self, grads) -> list:
        """`grads / scale`, in each gradient's dtype."""
        return [g / tf.cast(self.scale, g.dtype) for g in grads]

    def update(self, finite) -> None:
        """Doubles the scale after `growth_interval` finite steps in a row; halves it on overflow."""
        grow = tf.logical_and(finite, tf.equal(self.good_steps + 1, self.growth_interval))
        self.scale.assign(tf.where(grow, self.scale * 2.0, tf.where(finite, self.scale, self.scale / 2.0)))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1,
                                        tf.zeros_like(self.good_steps)))
