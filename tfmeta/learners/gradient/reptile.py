"""`Reptile` (Nichol et al., 2018): move the initialisation towards adapted weights."""

import keras
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import CLASSIFICATION, Learner, TaskLoss, Weights, check_positive, check_steps
from tfmeta.learners.gradient.inner_loop import adapt_network


class Reptile(Learner):
    """Reptile: plain SGD on each task's support set, then a step towards the result.

    Adapts through the gradient family's inner loop (no outer tape: nothing is
    differentiated through it). The "meta-gradient" is the mean displacement,
    so any outer optimizer step implements Reptile (plain SGD with learning
    rate `epsilon` gives the paper's update):

    ```
    phi_t = inner_loop(theta, support_t)                 # `inner_steps` SGD steps
    meta_gradient = mean_t (theta - phi_t)
    theta <- theta - epsilon * meta_gradient             # outer SGD
    ```

    Args:
        model: the learner's network, any built `keras.Model`.
        task: `"classification"` or `"regression"`.
        inner_steps: SGD steps on the support set while meta-training.
        inner_lr: inner SGD learning rate.
        eval_inner_steps: inner steps at evaluation (None: `inner_steps`).
        name: the registry name.

    Raises:
        ValueError: on a non-positive step count or learning rate.

    Example:

    ```python
    reptile = tfmeta.learners.Reptile(tfmeta.models.mlp(), task="regression", inner_steps=10, inner_lr=0.02)
    optimizer = keras.optimizers.SGD(1.0)
    grads, metrics, state = reptile.meta_gradients(episodes)
    optimizer.apply(grads, reptile.meta_variables)
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        task: str = CLASSIFICATION,
        inner_steps: int = 5,
        inner_lr: float = 0.1,
        eval_inner_steps=None,
        name: str = "reptile",
    ):
        check_steps("inner_steps", inner_steps)
        if eval_inner_steps is not None:
            check_steps("eval_inner_steps", eval_inner_steps, allow_zero=True)
        check_positive("inner_lr", inner_lr)
        super().__init__(model, task, name=name)
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = float(inner_lr)

    @property
    def eval_steps(self) -> int:
        return self.eval_inner_steps

    def config(self) -> dict:
        return {**super().config(), "inner_steps": self.inner_steps, "eval_inner_steps": self.eval_inner_steps,
                "inner_lr": self.inner_lr}

    def card(self) -> dict:
        return {**super().card(), "inner_learning_rates": {"all": self.inner_lr}}

    def _sgd(self, x, y, steps, training):
        num_trainable = len(self.model.trainable_variables)
        return adapt_network(self, self.initial_weights(), x, y, steps, lambda _: [self.inner_lr] * num_trainable,
                             training=training, first_order=True)

    def adapt(self, support_x, support_y, steps=None, training: bool = True) -> Weights:
        """Weights after `steps` SGD steps on the support set (`Weights`)."""
        if steps is None:
            steps = self.inner_steps if training else self.eval_inner_steps
        check_steps("steps", steps, allow_zero=True)
        result = self._sgd(support_x, support_y, steps, training)
        return Weights(result.trainable, result.non_trainable)

    def predict(self, task_state: Weights, x, training: bool = True):
        outputs, _ = self.call_network(task_state, x, training=training)
        return outputs

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        """Query loss after `inner_steps` SGD steps (reported; Reptile does not differentiate it)."""
        result = self._sgd(episode.support_x, episode.support_y, self.inner_steps, training)
        outputs, state = self.call_network(Weights(result.trainable, result.non_trainable), episode.query_x,
                                           training=training)
        loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        return TaskLoss(loss, metrics, state)

    def meta_gradients(self, episodes: Episode, step=None, training: bool = True, loss_scale=None):
        """Mean of `theta - phi_t` over the tasks, with the query metrics at `phi_t`.

        Args:
            episodes: a batched `Episode`.
            step: unused (Reptile has no schedule).
            training: passed to the network.
            loss_scale: optional scalar multiplying the displacements, so that a
                loss-scaling loop's unscaling gives them back (it protects
                nothing here: there is no outer loss to underflow).

        Returns:
            `(grads, metrics, state)` as `Learner.meta_gradients`; `loss` is
            the query loss after adaptation.
        """
        variables = self.model.trainable_variables
        steps = self.inner_steps if training else self.eval_inner_steps

        def one_task(task):
            theta = [v.value for v in variables]
            result = self._sgd(task.support_x, task.support_y, steps, training)
            outputs, state = self.call_network(Weights(result.trainable, result.non_trainable), task.query_x,
                                               training=training)
            loss, metrics = self.loss_and_metrics(outputs, task.query_y)
            deltas = [tf.convert_to_tensor(t) - p for t, p in zip(theta, result.trainable)]
            if loss_scale is not None:
                deltas = [d * tf.cast(loss_scale, d.dtype) for d in deltas]
            return deltas, TaskLoss(loss, metrics, state)

        return self.mean_over_tasks(one_task, episodes, variables)
