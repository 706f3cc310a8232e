"""Learning-rate schedules for the outer loop."""

import keras


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
