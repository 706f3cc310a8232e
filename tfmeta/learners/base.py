"""The one contract every tfmeta learner implements: `Learner`.

The training loop, the evaluator, `tf.distribute` and the exporter use this
class's methods and properties and nothing else. A learner of any family
implements three methods:

```
adapt(support_x, support_y, steps=None, training=True) -> task_state
predict(task_state, x, training=True)                  -> outputs (logits or predictions)
task_loss(episode, step=None, training=True)           -> TaskLoss(loss, metrics, state)
```

`task_state` is whatever the learner keeps about a task, as a nest of tensors:
fast weights (`Weights`, gradient family), prototypes or a fitted head (metric
family), a context encoding or generated weights (amortized family), a memory
(recurrent family). `task_loss` is the query loss after adapting to the
support set, differentiable with respect to `meta_variables`; the loop
differentiates it (`meta_gradients`). The loop owns the step counter and
passes it in (`step`: the number of meta-updates applied so far); derivative
order and loss scale are arguments too: nothing is switched while tracing.

Episodes may be `TaskEpisode`s (padded points under masks, a task description in
`metadata`): the evaluator and the exporter adapt through `adapt_task`, which
takes the mask and the metadata too (by default it drops the padded support
points and ignores the metadata), and score with the query mask. Learners that
condition on metadata set `metadata_dim`; probabilistic regressors
(`probabilistic = True`) predict `{"mean", "stddev"}`.
"""

import abc
import inspect
import os
from typing import NamedTuple

import keras
import tensorflow as tf

from tfmeta.data.episode import Episode, TaskEpisode

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)


class Weights(NamedTuple):
    """Values for a network's variables, in `model.trainable_variables` /
    `model.non_trainable_variables` order, as `Model.stateless_call` takes them.

    Attributes:
        trainable: list of tensors, one per trainable variable.
        non_trainable: list of tensors (e.g. BatchNorm moving statistics).
    """

    trainable: list
    non_trainable: list


class TaskLoss(NamedTuple):
    """What `Learner.task_loss` returns for one task.

    Attributes:
        loss: scalar query loss after adaptation (what the loop differentiates).
        metrics: dict of scalar metrics, keyed by `Learner.metric_names()`.
        state: new values of `Learner.state_variables` after the task (e.g.
            BatchNorm moving statistics), in that order.
    """

    loss: tf.Tensor
    metrics: dict
    state: list


def masked_mean(values, mask=None):
    """The mean of `values` `(n,)` over the entries where `mask` `(n,)` is 1 (all: None).

    0 where the mask is all zeros (no NaN).
    """
    if mask is None:
        return tf.reduce_mean(values)
    mask = tf.cast(mask, values.dtype)
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), tf.ones([], values.dtype))


def task_loss_and_metrics(task: str, outputs, labels, mask=None):
    """Loss and metrics of one task's predictions (cross-entropy or squared error).

    Args:
        task: `"classification"` (logits `(n, way)`, int labels `(n,)`) or
            `"regression"` (predictions and targets `(n, 1)`).
        outputs: the learner's outputs.
        labels: the true labels or targets.
        mask: optional `(n,)`, 1 for a real query, 0 for padding (padded
            queries count for nothing).

    Returns:
        `(loss, metrics)`: the mean loss (scalar) and a dict with `accuracy`
        (classification) or `mse` (regression); float32 for 16-bit outputs
        (mixed precision).

    Raises:
        ValueError: if `task` is unknown.

    Example:

    ```python
    loss, metrics = task_loss_and_metrics("classification", logits, labels)
    metrics["accuracy"]
    ```
    """
    if outputs.dtype in (tf.float16, tf.bfloat16):  # mixed precision: losses and metrics in float32
        outputs = tf.cast(outputs, tf.float32)
    if task == CLASSIFICATION:
        labels = tf.cast(labels, tf.int32)
        loss = masked_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=outputs), mask)
        correct = tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), labels)
        return loss, {"accuracy": masked_mean(tf.cast(correct, outputs.dtype), mask)}
    if task == REGRESSION:
        squared = tf.square(outputs - tf.cast(labels, outputs.dtype))
        loss = masked_mean(tf.reduce_mean(squared, axis=-1), mask) if mask is not None else tf.reduce_mean(squared)
        return loss, {"mse": loss}
    raise ValueError(f"`task` must be one of {TASKS}. Received: task={task!r}")


def check_steps(name: str, value, allow_zero: bool = False) -> int:
    """Returns `value` if it is a positive (or, with `allow_zero`, non-negative) int.

    Raises:
        ValueError: otherwise, naming `name`.
    """
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be a {kind} integer. Received: {name}={value!r}")
    return value


