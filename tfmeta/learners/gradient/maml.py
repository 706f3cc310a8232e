"""`MAML`: model-agnostic meta-learning (Finn et al., 2017), with its variants as options.

One class covers second-order MAML, first-order MAML (`first_order=True`, the
same code path), ANIL (`adapt_variables`: the head only), Meta-SGD
(`learn_inner_lr="per_parameter"`) and the MAML++ options of Antoniou et al.
(2019), each composed from a small helper:

* learned inner rates: `rates.InnerRates` (LSLR: per layer and step);
* per-step BatchNorm statistics, weights and biases: `per_step.PerStepBatchNorm`;
* the multi-step loss weights: `schedules.multi_step_loss_weights`, a pure
  function of the loop's step;
* derivative-order annealing: `meta_gradients` takes first-order gradients
  while `step < first_order_steps` (`tf.cond` on the step the loop passes in);
* FiLM conditioning on task metadata (regression): `film.FiLMGenerator`.
"""

import keras
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import CLASSIFICATION, REGRESSION, Learner, TaskLoss, Weights, check_positive, check_steps
from tfmeta.learners.gradient import rates as rates_lib
from tfmeta.learners.gradient.film import FiLMGenerator, film_modulate, hidden_dense_indices
from tfmeta.learners.gradient.inner_loop import adapt_network
from tfmeta.learners.gradient.per_step import PerStepBatchNorm
from tfmeta.learners.gradient.schedules import multi_step_loss_weights

_LEARNED_RATES = {False: rates_lib.FIXED, True: rates_lib.PER_LAYER_PER_STEP,
                  rates_lib.PER_LAYER_PER_STEP: rates_lib.PER_LAYER_PER_STEP,
                  rates_lib.PER_PARAMETER: rates_lib.PER_PARAMETER}


def _adapted_indices(model, adapt_variables) -> list:
    trainable = model.trainable_variables
    if adapt_variables is None:
        return list(range(len(trainable)))
    index = {id(v): i for i, v in enumerate(trainable)}
    unknown = [v.path if isinstance(v, keras.Variable) else repr(v) for v in adapt_variables if id(v) not in index]
    if unknown or not adapt_variables:
        raise ValueError(
            "`adapt_variables` must be a non-empty list of trainable variables of `model`. "
            f"Received: adapt_variables with unknown entries {unknown}"
        )
    return sorted(index[id(v)] for v in adapt_variables)


