"""The one interface every tfmeta algorithm implements.

The training loop, the evaluator, `tf.distribute` and the exporters talk only
to `Algorithm`. Everything is explicit over weights: `adapt` returns *fast
weights* (plain tensors) and never writes the learner's variables.
"""

import abc
from typing import NamedTuple

import keras
import tensorflow as tf

from tfmeta.data.episode import Episode

CLASSIFICATION = "classification"
REGRESSION = "regression"


class Weights(NamedTuple):
    """Values for the learner's variables, in `model.trainable_variables` /
    `model.non_trainable_variables` order, as `Model.stateless_call` takes them.

    Attributes:
        trainable: list of tensors, one per trainable variable of the learner.
        non_trainable: list of tensors (e.g. BatchNorm moving statistics).
    """

    trainable: list
    non_trainable: list


def task_loss_and_metrics(task: str, outputs, labels):
    """Loss and metrics of one task's predictions.

    Args:
        task: `"classification"` (logits `(n, way)`, int labels `(n,)`) or
            `"regression"` (predictions and targets `(n, 1)`).
        outputs: the learner's outputs.
        labels: the true labels or targets.

    Returns:
        `(loss, metrics)`: the mean loss (scalar) and a dict with `accuracy`
        (classification) or `mse` (regression); float32 for 16-bit outputs
        (mixed precision).

    Raises:
        ValueError: if `task` is unknown.
    """
    if outputs.dtype in (tf.float16, tf.bfloat16):  # mixed precision: losses and metrics in float32
        outputs = tf.cast(outputs, tf.float32)
    if task == CLASSIFICATION:
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=outputs)
        )
        correct = tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
        return loss, {"accuracy": tf.reduce_mean(tf.cast(correct, outputs.dtype))}
    if task == REGRESSION:
        loss = tf.reduce_mean(tf.square(outputs - tf.cast(labels, outputs.dtype)))
        return loss, {"mse": loss}
    raise ValueError(f"`task` must be 'classification' or 'regression'. Received: task={task!r}")


