"""`ANIL`: almost no inner loop (Raghu et al., 2020)."""

import keras

from tfmeta.algorithms.base import CLASSIFICATION
from tfmeta.algorithms.maml import MAML


class ANIL(MAML):
    """MAML that adapts only the head in the inner loop.

    The body is meta-learned by the outer loop only; the inner loop updates
    the last layer's variables (by default) or a given subset. Same inner
    loop and options as `MAML`.

    Args:
        model: the learner, any built `keras.Model`.
        task: `"classification"` or `"regression"`.
        adapt_variables: the variables to adapt (None: the trainable
            variables of `model.layers[-1]`).
        **kwargs: passed to `MAML` (`inner_steps`, `inner_lr`, ...).

    Raises:
        ValueError: if the last layer has no trainable variables and
            `adapt_variables` is not given.

    Example:

    ```python
    anil = tfmeta.algorithms.ANIL(tfmeta.models.conv4(ways=5), inner_lr=0.4)
    ```
    """

    variant_name = "anil"

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
        super().__init__(model, task, adapt_variables=adapt_variables, **kwargs)

    @property
    def variant(self) -> str:
        return self.variant_name
