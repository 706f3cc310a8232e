"""Few-shot evaluation: mean ± 95% confidence interval over many test tasks."""

import math

import numpy as np
import tensorflow as tf

from tfmeta.algorithms.base import task_loss_and_metrics
from tfmeta.data.episode import Episode

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


class _BatchEvaluator:
    """Compiled per-meta-batch evaluation, one trace per (steps, training, shapes)."""

    def __init__(self, algorithm):
        self.algorithm = algorithm
        self._functions = {}
        self.trace_counts = {}  # (steps, training) -> number of Python traces

    def function(self, steps, training):
        key = (steps, training)
        if key not in self._functions:
            self._functions[key] = tf.function(
                lambda batch: self._evaluate_batch(batch, steps, training), autograph=False
            )
        return self._functions[key]

    def _evaluate_batch(self, batch: Episode, steps, training):
        key = (steps, training)
        self.trace_counts[key] = self.trace_counts.get(key, 0) + 1  # Python side effect: only while tracing.
        algorithm = self.algorithm
        names = ("loss",) + tuple(algorithm.metric_names())
        dtype = algorithm.model.compute_dtype

        def one_task(task):
            task = Episode(*task)
            adapted = algorithm.adapt(task.support_x, task.support_y, steps=steps, training=training)
            outputs = algorithm.predict(adapted, task.query_x, training=training)
            loss, metrics = task_loss_and_metrics(algorithm.task, outputs, task.query_y)
            metrics = {name: tf.cast(metrics[name], dtype) for name in names[1:]}
            metrics["loss"] = tf.cast(loss, dtype)
            return metrics

        signature = {name: tf.TensorSpec([], dtype) for name in names}
        return tf.map_fn(one_task, tuple(batch), fn_output_signature=signature)  # each (tasks,)


def _evaluator(algorithm) -> _BatchEvaluator:
    # One evaluator per algorithm object, so repeated calls reuse compiled functions.
    evaluator = getattr(algorithm, "_tfmeta_evaluator", None)
    if evaluator is None:
        evaluator = _BatchEvaluator(algorithm)
        algorithm._tfmeta_evaluator = evaluator
    return evaluator


def evaluate(algorithm, dataset, num_episodes: int = 600, steps=None, training: bool = True) -> dict:
    """Evaluates an algorithm on test tasks: mean ± 95% CI per metric.

    Every task is adapted on its support set from the current meta-learned
    state, then scored on its query set. Tasks come in meta-batches (a
    compiled function per batch; same-shaped batches never retrace). The
    dataset is iterated from its start, so calls with the same dataset see
    the same tasks (useful to compare step counts).

    Args:
        algorithm: a `tfmeta.algorithms.Algorithm`.
        dataset: a `tf.data.Dataset` (or any iterable) of batched `Episode`s
            of unseen classes / tasks.
        num_episodes: number of tasks to score (the last batch is truncated).
        steps: inner steps (None: the algorithm's `eval_inner_steps` if it
            has one, else its default).
        training: passed to the learner; True (the default, as in MAML's
            reference code) uses batch statistics in BatchNorm.

    Returns:
        A dict `{metric: (mean, ci95)}` for `loss` and the algorithm's metric
        names (e.g. `accuracy` or `mse`), plus `"num_episodes": n`.
        `ci95 = 1.96 * std / sqrt(n)` over per-episode values.

    Raises:
        ValueError: if `num_episodes < 1` or the dataset runs out first.

    Example:

    ```python
    results = evaluate(maml, test_tasks, num_episodes=600, steps=10)
    mean, ci95 = results["accuracy"]
    ```
    """
    if not isinstance(num_episodes, int) or isinstance(num_episodes, bool) or num_episodes < 1:
        raise ValueError(f"`num_episodes` must be a positive integer. Received: num_episodes={num_episodes!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 0):
        raise ValueError(f"`steps` must be None or an integer >= 0. Received: steps={steps!r}")
    if steps is None:
        steps = getattr(algorithm, "eval_inner_steps", None)
    function = _evaluator(algorithm).function(steps, training)
    values, seen = {}, 0
    for batch in dataset:
        metrics = function(Episode(*batch))
        for name, value in metrics.items():
            values.setdefault(name, []).append(value.numpy())
        seen += int(next(iter(metrics.values())).shape[0])
        if seen >= num_episodes:
            break
    if seen < num_episodes:
        raise ValueError(
            f"The dataset ran out after {seen} episodes. Received: num_episodes={num_episodes}"
        )
    results = {
        name: confidence_interval(np.concatenate(chunks)[:num_episodes]) for name, chunks in values.items()
    }
    results[NUM_EPISODES_KEY] = num_episodes
    return results


def format_results(results: dict, steps=None) -> str:
    """One readable line, e.g. `accuracy 0.9812 ± 0.0041 | loss 0.0712 ± 0.0090 (600 episodes)`."""
    hidden = {NUM_EPISODES_KEY, "loss"} if "mse" in results else {NUM_EPISODES_KEY}  # MSE is the loss
    parts = [f"{name} {value[0]:.4f} ± {value[1]:.4f}" for name, value in results.items() if name not in hidden]
    suffix = f"{results.get(NUM_EPISODES_KEY, '?')} episodes"
    if steps is not None:
        suffix += f", {steps} inner steps"
    return " | ".join(parts) + f" ({suffix})"