class MAML(Learner):
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
      steps `s = 1..steps`, the weights annealed over `msl_anneal_steps`
      meta-updates towards the final step (`schedules.multi_step_loss_weights`
      of the loop's `step`).
    * `learn_inner_lr=True` (LSLR): one learned rate per adapted variable and
      per step, initialised to `inner_lr` (`"per_parameter"`: Meta-SGD's one
      rate per parameter).
    * `per_step_bn_stats`, `per_step_bn_weights`: per-step BatchNorm
      statistics and weights and biases (`PerStepBatchNorm`).
    * `first_order_steps` (derivative-order annealing): meta-updates with
      `step < first_order_steps` are first order, the rest second order.

    FiLM conditioning on task metadata (`metadata_dim=M`, regression): a
    meta-learned MLP (`film.FiLMGenerator`, hidden sizes `film_sizes`) maps a
    task's description `(M,)` to `(gamma, beta)` per output unit of each
    hidden Dense layer, which modulate the initialisation the inner loop
    starts from:

    ```
    W_0 = W * (1 + gamma)      b_0 = b * (1 + gamma) + beta      # = FiLM of W x + b
    phi_0 = theta with (W_0, b_0); then the inner loop as above
    ```

    Its last layer starts at zero (plain MAML). Episodes must then be
    `TaskEpisode`s (`adapt_task` with `metadata`); their support mask is
    honoured (the support loss is the mean over the real points; no real
    point: no inner update).

    Args:
        model: the learner's network, any built `keras.Model`.
        task: `"classification"` or `"regression"`.
        inner_steps: inner steps while meta-training.
        inner_lr: inner learning rate (initial value when learned).
        first_order: drop second derivatives (first-order MAML).
        eval_inner_steps: inner steps at evaluation (None: `inner_steps`).
        adapt_variables: the trainable variables adapted in the inner loop
            (None: all); the others keep their meta-learned values (ANIL).
        learn_inner_lr: False (fixed rate), True or `"per_layer_per_step"`
            (LSLR), `"per_parameter"` (Meta-SGD).
        multi_step_loss: MAML++ multi-step loss.
        msl_anneal_steps: meta-updates over which its weights are annealed.
        per_step_bn_stats: MAML++ per-step BatchNorm statistics.
        per_step_bn_weights: MAML++ per-step BatchNorm weights and biases.
        first_order_steps: MAML++ derivative-order annealing (0: none).
        metadata_dim: the size of a task's description to condition on
            by FiLM (None: none; regression only).
        film_sizes: hidden sizes of the FiLM generator.
        film_seed: integer seed of the generator's initialisers (None:
            Keras's global state).
        name: the registry name (default: `"maml++"` with any MAML++ option,
            `"fomaml"` when first order, else `"maml"`).

    Raises:
        ValueError: on a non-positive step count or learning rate, an
            `adapt_variables` entry that is not a trainable variable of
            `model`, an unknown `learn_inner_lr`, `per_step_bn_weights` on a
            network without trainable BatchNorm weights, or `metadata_dim` on
            a classification task or a network without hidden Dense layers.

    Example:

    ```python
    maml = tfmeta.learners.MAML(tfmeta.models.conv4(ways=5), inner_steps=1, inner_lr=0.4)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def train_step(episodes):
        grads, metrics, state = maml.meta_gradients(episodes, step=optimizer.iterations)
        optimizer.apply(grads, maml.meta_variables)
        for variable, value in zip(maml.state_variables, state):
            variable.assign(value)
        return metrics
    ```

    Conditioned on sinusoid amplitude and phase (`TaskEpisode`s with `metadata`):

    ```python
    maml = tfmeta.learners.MAML(tfmeta.models.mlp(), task="regression", inner_lr=0.01, metadata_dim=2)
    state = maml.adapt_task(support_x, support_y, support_mask, metadata)
    y = maml.predict(state, query_x)
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        task: str = CLASSIFICATION,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        first_order: bool = False,
        eval_inner_steps=None,
        adapt_variables=None,
        learn_inner_lr=False,
        multi_step_loss: bool = False,
        msl_anneal_steps: int = 5000,
        per_step_bn_stats: bool = False,
        per_step_bn_weights: bool = False,
        first_order_steps: int = 0,
        metadata_dim: int | None = None,
        film_sizes=(64,),
        film_seed: int | None = None,
        name: str | None = None,
    ):
        check_steps("inner_steps", inner_steps)
        if eval_inner_steps is not None:
            check_steps("eval_inner_steps", eval_inner_steps, allow_zero=True)
        check_steps("msl_anneal_steps", msl_anneal_steps)
        check_steps("first_order_steps", first_order_steps, allow_zero=True)
        check_positive("inner_lr", inner_lr)
        if learn_inner_lr not in _LEARNED_RATES:
            raise ValueError(
                f"`learn_inner_lr` must be False, True, {rates_lib.PER_LAYER_PER_STEP!r} or "
                f"{rates_lib.PER_PARAMETER!r}. Received: learn_inner_lr={learn_inner_lr!r}"
            )
        maml_plus_plus = bool(learn_inner_lr in (True, rates_lib.PER_LAYER_PER_STEP) or multi_step_loss or per_step_bn_stats or per_step_bn_weights
                              or first_order_steps)
        default_name = "maml++" if maml_plus_plus else ("fomaml" if first_order else "maml")
        super().__init__(model, task, name=name or default_name)
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.multi_step_loss = bool(multi_step_loss)
        self.msl_anneal_steps = msl_anneal_steps
        self.first_order_steps = first_order_steps

        self.per_step = PerStepBatchNorm(model, inner_steps, statistics=per_step_bn_stats,
                                         weights=per_step_bn_weights)
        adapted = [i for i in _adapted_indices(model, adapt_variables) if i not in self.per_step.weight_copies]
        if not adapted:
            raise ValueError(
                "With `per_step_bn_weights=True` the BatchNorm weights are not adapted, and no other "
                "variable is. Received: adapt_variables with BatchNorm weights only"
            )
        self._adapted = adapted
        self.rates = rates_lib.InnerRates(model.trainable_variables, adapted, inner_lr, inner_steps,
                                          _LEARNED_RATES[learn_inner_lr])
        self.metadata_dim = metadata_dim
        self.film = None
        if metadata_dim is not None:
            if task != REGRESSION:
                raise ValueError(f"FiLM conditioning on task metadata is for regression tasks. "
                                 f"Received: task={task!r}, metadata_dim={metadata_dim!r}")
            self._film_layers = hidden_dense_indices(model)
            self.film = FiLMGenerator(metadata_dim, self._film_layers, film_sizes,
                                      dtype=model.trainable_variables[0].dtype, seed=film_seed)

    # ------------------------------------------------------------------ state

    @property
    def extra_variables(self) -> list:
        """Learned inner learning rates (in adapted-variable order), then the
        per-step BatchNorm weights, then the FiLM generator's variables."""
        film = [] if self.film is None else self.film.variables
        return self.rates.variables + self.per_step.weight_variables + film

    @property
    def meta_variables(self) -> list:
        """The network's trainable variables (but the BatchNorm weights that
        per-step copies replace), then `extra_variables`."""
        replaced = self.per_step.weight_copies
        trainable = self.model.trainable_variables
        return [v for i, v in enumerate(trainable) if i not in replaced] + self.extra_variables

    @property
    def state_variables(self) -> list:
        """The network's non-trainable variables, or their per-step copies."""
        return self.per_step.state_variables

    @property
    def adapted_variables(self) -> list:
        """The network's trainable variables that the inner loop adapts."""
        trainable = self.model.trainable_variables
        return [trainable[i] for i in self._adapted]

    @property
    def eval_steps(self) -> int:
        return self.eval_inner_steps

    def inner_learning_rates(self) -> dict:
        """`{variable path: numpy array}` of the current inner learning rates
        (shape `()` fixed, `(inner_steps,)` LSLR, the variable's shape Meta-SGD)."""
        return self.rates.values()

    def config(self) -> dict:
        trainable = self.model.trainable_variables
        return {
            **super().config(),
            "inner_steps": self.inner_steps,
            "eval_inner_steps": self.eval_inner_steps,
            "inner_lr": self.inner_lr,
            "learned_inner_lr": self.rates.kind,
            "first_order": self.first_order,
            "adapt_variables": [trainable[i].path for i in self._adapted],
            "multi_step_loss": self.multi_step_loss,
            "msl_anneal_steps": self.msl_anneal_steps,
            "per_step_bn_stats": self.per_step.statistics,
            "per_step_bn_weights": bool(self.per_step.weight_copies),
            "first_order_steps": self.first_order_steps,
            "metadata_dim": self.metadata_dim,
            "film_sizes": None if self.film is None else list(self.film.sizes),
        }

    def scalars(self) -> dict:
        """The mean learned inner learning rate of each adapted variable (`inner_lr/<path>`)."""
        if self.rates.kind == rates_lib.FIXED:
            return {}
        return {f"inner_lr/{path}": float(value.mean()) for path, value in self.rates.values().items()}

    def card(self) -> dict:
        card = super().card()
        card["inner_learning_rates"] = {path: value.tolist() for path, value in self.rates.values().items()}
        return card

    # -------------------------------------------------------------- the contract

    def _num_steps(self, steps, training) -> int:
        if steps is None:
            return self.inner_steps if training else self.eval_inner_steps
        return check_steps("steps", steps, allow_zero=True)

    def initial_trainable(self, metadata=None) -> list:
        """The trainable values the inner loop starts from: the meta-learned
        ones, FiLM-modulated by `metadata` `(M,)` when `metadata_dim` is set.

        Raises:
            ValueError: if `metadata_dim` is set and `metadata` is None or not `(metadata_dim,)`.
        """
        trainable = [v.value for v in self.model.trainable_variables]
        if self.film is None:
            return trainable
        if metadata is None:
            raise ValueError(f"This MAML conditions on task metadata (metadata_dim={self.metadata_dim}): give "
                             f"TaskEpisodes with `metadata`, or call `adapt_task(..., metadata=...)`. "
                             f"Received: metadata=None")
        metadata = tf.convert_to_tensor(metadata)
        if metadata.shape.rank != 1 or metadata.shape[0] not in (None, self.metadata_dim):
            raise ValueError(f"`metadata` must have shape ({self.metadata_dim},) (one task). "
                             f"Received: metadata.shape={metadata.shape}")
        return film_modulate(trainable, self.film(metadata), self._film_layers)

    def _inner(self, stacked_state, x, y, steps, training, first_order, mask=None, metadata=None):
        """The inner loop from the (modulated) meta-learned weights; `stacked_state` holds the state values."""
        start = Weights(self.initial_trainable(metadata), self.per_step.state_at(stacked_state, 0))
        return adapt_network(self, start, x, y, steps, self.rates.sizes, training=training, first_order=first_order,
                             values_for_step=self.per_step.values_for_step(stacked_state), mask=mask)

    def _adapt(self, support_x, support_y, support_mask, metadata, steps, training) -> Weights:
        steps = self._num_steps(steps, training)
        stacked = self.current_state()
        result = self._inner(stacked, support_x, support_y, steps, training, self.first_order, support_mask, metadata)
        return Weights(self.per_step.weights_at(result.trainable, steps),
                       self.per_step.query_state(stacked, result, steps))

    def adapt(self, support_x, support_y, steps=None, training: bool = True) -> Weights:
        """Fast weights after `steps` inner steps on the support set.

        Returns:
            `Weights`: the adapted trainable values and the non-trainable
            values to run the query with (`predict`).

        Raises:
            ValueError: if the learner conditions on metadata (use `adapt_task`).
        """
        return self._adapt(support_x, support_y, None, None, steps, training)

    def adapt_task(self, support_x, support_y, support_mask=None, metadata=None, steps=None, training: bool = True):
        """See `Learner.adapt_task`. With `metadata_dim` set, the inner loop starts
        from the weights FiLM-modulated by `metadata` and its support loss is
        the mean over the real points of `support_mask` (0 without any: no
        update; `S` may be 0); without, the default (padded points dropped,
        metadata ignored)."""
        if self.film is None:
            return super().adapt_task(support_x, support_y, support_mask, metadata, steps=steps, training=training)
        if support_mask is None:  # every point real; the masked mean also keeps an empty support set finite
            support_mask = tf.ones(tf.shape(support_x)[:1], tf.float32)
        return self._adapt(support_x, support_y, support_mask, metadata, steps, training)

    def predict(self, task_state: Weights, x, training: bool = True):
        outputs, _ = self.call_network(task_state, x, training=training)
        return outputs

    def task_loss(self, episode: Episode, step=None, training: bool = True, first_order=None) -> TaskLoss:
        """Query loss after adaptation (the multi-step loss under MAML++).

        Args:
            episode: one task.
            step: the loop's meta-update counter (needed with `multi_step_loss`).
            training: passed to the network.
            first_order: the derivative order of this loss (None: the
                learner's `first_order`; `meta_gradients` sets it under
                derivative-order annealing).

        Returns:
            A `TaskLoss`; `metrics` are those after the final step.

        Raises:
            ValueError: if `multi_step_loss` is on and `step` is None, or the
                learner conditions on metadata and `episode` has none.
        """
        first_order = self.first_order if first_order is None else first_order
        steps = self._num_steps(None, training)
        stacked = self.current_state()
        # Conditioned on metadata: the TaskEpisode's masks and description (a plain MAML keeps its exact path).
        support_mask, query_mask = (None, None) if self.film is None else (episode.support_mask, episode.query_mask)
        metadata = None if self.film is None else episode.metadata
        result = self._inner(stacked, episode.support_x, episode.support_y, steps, training, first_order,
                             support_mask, metadata)
        query_in = self.per_step.query_state(stacked, result, steps)
        outputs, query_state = self.call_network(
            Weights(self.per_step.weights_at(result.trainable, steps), query_in), episode.query_x, training=training
        )
        loss, metrics = self.loss_and_metrics(outputs, episode.query_y, mask=query_mask)

        if self.multi_step_loss and steps > 1:
            if step is None:
                raise ValueError("The multi-step loss anneals its weights with the loop's step: pass `step` "
                                 "(the number of meta-updates applied so far). Received: step=None")
            weights = multi_step_loss_weights(step, steps, self.msl_anneal_steps, loss.dtype)
            losses = []
            for s in range(steps - 1):
                step_outputs, _ = self.call_network(
                    Weights(self.per_step.weights_at(result.trajectory[s], s + 1),
                            self.per_step.step_state(stacked, result, s)),
                    episode.query_x, training=training,
                )
                losses.append(self.loss_and_metrics(step_outputs, episode.query_y, mask=query_mask)[0])
            losses.append(loss)
            loss = tf.reduce_sum(weights * tf.stack(losses))
        return TaskLoss(loss, metrics, self.per_step.new_state(stacked, result, query_state, steps))

    def meta_gradients(self, episodes: Episode, step=None, training: bool = True, loss_scale=None):
        """See `Learner.meta_gradients`. With `first_order_steps` (derivative-order
        annealing) meta-updates `step < first_order_steps` are first order:
        both orders are traced once and `tf.cond` on `step` runs one.

        Raises:
            ValueError: if a schedule needs `step` and it is None.
        """
        def gradients(first_order):
            loss_fn = lambda task: self.task_loss(task, step=step, training=training, first_order=first_order)
            return self.mean_gradients(loss_fn, episodes, loss_scale)

        if training and self.first_order_steps and not self.first_order:
            if step is None:
                raise ValueError("Derivative-order annealing switches order at `first_order_steps` of the loop's "
                                 "step: pass `step`. Received: step=None")
            return tf.cond(step < self.first_order_steps, lambda: gradients(True), lambda: gradients(False))
        return gradients(self.first_order)


class ANIL(MAML):
    """ANIL (Raghu et al., 2020): MAML that adapts only the head in the inner loop.

    The body is meta-learned by the outer loop only; the inner loop updates
    the last layer's variables (by default) or a given subset.

    Args:
        model: the learner's network, any built `keras.Model`.
        task: `"classification"` or `"regression"`.
        adapt_variables: the variables to adapt (None: the trainable
            variables of `model.layers[-1]`).
        **kwargs: passed to `MAML` (`inner_steps`, `inner_lr`, ...).

    Raises:
        ValueError: if the last layer has no trainable variables and
            `adapt_variables` is not given.

    Example:

    ```python
    anil = tfmeta.learners.ANIL(tfmeta.models.conv4(ways=5), inner_lr=0.4)
    ```
    """

    def __init__(self, model: keras.Model, task: str = CLASSIFICATION, adapt_variables=None, **kwargs):
        if adapt_variables is None:
            if not isinstance(model, keras.Model) or not model.layers:
                raise ValueError(f"`model` must be a keras.Model with layers. Received: model={model!r}")
            adapt_variables = list(model.layers[-1].trainable_variables)
            if not adapt_variables:
                raise ValueError(
                    "The last layer of `model` has no trainable variables; pass `adapt_variables`. "
                    f"Received: last layer {model.layers[-1].name!r}"
                )
        kwargs.setdefault("name", "anil")
        super().__init__(model, task, adapt_variables=adapt_variables, **kwargs)


class MetaSGD(MAML):
    """Meta-SGD (Li et al., 2017): MAML whose inner step sizes are learned, one per parameter.

    ```
    phi_{s+1} = phi_s - alpha * grad L_support(phi_s)    # alpha: same shape as phi
    ```

    `alpha` (one variable per adapted variable, initialised to `inner_lr`) is
    meta-learned with the initialisation and lives in `extra_variables`.

    Args:
        model: the learner's network, any built `keras.Model`.
        task: `"classification"` or `"regression"`.
        **kwargs: passed to `MAML` (`inner_steps`, `inner_lr`,
            `adapt_variables`, ...); `learn_inner_lr` is not accepted.

    Raises:
        ValueError: if `learn_inner_lr` is given.

    Example:

    ```python
    metasgd = tfmeta.learners.MetaSGD(tfmeta.models.mlp(), task="regression", inner_lr=0.01)
    ```
    """

    def __init__(self, model: keras.Model, task: str = CLASSIFICATION, **kwargs):
        if "learn_inner_lr" in kwargs:
            raise ValueError(
                f"`learn_inner_lr` does not apply to MetaSGD. Received: learn_inner_lr={kwargs['learn_inner_lr']!r}"
            )
        kwargs.setdefault("name", "metasgd")
        super().__init__(model, task, learn_inner_lr=rates_lib.PER_PARAMETER, **kwargs)