class Algorithm(abc.ABC):
    """Base class of meta-learning algorithms.

    Subclasses implement `adapt`, `predict` and `task_loss`; the default
    `meta_gradients` averages per-task gradients of `task_loss` over a
    meta-batch with `tf.map_fn` (one outer tape per task inside the map
    body, which keeps the graph small and compiles fast). Algorithms whose
    meta-update is not a gradient of a loss (Reptile) override it.

    Args:
        model: the learner, any built `keras.Model`.
        task: `"classification"` or `"regression"`.

    Example:

    ```python
    algo = tfmeta.algorithms.MAML(model, inner_steps=1, inner_lr=0.4)
    fast = algo.adapt(episode.support_x, episode.support_y)
    logits = algo.predict(fast, episode.query_x)
    ```
    """

    def __init__(self, model: keras.Model, task: str = CLASSIFICATION):
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
        if not model.built:
            raise ValueError(
                "`model` must be built (call it once on an input, or give it an `Input`). "
                f"Received: model={model.name!r} (not built)"
            )
        if task not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"`task` must be 'classification' or 'regression'. Received: task={task!r}")
        self.model = model
        self.task = task

    # ------------------------------------------------------------------ state

    @property
    def extra_variables(self) -> list:
        """Meta-learned variables besides the model's (e.g. inner learning rates)."""
        return []

    @property
    def state_variables(self) -> list:
        """Variables that the non-trainable values returned by `task_loss` and
        `meta_gradients` are assigned to, in order. By default the learner's
        `non_trainable_variables`; algorithms that keep their own state (MAML++
        per-step BatchNorm statistics) return theirs."""
        return list(self.model.non_trainable_variables)

    @property
    def meta_variables(self) -> list:
        """Everything the outer optimizer updates: model weights, then extras."""
        return list(self.model.trainable_variables) + list(self.extra_variables)

    def initial_weights(self) -> Weights:
        """The current meta-learned initialisation as a `Weights` of tensors."""
        return Weights(
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
        )

    def config(self) -> dict:
        """JSON-serialisable description (for checkpoints' config and model cards)."""
        return {"algorithm": type(self).__name__, "task": self.task}

    # -------------------------------------------------------------- interface

    def call_model(self, weights: Weights, x, training: bool = True):
        """Runs the learner on `weights`: returns `(outputs, new_non_trainable)`."""
        return self.stateless_forward(weights.trainable, weights.non_trainable, x, training=training)

    def stateless_forward(self, trainable, non_trainable, x, training: bool = True):
        """`model.stateless_call` on explicit values; `training` is passed only to
        models whose `call` takes it (a subclassed model may not)."""
        if getattr(self.model, "_call_has_training_arg", True):
            return self.model.stateless_call(trainable, non_trainable, x, training=training)
        return self.model.stateless_call(trainable, non_trainable, x)

    @abc.abstractmethod
    def adapt(self, support_x, support_y, steps=None, training: bool = True):
        """Adapts to one task's support set, starting from the meta-parameters.

        Args:
            support_x: `(support_size, *example_shape)` inputs.
            support_y: `(support_size,)` labels or `(support_size, 1)` targets.
            steps: number of inner steps (None: the algorithm's default).
            training: passed to the learner (BatchNorm uses batch statistics
                when True).

        Returns:
            The adapted state that `predict` takes (fast `Weights` for the
            MAML family, prototypes for metric learners).
        """

    @abc.abstractmethod
    def predict(self, adapted, x, training: bool = True):
        """Outputs (logits or predictions) for `x` under an adapted state."""

    @abc.abstractmethod
    def task_loss(self, episode: Episode, training: bool = True):
        """Query loss of one (unbatched) task after adaptation on its support.

        Differentiable with respect to `meta_variables`.

        Returns:
            `(loss, metrics, non_trainable)`: scalar loss, dict of scalar
            metrics, and the learner's non-trainable values after the task
            (moving statistics), in `model.non_trainable_variables` order.
        """

    def metric_names(self) -> tuple:
        """Names of the per-task metrics `task_loss` returns (besides `loss`)."""
        return ("accuracy",) if self.task == CLASSIFICATION else ("mse",)

    def metrics_dtype(self) -> tf.DType:
        """dtype of the metrics `meta_gradients` returns: float64 for a float64
        learner (its layers' dtype, not the model's policy), float32 otherwise."""
        variables = self.model.trainable_variables
        if variables and variables[0].dtype == "float64":
            return tf.float64
        return tf.float32

    def meta_gradients(self, episodes: Episode, training: bool = True, loss_scale=None):
        """Mean meta-gradient over a meta-batch of tasks.

        Args:
            episodes: a batched `Episode` with a leading tasks axis.
            training: passed to the learner.
            loss_scale: optional scalar: differentiate `loss * loss_scale`
                (mixed_float16 loss scaling; the gradients come back scaled,
                the metrics do not).

        Returns:
            `(grads, metrics, non_trainable)`: gradients aligned with
            `meta_variables` (averaged over tasks), metrics (`loss` and
            `metric_names()`) averaged over tasks, and the non-trainable
            values (aligned with `state_variables`) averaged over tasks
            (non-float values, e.g. seed-generator states, are taken from
            the first task).
        """
        meta_vars = self.meta_variables
        state_vars = self.state_variables

        def one_task(task):
            # One outer tape per task inside the map_fn body.
            with tf.GradientTape() as tape:
                loss, metrics, state = self.task_loss(Episode(*task), training=training)
                scaled = loss if loss_scale is None else loss * tf.cast(loss_scale, loss.dtype)
            grads = tape.gradient(scaled, meta_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return grads, loss, metrics, state

        return self.mean_over_tasks(one_task, episodes, meta_vars, state_vars)

    def mean_over_tasks(self, one_task, episodes: Episode, variables, state_vars):
        """Runs `one_task` on every task of a meta-batch (`tf.map_fn`) and averages.

        Args:
            one_task: `(task tuple) -> (values, loss, metrics, state)`, `values`
                aligned with `variables` (e.g. gradients), `state` with `state_vars`.
            episodes: a batched `Episode` with a leading tasks axis.
            variables: the variables `values` are shaped like.
            state_vars: the non-trainable variables `state` is shaped like.

        Returns:
            `(values, metrics, state)` averaged over tasks, as `meta_gradients`
            returns them (non-float state is taken from the first task).
        """
        dtype = self.metrics_dtype()
        names = ("loss",) + tuple(self.metric_names())

        def body(task):
            values, loss, metrics, state = one_task(task)
            metrics = {name: tf.cast(metrics[name], dtype) for name in self.metric_names()}
            metrics["loss"] = tf.cast(loss, dtype)
            return values, metrics, state

        signature = (
            [tf.TensorSpec(v.shape, v.dtype) for v in variables],
            {name: tf.TensorSpec([], dtype) for name in names},
            [tf.TensorSpec(v.shape, v.dtype) for v in state_vars],
        )
        # (tasks, ...) per output.
        values, metrics, state = tf.map_fn(body, tuple(episodes), fn_output_signature=signature)
        mean = lambda t: tf.reduce_mean(t, axis=0)
        state = [mean(s) if s.dtype.is_floating else s[0] for s in state]
        return [mean(v) for v in values], {k: mean(m) for k, m in metrics.items()}, state
