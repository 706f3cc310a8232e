"""Few-shot evaluation: mean ± 95% confidence interval over many test tasks."""

import math

import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import Learner

NUM_EPISODES_KEY = "num_episodes"


def confidence_interval(values) -> tuple[float, float]:
    """Mean and 95% confidence half-width of per-episode values.

    `ci95 = 1.96 * std / sqrt(n)` with the population standard deviation
    (`ddof=0`), as in Finn et al. (2017) and most few-shot papers.

    Args:
        values: 1-D sequence of per-episode values (at least one).

    Returns:
        `(mean, ci95)` as Python floats.

    Raises:
        ValueError: if `values` is empty or not 1-D.

    Example:

    ```python
    confidence_interval([1.0, 0.0, 1.0, 0.0])   # (0.5, 0.49)
    ```
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"`values` must be a non-empty 1-D sequence. Received: shape={values.shape}")
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))


class Evaluator:
    """Evaluates a learner on test tasks, with compiled functions reused across calls.

    Every task is adapted on its support set from the learner's current
    meta-learned state (`Learner.evaluate_task`), then scored on its query set.
    Tasks come in meta-batches; one compiled function per adaptation step
    count, traced once for same-shaped meta-batches (`trace_counts`).

    Args:
        learner: a `tfmeta.learners.Learner`.
        training: passed to the network: True uses batch statistics in
            BatchNorm (as in MAML's reference code), False the moving
            statistics; None: the learner's `training_at_test`.

    Raises:
        TypeError: if `learner` is not a `Learner`.

    Example:

    ```python
    evaluator = Evaluator(maml)
    for steps in (0, 1, 5):
        print(steps, evaluator.evaluate(test_tasks, num_episodes=600, steps=steps)["accuracy"])
    ```
    """

    NUM_EPISODES_KEY = NUM_EPISODES_KEY

    def __init__(self, learner: Learner, training: bool | None = None):
        if not isinstance(learner, Learner):
            raise TypeError(f"`learner` must be a tfmeta Learner. Received: learner={type(learner).__name__}")
        self.learner = learner
        self.training = learner.training_at_test if training is None else training
        self._functions = {}
        self.trace_counts = {}  # steps -> number of Python traces

    def _function(self, steps):
        if steps not in self._functions:
            def evaluate_batch(batch):
                self.trace_counts[steps] = self.trace_counts.get(steps, 0) + 1  # Python side effect: traces only
                return self.learner.evaluate_tasks(batch, steps=steps, training=self.training)  # each (tasks,)

            self._functions[steps] = tf.function(evaluate_batch, autograph=False)
        return self._functions[steps]

    def evaluate(self, dataset, num_episodes: int = 600, steps=None) -> dict:
        """Mean ± 95% CI of each metric over `num_episodes` tasks of `dataset`.

        The dataset is iterated from its start, so calls with the same dataset
        see the same tasks (useful to compare step counts).

        Args:
            dataset: a `tf.data.Dataset` (or any iterable) of batched `Episode`s
                of unseen classes / tasks.
            num_episodes: number of tasks to score (the last batch is truncated).
            steps: adaptation steps (None: the learner's `eval_steps`); only for
                learners that adapt in steps.

        Returns:
            `{metric: (mean, ci95)}` for `loss` and the learner's metric names
            (e.g. `accuracy` or `mse`), plus `"num_episodes": n`.

        Raises:
            ValueError: if `num_episodes < 1`, `steps` is bad (or given to a
                learner that adapts in one pass), or the dataset runs out first.
        """
        results = {name: confidence_interval(values)
                   for name, values in self.episode_metrics(dataset, num_episodes, steps).items()}
        results[NUM_EPISODES_KEY] = num_episodes
        return results

    def episode_metrics(self, dataset, num_episodes: int = 600, steps=None) -> dict:
        """Each metric of each of the first `num_episodes` tasks of `dataset` (for paired comparisons).

        Args and Raises: as `evaluate`.

        Returns:
            `{metric: (num_episodes,) float64 array}`, in the dataset's task order.

        Example:

        ```python
        a = Evaluator(protonet).episode_metrics(test_tasks(), 600)["accuracy"]
        b = Evaluator(ensemble).episode_metrics(test_tasks(), 600)["accuracy"]
        confidence_interval(b - a)           # the ensemble's gain on the same tasks, ± 95% CI
        ```
        """
        if not isinstance(num_episodes, int) or isinstance(num_episodes, bool) or num_episodes < 1:
            raise ValueError(f"`num_episodes` must be a positive integer. Received: num_episodes={num_episodes!r}")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
            raise ValueError(f"`steps` must be None or an integer >= 0. Received: steps={steps!r}")
        self.learner.check_adapt_steps(steps)
        if steps is None:
            steps = self.learner.eval_steps
        function = self._function(steps)
        values, seen = {}, 0
        for batch in dataset:
            metrics = function(Episode(*batch))
            for name, value in metrics.items():
                values.setdefault(name, []).append(value.numpy())
            seen += int(next(iter(metrics.values())).shape[0])
            if seen >= num_episodes:
                break
        if seen < num_episodes:
            raise ValueError(f"The dataset ran out after {seen} episodes. Received: num_episodes={num_episodes}")
        return {name: np.concatenate(chunks)[:num_episodes].astype(np.float64) for name, chunks in values.items()}


def evaluate(learner: Learner, dataset, num_episodes: int = 600, steps=None, training: bool | None = None) -> dict:
    """Evaluates a learner on test tasks: mean ± 95% CI per metric (see `Evaluator.evaluate`).

    Each call compiles its own function; to evaluate several times, keep one
    `Evaluator`.

    Example:

    ```python
    results = evaluate(maml, test_tasks, num_episodes=600, steps=10)
    mean, ci95 = results["accuracy"]
    ```
    """
    return Evaluator(learner, training).evaluate(dataset, num_episodes, steps)


def format_results(results: dict, steps=None) -> str:
    """One readable line, e.g. `accuracy 0.9812 ± 0.0041 | loss 0.0712 ± 0.0090 (600 episodes)`."""
    hidden = {NUM_EPISODES_KEY, "loss"} if "mse" in results else {NUM_EPISODES_KEY}  # MSE is the loss
    parts = [f"{name} {value[0]:.4f} ± {value[1]:.4f}" for name, value in results.items() if name not in hidden]
    suffix = f"{results.get(NUM_EPISODES_KEY, '?')} episodes"
    if steps is not None:
        suffix += f", {steps} inner steps"
    return " | ".join(parts) + f" ({suffix})"
