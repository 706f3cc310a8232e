"""`MetaSGD`: meta-learned per-parameter inner learning rates (Li et al., 2017)."""

import keras
import numpy as np

from tfmeta.algorithms.base import CLASSIFICATION
from tfmeta.algorithms.maml import MAML


class MetaSGD(MAML):
    """MAML whose inner step sizes are learned, one per parameter.

    ```
    phi_{s+1} = phi_s - alpha * grad L_support(phi_s)    # alpha: same shape as phi
    ```

    `alpha` (one variable per adapted variable, initialised to `inner_lr`)
    is meta-learned with the initialisation and lives in `extra_variables`.

    Args:
        model: the learner, any built `keras.Model`.
        task: `"classification"` or `"regression"`.
        **kwargs: passed to `MAML` (`inner_steps`, `inner_lr`,
            `adapt_variables`, ...); `learn_inner_lr` is not accepted.

    Raises:
        ValueError: if `learn_inner_lr` is given.

    Example:

    ```python
    metasgd = tfmeta.algorithms.MetaSGD(tfmeta.models.mlp(), task="regression", inner_lr=0.01)
    ```
    """

    variant_name = "metasgd"

    def __init__(self, model: keras.Model, task: str = CLASSIFICATION, **kwargs):
        if kwargs.pop("learn_inner_lr", False):
            raise ValueError("`learn_inner_lr` does not apply to MetaSGD. Received: learn_inner_lr=True")
        super().__init__(model, task, **kwargs)
        trainable = self.model.trainable_variables
        self._alpha = {
            i: keras.Variable(
                np.full(tuple(trainable[i].shape), self.inner_lr), dtype=trainable[i].dtype, name=f"alpha_{i}"
            )
            for i in self._adapted
        }

    def step_sizes(self, step: int) -> list:
        sizes = [None] * len(self.model.trainable_variables)
        for i in self._adapted:
            sizes[i] = self._alpha[i]
        return sizes

    def _learned_rate(self, i):
        return self._alpha[i]

    @property
    def variant(self) -> str:
        return self.variant_name
