"""`MAML`: model-agnostic meta-learning (Finn et al., 2017) and its MAML++ options.

One class covers second-order MAML, first-order MAML (`first_order=True`,
same code path) and the MAML++ options of Antoniou et al. (2019): multi-step
loss with annealed weights, learned per-layer per-step inner learning rates
(LSLR), per-step BatchNorm statistics, per-step BatchNorm weights and biases
and derivative-order annealing. ANIL and Meta-SGD subclass it and only change
which variables adapt and with which step sizes.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from tfmeta.algorithms.base import CLASSIFICATION, Algorithm, Weights, task_loss_and_metrics
from tfmeta.algorithms.inner_loop import inner_loop
from tfmeta.data.episode import Episode
from tfmeta.models.batchnorm import batch_norm_layers


def _check_steps(name, value, allow_zero=False):
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be a {kind} integer. Received: {name}={value!r}")


class MAML(Algorithm):
    """MAML: learn an initialisation that adapts in a few gradient steps.

    For each task, with `theta` the meta-parameters:

    ```
    phi_0 = theta
    phi_{s+1} = phi_s - alpha_s * grad L_support(phi_s)     # inner loop, s < steps
    meta-loss = L_query(phi_steps)                          # differentiated w.r.t. theta
    ```

    Second order by nested tapes; `first_order=True` treats the inner
    gradients as constants. BatchNorm uses batch statistics on the support
    and query sets (see `tfmeta.models.batchnorm`).

    MAML++ options (Antoniou et al., 2019), all off by default:

    * `multi_step_loss`: the meta-loss is `sum_s w_s * L_query(phi_s)` over
      steps `s = 1..steps`; the weights start uniform and are annealed over
      `msl_anneal_steps` meta-updates towards the final step (non-final
      weights decay to `0.03 / steps`), as in the paper. The counter of
      meta-updates, `meta_step`, is incremented by `meta_gradients`.
    * `learn_inner_lr`: one learned learning rate per adapted variable and
      per step (LSLR), initialised to `inner_lr`, in `extra_variables`.
    * `per_step_bn_stats`: one copy of the non-trainable state (BatchNorm
      moving statistics) per inner step (`inner_steps + 1` copies; step `s`
      reads and updates copy `min(s, inner_steps)`, the query pass the copy of
      the last step). Then `state_variables` are these stacked copies, not the
      model's variables.
    * `per_step_bn_weights` (BNWB): one copy of every BatchNorm scale and
      offset per inner step (`inner_steps + 1` copies, indexed as the
      statistics), meta-learned in `extra_variables` and not adapted by the
      inner loop. The model's own BatchNorm weights are then unused and are
      not in `meta_variables`.
    * `first_order_steps` (derivative-order annealing): the first
      `first_order_steps` meta-updates are first order, the rest second
      order. Both orders are traced once; `tf.cond` on `meta_step` runs one.

    Args:
        model: the learner, any built `keras.Model`.
        task: `"classification"` or `"regression"`.
        inner_steps: inner steps while meta-training.
        inner_lr: inner learning rate (initial value when learned).
        first_order: drop second derivatives (first-order MAML).
        eval_inner_steps: inner steps when `training=False` (None: `inner_steps`).
        adapt_variables: the trainable variables adapted in the inner loop
            (None: all). The others stay at their meta-learned values.
        learn_inner_lr: MAML++ LSLR (see above).
        multi_step_loss: MAML++ multi-step loss (see above).
        msl_anneal_steps: meta-updates over which the multi-step loss weights
            are annealed.
        per_step_bn_stats: MAML++ per-step BatchNorm statistics (see above).
        per_step_bn_weights: MAML++ per-step BatchNorm weights and biases
            (see above).
        first_order_steps: MAML++ derivative-order annealing: meta-updates
            done first order before switching to second order (0: none).

    Raises:
        ValueError: on a non-positive step count or learning rate, an
            `adapt_variables` entry that is not a trainable variable of
            `model`, or `per_step_bn_weights` on a model without trainable
            BatchNorm weights.

    Example:

    ```python
    model = tfmeta.models.conv4(ways=5)
    maml = tfmeta.algorithms.MAML(model, inner_steps=1, inner_lr=0.4)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def train_step(episodes):
        grads, metrics, state = maml.meta_gradients(episodes)
        optimizer.apply_gradients(zip(grads, maml.meta_variables))
        for variable, value in zip(maml.state_variables, state):
            variable.assign(value)
        return metrics
    ```
    """

    variant_name = "maml"

    def __init__(
        self,
        model: keras.Model,
        task: str = CLASSIFICATION,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        first_order: bool = False,
        eval_inner_steps=None,
        adapt_variables=None,
        learn_inner_lr: bool = False,
        multi_step_loss: bool = False,
        msl_anneal_steps: int = 5000,
        per_step_bn_stats: bool = False,
        per_step_bn_weights: bool = False,
        first_order_steps: int = 0,
    ):
        super().__init__(model, task)
        _check_steps("inner_steps", inner_steps)
        if eval_inner_steps is not None:
            _check_steps("eval_inner_steps", eval_inner_steps, allow_zero=True)
        _check_steps("msl_anneal_steps", msl_anneal_steps)
        _check_steps("first_order_steps", first_order_steps, allow_zero=True)
        if not isinstance(inner_lr, (int, float)) or isinstance(inner_lr, bool) or not inner_lr > 0:
            raise ValueError(f"`inner_lr` must be a positive number. Received: inner_lr={inner_lr!r}")
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.learn_inner_lr = bool(learn_inner_lr)
        self.multi_step_loss = bool(multi_step_loss)
        self.msl_anneal_steps = msl_anneal_steps
        self.per_step_bn_stats = bool(per_step_bn_stats)
        self.per_step_bn_weights = bool(per_step_bn_weights)
        self.first_order_steps = first_order_steps
        self._first_order_now = None  # set while tracing one branch of derivative-order annealing

        trainable = model.trainable_variables
        if adapt_variables is None:
            self._adapted = list(range(len(trainable)))
        else:
            index = {id(v): i for i, v in enumerate(trainable)}
            unknown = [getattr(v, "path", repr(v)) for v in adapt_variables if id(v) not in index]
            if unknown or not adapt_variables:
                raise ValueError(
                    "`adapt_variables` must be a non-empty list of trainable variables of `model`. "
                    f"Received: adapt_variables with unknown entries {unknown}"
                )
            self._adapted = sorted(index[id(v)] for v in adapt_variables)

        # Per-step BatchNorm weights and biases: {trainable index: (inner_steps + 1, ...) copies}.
        self._step_bn = {}
        if self.per_step_bn_weights:
            bn_ids = {id(v) for layer in batch_norm_layers(model) for v in layer.trainable_variables}
            for i, var in enumerate(trainable):
                if id(var) in bn_ids:
                    value = np.repeat(np.asarray(var.numpy())[None], inner_steps + 1, axis=0)
                    self._step_bn[i] = keras.Variable(value, dtype=var.dtype, name=f"step_bn_{i}")
            if not self._step_bn:
                raise ValueError(
                    "`per_step_bn_weights=True` needs BatchNorm layers with trainable scale or offset in `model`. "
                    f"Received: model {model.name!r} without any"
                )
            self._adapted = [i for i in self._adapted if i not in self._step_bn]
            if not self._adapted:
                raise ValueError(
                    "With `per_step_bn_weights=True` the BatchNorm weights are not adapted, and no other "
                    "variable is. Received: adapt_variables with BatchNorm weights only"
                )

        self._lslr = {}
        if self.learn_inner_lr:
            for i in self._adapted:
                var = trainable[i]
                self._lslr[i] = keras.Variable(
                    np.full([inner_steps], inner_lr), dtype=var.dtype, name=f"lslr_{i}"
                )
        self.meta_step = keras.Variable(
            0, dtype="int64", trainable=False, name="meta_step", aggregation="only_first_replica"
        )
        self._step_states = []
        if self.per_step_bn_stats:
            for v in model.non_trainable_variables:
                value = np.repeat(np.asarray(v.numpy())[None], inner_steps + 1, axis=0)
                self._step_states.append(
                    keras.Variable(value, dtype=v.dtype, trainable=False, name=f"step_state_{len(self._step_states)}")
                )

    # ------------------------------------------------------------------ state

    @property
    def extra_variables(self) -> list:
        """Learned inner learning rates (LSLR or Meta-SGD's), in adapted-variable
        order, then the per-step BatchNorm weights (BNWB)."""
        rates = [self._learned_rate(i) for i in self._adapted]
        return [r for r in rates if r is not None] + [self._step_bn[i] for i in sorted(self._step_bn)]

    @property
    def meta_variables(self) -> list:
        """The model's trainable variables (but the BatchNorm weights that
        per-step copies replace), then `extra_variables`."""
        trainable = self.model.trainable_variables
        return [v for i, v in enumerate(trainable) if i not in self._step_bn] + self.extra_variables

    @property
    def state_variables(self) -> list:
        """The model's non-trainable variables, or the per-step copies."""
        if self.per_step_bn_stats:
            return list(self._step_states)
        return list(self.model.non_trainable_variables)

    @property
    def adapted_variables(self) -> list:
        """The trainable variables of the learner that the inner loop adapts."""
        trainable = self.model.trainable_variables
        return [trainable[i] for i in self._adapted]

    def step_sizes(self, step: int) -> list:
        """Inner learning rates of step `step`, aligned with the trainable
        variables (None for the ones that do not adapt)."""
        sizes = [None] * len(self.model.trainable_variables)
        for i in self._adapted:
            if i in self._lslr:
                sizes[i] = self._lslr[i][min(step, self.inner_steps - 1)]
            else:
                sizes[i] = self.inner_lr
        return sizes

    def inner_learning_rates(self) -> dict:
        """Current (possibly learned) inner learning rates, for summaries and cards.

        Returns:
            `{variable path: numpy array}` for each adapted variable: shape
            `()` for a fixed rate, `(inner_steps,)` for LSLR, the variable's
            shape for Meta-SGD.
        """
        trainable = self.model.trainable_variables
        rates = {}
        for i in self._adapted:
            size = self._learned_rate(i)
            rates[trainable[i].path] = np.asarray(size.numpy() if size is not None else self.inner_lr)
        return rates

    def _learned_rate(self, i):
        return self._lslr.get(i)

    @property
    def variant(self) -> str:
        """Name of the variant, as `tfmeta.algorithms.build` takes it."""
        if (self.learn_inner_lr or self.multi_step_loss or self.per_step_bn_stats or self.per_step_bn_weights
                or self.first_order_steps):
            return "maml++"
        return "fomaml" if self.first_order else self.variant_name

    def config(self) -> dict:
        trainable = self.model.trainable_variables
        return {
            **super().config(),
            "variant": self.variant,
            "inner_steps": self.inner_steps,
            "eval_inner_steps": self.eval_inner_steps,
            "inner_lr": self.inner_lr,
            "first_order": self.first_order,
            "adapt_variables": [trainable[i].path for i in self._adapted],
            "learn_inner_lr": self.learn_inner_lr,
            "multi_step_loss": self.multi_step_loss,
            "msl_anneal_steps": self.msl_anneal_steps,
            "per_step_bn_stats": self.per_step_bn_stats,
            "per_step_bn_weights": self.per_step_bn_weights,
            "first_order_steps": self.first_order_steps,
        }

    def multi_step_loss_weights(self, steps: int = None):
        """Weights of the query losses after steps `1..steps` (MAML++ annealing).

        Returns:
            A `(steps,)` tensor summing to 1: uniform at `meta_step = 0`, then
            the non-final weights decay linearly to `0.03 / steps` over
            `msl_anneal_steps` meta-updates while the final one grows.
        """
        steps = self.inner_steps if steps is None else steps
        dtype = self.model.trainable_variables[0].dtype
        progress = tf.cast(self.meta_step, dtype) / tf.cast(self.msl_anneal_steps, dtype)
        n = tf.cast(steps, dtype)
        floor = 0.03 / n
        non_final = tf.maximum(1.0 / n - progress / n, floor)
        final = tf.minimum(1.0 / n + (n - 1.0) * progress / n, 1.0 - (n - 1.0) * floor)
        return tf.concat([tf.fill([steps - 1], non_final), [final]], axis=0)

    # -------------------------------------------------------------- interface

    def _num_steps(self, steps, training):
        if steps is None:
            return self.inner_steps if training else self.eval_inner_steps
        _check_steps("steps", steps, allow_zero=True)
        return steps

    def _initial_state(self):
        return [v.value for v in self.state_variables]

    def _state_at(self, stacked, step):
        """Non-trainable values for `step` from the algorithm's state values."""
        if not self.per_step_bn_stats:
            return stacked
        return [s[min(step, self.inner_steps)] for s in stacked]

    def _weights_at(self, trainable, step):
        """`trainable` with the per-step BatchNorm weights of `step` (MAML++ BNWB)."""
        if not self._step_bn:
            return trainable
        trainable = list(trainable)
        for i, copies in self._step_bn.items():
            trainable[i] = copies[min(step, self.inner_steps)]
        return trainable

    @property
    def _uses_first_order(self) -> bool:
        return self.first_order if self._first_order_now is None else self._first_order_now

    def _inner(self, trainable, state, x, y, steps, training):
        """Runs the inner loop; returns its result and the state to hand back."""
        forward = lambda w, s, inputs: self.stateless_forward(w, s, inputs, training=training)
        loss_fn = lambda outputs, labels: task_loss_and_metrics(self.task, outputs, labels)[0]
        values_for_step = None
        if self.per_step_bn_stats or self._step_bn:
            def values_for_step(step, carried_trainable, carried_state):
                step_state = self._state_at(state, step) if self.per_step_bn_stats else carried_state
                return self._weights_at(carried_trainable, step), step_state
        return inner_loop(
            forward, loss_fn, trainable, self._state_at(state, 0), x, y, steps,
            self.step_sizes, first_order=self._uses_first_order, values_for_step=values_for_step,
        )

    def adapt(self, support_x, support_y, steps=None, training: bool = True) -> Weights:
        """Fast weights after `steps` inner steps on the support set.

        Returns:
            `Weights`: the adapted trainable values and the non-trainable
            values to run the query with (`predict`).
        """
        steps = self._num_steps(steps, training)
        trainable = [v.value for v in self.model.trainable_variables]
        state = self._initial_state()
        result = self._inner(trainable, state, support_x, support_y, steps, training)
        query_state = self._state_at(state, steps) if self.per_step_bn_stats else result.non_trainable
        return Weights(self._weights_at(result.trainable, steps), query_state)

    def predict(self, adapted: Weights, x, training: bool = True):
        outputs, _ = self.call_model(adapted, x, training=training)
        return outputs

    def task_loss(self, episode: Episode, training: bool = True):
        """Query loss after adaptation (multi-step weighted under MAML++).

        Returns:
            `(loss, metrics, state)`; `metrics` are those of the final step;
            `state` is aligned with `state_variables`.
        """
        steps = self._num_steps(None, training)
        trainable = [v.value for v in self.model.trainable_variables]
        state = self._initial_state()
        result = self._inner(trainable, state, episode.support_x, episode.support_y, steps, training)

        if self.per_step_bn_stats:
            query_in = self._state_at(state, steps)
        else:
            query_in = result.non_trainable
        outputs, query_state = self.stateless_forward(
            self._weights_at(result.trainable, steps), query_in, episode.query_x, training=training
        )
        loss, metrics = task_loss_and_metrics(self.task, outputs, episode.query_y)

        if self.multi_step_loss and steps > 1:
            weights = self.multi_step_loss_weights(steps)
            losses = []
            for s in range(steps - 1):
                step_state = self._state_at(state, s + 1) if self.per_step_bn_stats else result.states[s]
                step_outputs, _ = self.stateless_forward(
                    self._weights_at(result.trajectory[s], s + 1), step_state, episode.query_x, training=training
                )
                losses.append(task_loss_and_metrics(self.task, step_outputs, episode.query_y)[0])
            losses.append(loss)
            loss = tf.reduce_sum(weights * tf.stack(losses))

        if self.per_step_bn_stats:
            new_state = []
            for j, stacked in enumerate(state):
                slices = [stacked[k] for k in range(self.inner_steps + 1)]
                for s in range(min(steps, self.inner_steps + 1)):
                    slices[s] = result.states[s][j]
                slices[min(steps, self.inner_steps)] = query_state[j]
                new_state.append(tf.stack(slices))
        else:
            new_state = query_state
        return loss, metrics, new_state

    @contextlib.contextmanager
    def _derivative_order(self, first_order: bool):
        """While tracing one branch of derivative-order annealing: that order."""
        self._first_order_now = first_order
        try:
            yield
        finally:
            self._first_order_now = None

    def meta_gradients(self, episodes: Episode, training: bool = True, loss_scale=None):
        """See `Algorithm.meta_gradients`; also counts meta-updates in `meta_step`
        (which anneals the multi-step loss weights and the derivative order)
        when `training`.

        With `first_order_steps`, meta-updates `meta_step < first_order_steps`
        are first order: both orders are traced and `tf.cond` runs one.
        """
        gradients = lambda: super(MAML, self).meta_gradients(episodes, training=training, loss_scale=loss_scale)
        if training and self.first_order_steps and not self.first_order:
            def with_order(first_order):
                with self._derivative_order(first_order):
                    return gradients()

            grads, metrics, state = tf.cond(
                self.meta_step < self.first_order_steps, lambda: with_order(True), lambda: with_order(False)
            )
        else:
            grads, metrics, state = gradients()
        if training and (self.multi_step_loss or self.first_order_steps):
            with tf.control_dependencies(grads):
                self.meta_step.assign_add(1)
        return grads, metrics, state
