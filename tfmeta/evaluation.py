"""Few-shot evaluation: mean ± 95% confidence interval over many test tasks."""

import math

import numpy as np
import tensorflow as tf

from tfmeta.data.episode import as_episode
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
            dataset: a `tf.data.Dataset` (or any iterable) of batched `Episode`s or `TaskEpisode`s
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
            metrics = function(as_episode(batch))
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


def compare_with_gp_oracle(learner: Learner, dataset, num_episodes: int = 1000, kernel_metadata: bool = False,
                           training: bool | None = None) -> dict:
    """The exact GP posterior's scores on the same GP tasks as the learner's, and the gap.

    The exact GP predictive under the true kernel (`tfmeta.data.gp.gp_log_likelihood`)
    is the best any model of the targets given the context can do: the gap
    `oracle - learner` of the log-likelihood per target point, in nats, says how
    far a Neural Process is from it. Per task, the log-likelihoods are averaged
    over its real targets; means and 95% CIs are over tasks, the gap's CI over the
    paired per-task differences.

    Args:
        learner: a learner with a `log_likelihood` metric (a Neural Process); for
            other regressors only the oracle's scores are returned.
        dataset: `GPEpisode` meta-batches (kernel parameters included), e.g.
            `tfmeta.data.gp_test_tasks(...)`.
        num_episodes: tasks to score.
        kernel_metadata: give the learner the kernel parameters as task metadata.
        training: passed to the network (None: the learner's `training_at_test`).

    Returns:
        `{"gp_log_likelihood", "gp_mse"}` (and `"log_likelihood_gap"` for a
        learner with a `log_likelihood` metric) as `(mean, ci95)`, plus `"num_episodes"`.

    Raises:
        ValueError: if the dataset runs out before `num_episodes` tasks.

    Example:

    ```python
    oracle = compare_with_gp_oracle(cnp, gp_test_tasks(50, seed=1).take(20), num_episodes=1000)
    oracle["log_likelihood_gap"]     # (nats per target point, ci95)
    ```
    """
    from tfmeta.data.gp import gp_log_likelihood, gp_posterior  # noqa: PLC0415

    training = learner.training_at_test if training is None else training
    scored = "log_likelihood" in learner.metric_names()
    evaluate_batch = tf.function(lambda batch: learner.evaluate_tasks(batch, training=training), autograph=False)
    oracle, oracle_mse, gaps, seen = [], [], [], 0
    for batch in dataset:
        mask = tf.cast(batch.query_mask, tf.float64)
        count = tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)
        ll = gp_log_likelihood(batch.support_x, batch.support_y, batch.query_x, batch.query_y, batch.length_scale,
                               batch.signal_scale, context_mask=batch.support_mask, target_mask=batch.query_mask)
        task_ll = (tf.reduce_sum(ll, axis=-1) / count).numpy()  # (tasks,)
        mean, _ = gp_posterior(batch.support_x, batch.support_y, batch.query_x, batch.length_scale,
                               batch.signal_scale, context_mask=batch.support_mask)
        squared = tf.square(mean - tf.cast(batch.query_y, tf.float64))[..., 0] * mask
        oracle.append(task_ll)
        oracle_mse.append((tf.reduce_sum(squared, axis=-1) / count).numpy())
        if scored:
            learner_ll = evaluate_batch(batch.task_episode(kernel_metadata))["log_likelihood"].numpy()
            gaps.append(task_ll - learner_ll.astype(np.float64))
        seen += len(task_ll)
        if seen >= num_episodes:
            break
    if seen < num_episodes:
        raise ValueError(f"The dataset ran out after {seen} episodes. Received: num_episodes={num_episodes}")
    take = lambda chunks: np.concatenate(chunks)[:num_episodes]
    results = {"gp_log_likelihood": confidence_interval(take(oracle)), "gp_mse": confidence_interval(take(oracle_mse))}
    if scored:
        results["log_likelihood_gap"] = confidence_interval(take(gaps))
    results[NUM_EPISODES_KEY] = num_episodes
    return results


def format_gp_oracle(results: dict) -> str:
    """One line for `compare_with_gp_oracle`'s results, e.g.
    `log_likelihood 0.6812 ± 0.0301 | mse 0.0402 ± 0.0040 | gap 0.5120 ± 0.0190 nats (1000 episodes)`."""
    parts = [f"log_likelihood {results['gp_log_likelihood'][0]:.4f} ± {results['gp_log_likelihood'][1]:.4f}",
             f"mse {results['gp_mse'][0]:.4f} ± {results['gp_mse'][1]:.4f}"]
    if "log_likelihood_gap" in results:
        gap = results["log_likelihood_gap"]
        parts.append(f"gap {gap[0]:.4f} ± {gap[1]:.4f} nats per target point")
    return " | ".join(parts) + f" ({results[NUM_EPISODES_KEY]} episodes)"


def format_results(results: dict, steps=None) -> str:
    """One readable line, e.g. `accuracy 0.9812 ± 0.0041 | loss 0.0712 ± 0.0090 (600 episodes)`."""
    hidden = {NUM_EPISODES_KEY, "loss"} if "mse" in results else {NUM_EPISODES_KEY}  # MSE is the loss
    parts = [f"{name} {value[0]:.4f} ± {value[1]:.4f}" for name, value in results.items() if name not in hidden]
    suffix = f"{results.get(NUM_EPISODES_KEY, '?')} episodes"
    if steps is not None:
        suffix += f", {steps} inner steps"
    return " | ".join(parts) + f" ({suffix})"
