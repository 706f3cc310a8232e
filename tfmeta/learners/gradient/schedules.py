"""Schedules of the gradient family, as pure functions of the loop's step.

* `multi_step_loss_weights`: MAML++'s annealed weights of the query losses
  after each inner step.
* `cosine_annealing`: MAML++'s cosine-annealed meta learning rate.
"""

import keras
import tensorflow as tf


def multi_step_loss_weights(step, steps: int, anneal_steps: int, dtype=tf.float32):
    """Weights of the query losses after inner steps `1..steps` (MAML++, Antoniou et al., 2019).

    ```
    progress = step / anneal_steps
    w_s = max(1/n - progress/n, 0.03/n)                   for s < n      (n = steps)
    w_n = min(1/n + (n-1) progress/n, 1 - (n-1) 0.03/n)
    ```

    Uniform at `step = 0`; the non-final weights decay linearly to `0.03 / n`
    over `anneal_steps` meta-updates while the final one grows. The sum is 1.

    Args:
        step: the loop's meta-update counter (int scalar or tensor).
        steps: the number of inner steps `n` (static, >= 1).
        anneal_steps: meta-updates over which the weights are annealed (>= 1).
        dtype: dtype of the weights.

    Returns:
        A `(steps,)` tensor.

    Example:

    ```python
    multi_step_loss_weights(50, steps=5, anneal_steps=100)   # [0.1, 0.1, 0.1, 0.1, 0.6]
    ```
    """
    progress = tf.cast(step, dtype) / tf.cast(anneal_steps, dtype)
    n = tf.cast(steps, dtype)
    floor = 0.03 / n
    non_final = tf.maximum(1.0 / n - progress / n, floor)
    final = tf.minimum(1.0 / n + (n - 1.0) * progress / n, 1.0 - (n - 1.0) * floor)
    return tf.concat([tf.fill([steps - 1], non_final), [final]], axis=0)


def cosine_annealing(initial_learning_rate: float, total_steps: int, min_learning_rate: float = 0.0):
    """Cosine-annealed meta learning rate (MAML++, Antoniou et al., 2019).

    ```
    lr(step) = min_lr + (initial_lr - min_lr) * (1 + cos(pi * min(step, total) / total)) / 2
    ```

    Args:
        initial_learning_rate: learning rate at step 0.
        total_steps: steps over which the rate decays to `min_learning_rate`.
        min_learning_rate: final learning rate (MAML++ uses 1e-5).

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule` to give to an optimizer.

    Raises:
        ValueError: if `total_steps` is not positive, or the rates are not
            `0 <= min_learning_rate <= initial_learning_rate`.

    Example:

    ```python
    optimizer = keras.optimizers.Adam(cosine_annealing(1e-3, 60000, 1e-5))
    ```
    """
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"`total_steps` must be a positive integer. Received: total_steps={total_steps!r}")
    if not 0.0 <= min_learning_rate <= initial_learning_rate or initial_learning_rate <= 0:
        raise ValueError(
            "Rates must satisfy 0 <= min_learning_rate <= initial_learning_rate and initial_learning_rate > 0. "
            f"Received: initial_learning_rate={initial_learning_rate}, min_learning_rate={min_learning_rate}"
        )
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate, decay_steps=total_steps, alpha=min_learning_rate / initial_learning_rate
    )
