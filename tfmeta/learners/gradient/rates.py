"""`InnerRates`: the inner learning rates of the adapted variables.

Three kinds, one interface (`sizes(step)`, aligned with the network's
trainable variables, None for the variables that do not adapt):

| kind | shape per adapted variable | learned | used by |
| --- | --- | --- | --- |
| `"fixed"` | a Python float | no | MAML, FOMAML, ANIL, Reptile |
| `"per_layer_per_step"` | `(inner_steps,)` | yes | MAML++ (LSLR, Antoniou et al. 2019) |
| `"per_parameter"` | the variable's shape | yes | Meta-SGD (Li et al. 2017) |
"""

import keras
import numpy as np

FIXED = "fixed"
PER_LAYER_PER_STEP = "per_layer_per_step"
PER_PARAMETER = "per_parameter"
KINDS = (FIXED, PER_LAYER_PER_STEP, PER_PARAMETER)


class InnerRates:
    """Inner learning rates of a network's adapted variables.

    Args:
        trainable_variables: the network's trainable variables (in order).
        adapted: indices (into `trainable_variables`) of the adapted ones.
        inner_lr: the fixed rate, or the initial value of learned ones (> 0).
        inner_steps: inner steps while meta-training (LSLR has one rate per step).
        kind: one of `KINDS`.

    Raises:
        ValueError: on an unknown `kind`.

    Example:

    ```python
    rates = InnerRates(model.trainable_variables, [0, 1], 0.01, inner_steps=5, kind="per_layer_per_step")
    rates.sizes(2)          # [lslr_0[2], lslr_1[2], None, ...]
    rates.variables         # the learned rates (meta-learned with the network)
    ```
    """

    def __init__(self, trainable_variables, adapted, inner_lr: float, inner_steps: int, kind: str = FIXED):
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
        self.kind = kind
        self.inner_lr = float(inner_lr)
        self.inner_steps = inner_steps
        self._trainable = list(trainable_variables)
        self._adapted = list(adapted)
        self._learned = {}
        for i in self._adapted:
            var = self._trainable[i]
            if kind == PER_LAYER_PER_STEP:
                self._learned[i] = keras.Variable(np.full([inner_steps], inner_lr), dtype=var.dtype, name=f"lslr_{i}")
            elif kind == PER_PARAMETER:
                self._learned[i] = keras.Variable(
                    np.full(tuple(var.shape), inner_lr), dtype=var.dtype, name=f"alpha_{i}"
                )

    @property
    def variables(self) -> list:
        """The learned rates, in adapted-variable order (empty for `"fixed"`)."""
        return [self._learned[i] for i in self._adapted if i in self._learned]

    def sizes(self, step: int) -> list:
        """The rates of inner step `step`, aligned with the trainable variables
        (None for the ones that do not adapt). Steps beyond `inner_steps` (at
        evaluation) reuse the last step's LSLR rates."""
        sizes = [None] * len(self._trainable)
        for i in self._adapted:
            if self.kind == PER_LAYER_PER_STEP:
                sizes[i] = self._learned[i][min(step, self.inner_steps - 1)]
            elif self.kind == PER_PARAMETER:
                sizes[i] = self._learned[i]
            else:
                sizes[i] = self.inner_lr
        return sizes

    def values(self) -> dict:
        """`{variable path: numpy array}` of the current rates: shape `()` for a
        fixed rate, `(inner_steps,)` for LSLR, the variable's shape for Meta-SGD."""
        rates = {}
        for i in self._adapted:
            learned = self._learned.get(i)
            rates[self._trainable[i].path] = np.asarray(learned.numpy() if learned is not None else self.inner_lr)
        return rates
