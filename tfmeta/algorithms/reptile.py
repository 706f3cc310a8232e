"""`Reptile` (Nichol et al., 2018): move the initialisation towards adapted weights."""

import keras
import tensorflow as tf

from tfmeta.algorithms.base import CLASSIFICATION, task_loss_and_metrics
from tfmeta.algorithms.maml import MAML
from tfmeta.data.episode import Episode


class Reptile(MAML):
    """Reptile: plain SGD on each task's support set, then step towards the result.

    Shares MAML's inner loop (first order; no outer tape). The "meta-gradient"
    is the mean displacement, so any outer optimizer step implements Reptile
    (plain SGD with learning rate `epsilon` gives the paper's update):

    ```
    phi_t = inner_loop(theta, support_t)                 # `inner_steps` SGD steps
    meta_gradient = mean_t (theta - phi_t)
    theta <- theta - epsilon * meta_gradient             # outer SGD
    ```

    Args:
        model: the learner, any built `keras.Model`.
        task: `"classification"` or `"regression"`.
        inner_steps: SGD steps on the support set while meta-training.
        inner_lr: inner SGD learning rate.
        eval_inner_steps: inner steps when `training=False` (None: `inner_steps`).

    Example:

    ```python
    reptile = tfmeta.algorithms.Reptile(tfmeta.models.mlp(), task="regression",
                                        inner_steps=10, inner_lr=0.02)
    optimizer = keras.optimizers.SGD(1.0)
    grads, metrics, state = reptile.meta_gradients(episodes)
    optimizer.apply_gradients(zip(grads, reptile.meta_variables))
    ```
    """

    variant_name = "reptile"

    def __init__(
        self,
        model: keras.Model,
        task: str = CLASSIFICATION,
        inner_steps: int = 5,
        inner_lr: float = 0.1,
        eval_inner_steps=None,
    ):
        super().__init__(
            model, task, inner_steps=inner_steps, inner_lr=inner_lr, first_order=True,
            eval_inner_steps=eval_inner_steps,
        )

    @property
    def variant(self) -> str:
        return self.variant_name

    def config(self) -> dict:
        config = super().config()
        for key in ("first_order", "learn_inner_lr", "multi_step_loss", "msl_anneal_steps", "per_step_bn_stats",
                    "per_step_bn_weights", "first_order_steps"):
            config.pop(key)
        return config

    def meta_gradients(self, episodes: Episode, training: bool = True):
        """Mean of `theta - phi_t` over the tasks, with query metrics at `phi_t`.

        Returns:
            `(grads, metrics, state)` as `Algorithm.meta_gradients`; `loss`
            is the query loss after adaptation.
        """
        variables = self.model.trainable_variables
        state_vars = self.state_variables
        steps = self._num_steps(None, training)

        def one_task(task):
            task = Episode(*task)
            theta = [v.value for v in variables]
            result = self._inner(theta, self._initial_state(), task.support_x, task.support_y, steps, training)
            outputs, state = self.stateless_forward(
                result.trainable, result.non_trainable, task.query_x, training=training
            )
            loss, metrics = task_loss_and_metrics(self.task, outputs, task.query_y)
            deltas = [tf.convert_to_tensor(t) - p for t, p in zip(theta, result.trainable)]
            return deltas, loss, metrics, state

        return self.mean_over_tasks(one_task, episodes, variables, state_vars)