def check_positive(name: str, value) -> float:
    """Returns `value` as a float if it is a positive number (a learning rate, a scale).

    Raises:
        ValueError: otherwise, naming `name`.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return float(value)


def parallel_tasks() -> int:
    """How many tasks of a meta-batch run at once (`tf.map_fn`'s `parallel_iterations`).

    TensorFlow's inter-op thread count (the ops it can run at once; by default
    one per schedulable CPU), at most 10 (`tf.map_fn`'s default). Every task in
    flight holds its query activations and their gradients (~100 MB for Conv-4,
    5-way 1-shot, 15 queries): with 10 in flight on 2 threads, up to 10 tasks'
    working memory was alive while only 2 ran, for no speed
    (`benchmarks.meta_step`: peak RSS 2.0 GB -> 1.1 GB under `MirroredStrategy`
    on 2 logical CPUs, no slower).
    """
    threads = tf.config.threading.get_inter_op_parallelism_threads()
    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(10, threads))


def map_over_tasks(fn, episodes: Episode, output_signature):
    """Runs `fn(task_episode)` on every task of a meta-batch with `tf.map_fn`.

    One trace of `fn`, whatever the number of tasks; `parallel_tasks()` tasks
    run at once inside one compiled step.

    Args:
        fn: `(Episode) -> outputs` for one unbatched task (a `TaskEpisode`
            for a batched `TaskEpisode`).
        episodes: a batched `Episode` or `TaskEpisode` (leading tasks axis).
        output_signature: the structure of `fn`'s outputs as `tf.TensorSpec`s.

    Returns:
        `fn`'s outputs stacked along a new leading tasks axis.
    """
    kind = type(episodes) if isinstance(episodes, TaskEpisode) else Episode
    return tf.map_fn(lambda task: fn(kind(*task)), tuple(episodes), fn_output_signature=output_signature,
                     parallel_iterations=parallel_tasks())


def _takes_training(model: keras.Model) -> bool:
    """Whether `model.call` accepts a `training` argument (a subclassed model may not).

    Read from the signature of the model's own `call` (public Python API), as
    Keras itself decides whether to pass `training`.
    """
    return "training" in inspect.signature(model.call).parameters


class Learner(abc.ABC):
    """Base class of every meta-learner (gradient, metric, amortized, recurrent).

    Subclasses implement `adapt`, `predict` and `task_loss`. The defaults
    here cover the rest: `meta_gradients` (the mean over a meta-batch of the
    gradients of `task_loss`), the variables (the network's trainable ones are
    meta-learned, its non-trainable ones are state), evaluation of one task,
    the loss and metrics of the task type, and a description for checkpoints,
    summaries and model cards. A learner whose meta-update is not the gradient
    of a loss (Reptile) overrides `meta_gradients`; a learner with more
    meta-learned variables than its network's (learned inner learning rates, a
    relation module) lists them in `extra_variables`.

    Args:
        model: the learner's (main) network, a built `keras.Model`. Its input
            shape is the example shape of the exports.
        task: `"classification"` or `"regression"`.
        name: the registry name (`tfmeta.learners.build`), shown in configs
            and model cards; default: the class name in lower case.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if `model` is not built or `task` is unknown.

    Example (a complete learner: "adapt" by remembering the mean support target):

    ```python
    class MeanOfSupport(tfmeta.learners.Learner):
        def adapt(self, support_x, support_y, steps=None, training=True):
            return tf.reduce_mean(support_y)                    # the task state
        def predict(self, task_state, x, training=True):
            outputs, _ = self.call_network(self.initial_weights(), x, training)
            return outputs + task_state
        def task_loss(self, episode, step=None, training=True):
            state = self.adapt(episode.support_x, episode.support_y)
            outputs = self.predict(state, episode.query_x, training)
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
            return TaskLoss(loss, metrics, self.current_state())

    learner = MeanOfSupport(tfmeta.models.mlp(), task="regression")
    grads, metrics, state = learner.meta_gradients(episodes, step=0)
    ```
    """

    # Whether one classification export serves any number of classes per
    # request (metric learners) rather than the fixed head size `ways`.
    any_ways = False
    # Whether the network runs with `training=True` at evaluation and in served
    # models: BatchNorm on the batch's statistics (transductive, as MAML is
    # evaluated), or on its moving statistics (metric learners, as Snell et al.).
    # None: the learner's parts choose for themselves when `adapt`/`predict` get
    # `training=None` (an `Ensemble`: each member its own); the evaluator and the
    # exporters pass it on as it is.
    training_at_test = True
    # Whether `embed` maps examples to the space the learner compares in (metric
    # learners): exports then also serve an `embed` signature.
    has_embedding = False
    # Whether `predict` returns a Gaussian `{"mean": (n, 1), "stddev": (n, 1)}` per
    # query (probabilistic regressors: Neural Processes) instead of `(n, 1)`
    # predictions; regression exports then also serve `stddev`.
    probabilistic = False
    # The size `M` of the task description the learner conditions on (`adapt_task`'s
    # `metadata`: `(M,)` per regression task, `(ways, M)` per classification task), or
    # None: the learner ignores metadata. Exports of learners that use it take
    # `task_metadata`, and the support set may then be empty.
    metadata_dim = None

    def __init__(self, model: keras.Model, task: str = CLASSIFICATION, name: str | None = None):
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
        if not model.built:
            raise ValueError(
                "`model` must be built (call it once on an input, or give it an `Input`). "
                f"Received: model={model.name!r} (not built)"
            )
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}. Received: task={task!r}")
        self.model = model
        self.task = task
        self.name = name or type(self).__name__.lower()
        self._network_takes_training = _takes_training(model)

    # ------------------------------------------------------------ the contract

    @abc.abstractmethod
    def adapt(self, support_x, support_y, steps=None, training: bool = True):
        """Adapts to one task's support set, starting from the meta-learned state.

        Args:
            support_x: `(support_size, *example_shape)` inputs.
            support_y: `(support_size,)` int labels or `(support_size, 1)` targets.
            steps: adaptation steps, for learners that adapt in steps
                (`eval_steps` is not None); None: the learner's default.
                Learners that adapt in one pass refuse a number.
            training: passed to the network (BatchNorm uses batch statistics
                when True).

        Returns:
            The task state, a nest of tensors, that `predict` takes.
        """

    @abc.abstractmethod
    def predict(self, task_state, x, training: bool = True):
        """Outputs for `x` under a task state: logits `(n, ways)` or predictions `(n, 1)`."""

    @abc.abstractmethod
    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        """Query loss of one (unbatched) task after adaptation on its support set.

        Differentiable with respect to `meta_variables`.

        Args:
            episode: one task.
            step: the loop's meta-update counter (int64 scalar), for learners
                with schedules; None outside meta-training.
            training: passed to the network.

        Returns:
            A `TaskLoss`.
        """

    def adapt_task(self, support_x, support_y, support_mask=None, metadata=None, steps=None, training: bool = True):
        """Adapts to one task given as a `TaskEpisode` gives it: a padded support set and metadata.

        What the evaluator and the exporter call. The default drops the padded
        support examples (`support_mask == 0`) and ignores `metadata`, then
        calls `adapt`; learners that use masks or metadata (the amortized
        family) override it.

        Args:
            support_x, support_y: the (padded) support set.
            support_mask: `(S,)` 1 for a real support example, 0 for padding;
                None: all real.
            metadata: the task's description (`(M,)`, or `(ways, M)` for a
                classification task), or None.
            steps, training: as in `adapt`.

        Returns:
            The task state (what `predict` takes).
        """
        if support_mask is not None:
            keep = tf.cast(support_mask, tf.bool)
            support_x, support_y = tf.boolean_mask(support_x, keep), tf.boolean_mask(support_y, keep)
        return self.adapt(support_x, support_y, steps=steps, training=training)

    # ------------------------------------------------------------- variables

    @property
    def extra_variables(self) -> list:
        """Meta-learned variables besides the network's trainable ones."""
        return []

    @property
    def meta_variables(self) -> list:
        """What the outer optimizer updates: the network's trainable variables, then `extra_variables`."""
        return list(self.model.trainable_variables) + list(self.extra_variables)

    @property
    def state_variables(self) -> list:
        """Non-trainable state that `TaskLoss.state` is assigned to, in order
        (default: the network's non-trainable variables, BatchNorm moving
        statistics). The loop averages it across tasks and replicas."""
        return list(self.model.non_trainable_variables)

    @property
    def variables(self) -> list:
        """Every variable of the learner (checkpointed and exported): the
        network's, then `extra_variables`, then `state_variables`, each once."""
        out, seen = [], set()
        for v in list(self.model.variables) + list(self.extra_variables) + list(self.state_variables):
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    def current_state(self) -> list:
        """The current values of `state_variables` (what a task that changes no state returns)."""
        return [v.value for v in self.state_variables]

    def initial_weights(self) -> Weights:
        """The network's current (meta-learned) values as `Weights` of tensors."""
        return Weights(
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
        )

    # ------------------------------------------------------------- the network

    def call_network(self, weights: Weights, x, training: bool = True, model: keras.Model | None = None):
        """Runs a network on explicit values (`Model.stateless_call`).

        Args:
            weights: the values to run with (`Weights`).
            x: the inputs.
            training: passed to networks whose `call` takes it.
            model: the network (default: `self.model`).

        Returns:
            `(outputs, new_non_trainable)`.
        """
        model = self.model if model is None else model
        takes_training = self._network_takes_training if model is self.model else _takes_training(model)
        if takes_training:
            return model.stateless_call(weights.trainable, weights.non_trainable, x, training=training)
        return model.stateless_call(weights.trainable, weights.non_trainable, x)

    @property
    def input_shape(self) -> tuple | None:
        """Shape of one example, from the network's `Input` (None if it has none)."""
        if not self.model.inputs:
            return None
        shape = tuple(self.model.inputs[0].shape[1:])
        return None if any(d is None for d in shape) else tuple(int(d) for d in shape)

    @property
    def ways(self) -> int | None:
        """Classes per task a classification export serves: the size of the
        network's output (fixed head), or None for `any_ways` learners and
        regression."""
        if self.task != CLASSIFICATION or self.any_ways:
            return None
        return int(self.model.outputs[0].shape[-1]) if self.model.outputs else None

    def embed(self, x, training: bool = False):
        """Embeddings `(n, E)` of examples, for learners with `has_embedding`.

        Raises:
            NotImplementedError: for learners without an embedding.
        """
        raise NotImplementedError(f"{type(self).__name__} has no embedding (has_embedding is False).")

    # ------------------------------------------------------------ evaluation

    @property
    def eval_steps(self) -> int | None:
        """Default adaptation steps at evaluation, for learners that adapt in
        steps (gradient family); None for learners that adapt in one pass
        (the evaluator then evaluates once, without a step count)."""
        return None

    def check_adapt_steps(self, steps) -> None:
        """Refuses a step count for a learner that adapts in one pass.

        Raises:
            ValueError: if `steps` is not None and `eval_steps` is None.
        """
        if steps is not None and self.eval_steps is None:
            raise ValueError(
                f"{type(self).__name__} adapts in one pass: it takes no number of adaptation steps. "
                f"Received: steps={steps!r}"
            )

    def loss_and_metrics(self, outputs, targets, mask=None):
        """Query loss and metrics of a task's outputs (default: `task_loss_and_metrics`).

        Args:
            outputs: what `predict` returned.
            targets: the query labels or targets.
            mask: optional `(n,)` query mask (1 real, 0 padding).
        """
        return task_loss_and_metrics(self.task, outputs, targets, mask)

    def metric_names(self) -> tuple:
        """Names of the metrics `loss_and_metrics` returns (besides `loss`)."""
        return ("accuracy",) if self.task == CLASSIFICATION else ("mse",)

    def selection_metric(self) -> tuple[str, bool]:
        """The metric that selects the best checkpoint (`--select=best`): `(name,
        higher_is_better)`; accuracy for classification, MSE for regression."""
        return ("accuracy", True) if self.task == CLASSIFICATION else ("mse", False)

    def metrics_dtype(self) -> tf.DType:
        """dtype of metrics over tasks: float64 for a float64 network, float32
        otherwise (also under mixed precision)."""
        variables = self.model.trainable_variables
        return tf.float64 if variables and variables[0].dtype == "float64" else tf.float32

    def evaluate_task(self, episode: Episode, steps=None, training: bool = True):
        """Adapts to one task's support set (`adapt_task`) and scores its query set.

        Args:
            episode: one `Episode`, or a `TaskEpisode` (its masks and metadata are used).
            steps, training: as in `adapt`.

        Returns:
            `(loss, metrics)` on the (real) queries.
        """
        task_state = self.adapt_task(episode.support_x, episode.support_y, episode.support_mask, episode.metadata,
                                     steps=steps, training=training)
        outputs = self.predict(task_state, episode.query_x, training=training)
        if episode.query_mask is None:
            return self.loss_and_metrics(outputs, episode.query_y)
        return self.loss_and_metrics(outputs, episode.query_y, mask=episode.query_mask)

    # ----------------------------------------------------------- meta-batches

    def meta_gradients(self, episodes: Episode, step=None, training: bool = True, loss_scale=None):
        """Mean meta-gradient of `task_loss` over a meta-batch of tasks.

        Args:
            episodes: a batched `Episode` (leading tasks axis).
            step: the loop's meta-update counter, passed to `task_loss`.
            training: passed to the network.
            loss_scale: optional scalar: differentiate `loss * loss_scale`
                (mixed_float16 loss scaling; the gradients come back scaled,
                the metrics do not).

        Returns:
            `(grads, metrics, state)`: gradients aligned with `meta_variables`
            and metrics (`loss` and `metric_names()`) averaged over tasks, and
            the new values of `state_variables` averaged over tasks
            (non-float values, e.g. seed-generator states, from the first task).
        """
        return self.mean_gradients(lambda task: self.task_loss(task, step=step, training=training),
                                   episodes, loss_scale)

    def mean_gradients(self, task_loss_fn, episodes: Episode, loss_scale=None):
        """`meta_gradients` for any per-task loss: one outer tape per task
        inside `tf.map_fn`, then the mean over tasks.

        Args:
            task_loss_fn: `(Episode) -> TaskLoss` for one task.
            episodes: a batched `Episode`.
            loss_scale: as in `meta_gradients`.

        Returns:
            `(grads, metrics, state)` as `meta_gradients`.
        """
        meta_vars = self.meta_variables

        def one_task(task):
            with tf.GradientTape() as tape:
                result = task_loss_fn(task)
                scaled = result.loss if loss_scale is None else result.loss * tf.cast(loss_scale, result.loss.dtype)
            grads = tape.gradient(scaled, meta_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return grads, result

        return self.mean_over_tasks(one_task, episodes, meta_vars)

    def mean_over_tasks(self, one_task, episodes: Episode, variables):
        """Runs `one_task` on every task of a meta-batch and averages.

        Args:
            one_task: `(Episode) -> (values, TaskLoss)`, `values` aligned with
                `variables` (gradients, or Reptile's displacements).
            episodes: a batched `Episode`.
            variables: the variables `values` are shaped like.

        Returns:
            `(values, metrics, state)` averaged over tasks (non-float state
            from the first task).
        """
        names = self.metric_names()
        dtype = self.metrics_dtype()

        def body(task):
            values, result = one_task(task)
            return values, self._metrics(result.loss, result.metrics, names, dtype), list(result.state)

        signature = (
            [tf.TensorSpec(v.shape, v.dtype) for v in variables],
            {name: tf.TensorSpec([], dtype) for name in ("loss",) + tuple(names)},
            [tf.TensorSpec(v.shape, v.dtype) for v in self.state_variables],
        )
        values, metrics, state = map_over_tasks(body, episodes, signature)  # each (tasks, ...)
        mean = lambda t: tf.reduce_mean(t, axis=0)
        state = [mean(s) if s.dtype.is_floating else s[0] for s in state]
        return [mean(v) for v in values], {k: mean(m) for k, m in metrics.items()}, state

    def evaluate_tasks(self, episodes: Episode, steps=None, training: bool = True) -> dict:
        """Per-task query metrics of a meta-batch (`evaluate_task` on each task).

        Returns:
            `{name: (tasks,) tensor}` for `loss` and `metric_names()`.
        """
        names = self.metric_names()
        dtype = self.metrics_dtype()

        def body(task):
            loss, metrics = self.evaluate_task(task, steps=steps, training=training)
            return self._metrics(loss, metrics, names, dtype)

        signature = {name: tf.TensorSpec([], dtype) for name in ("loss",) + tuple(names)}
        return map_over_tasks(body, episodes, signature)

    @staticmethod
    def _metrics(loss, metrics, names, dtype) -> dict:
        out = {name: tf.cast(metrics[name], dtype) for name in names}
        out["loss"] = tf.cast(loss, dtype)
        return out

    # ------------------------------------------------------------ description

    def config(self) -> dict:
        """JSON-serialisable description (configs, checkpoints, model cards)."""
        return {"learner": self.name, "class": type(self).__name__, "task": self.task}

    def scalars(self) -> dict:
        """Learner-specific scalars for TensorBoard and model cards (e.g. learned
        inner learning rates): `{name: float}`; none by default."""
        return {}

    def card(self) -> dict:
        """What an export's model card says about the learner: its `config()`
        and, where the learner has them, more fields (inner learning rates)."""
        card = {"algorithm": self.config()}
        if self.probabilistic:
            card["probabilistic"] = True
        if self.metadata_dim is not None:
            card["metadata_dim"] = int(self.metadata_dim)
        return card
