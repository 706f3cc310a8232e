"""`PerStepBatchNorm`: MAML++'s per-step BatchNorm statistics and weights (Antoniou et al., 2019).

* Statistics (BNRS): one copy of the network's non-trainable state (BatchNorm
  moving statistics) per inner step, `inner_steps + 1` copies stacked in one
  variable each. Inner step `s` reads and updates copy `min(s, inner_steps)`;
  the query pass after `n` steps uses copy `min(n, inner_steps)`.
* Weights and biases (BNWB): one copy of every BatchNorm scale and offset per
  inner step, meta-learned, not adapted by the inner loop; step `s` runs with
  copy `min(s, inner_steps)`. The network's own BatchNorm weights are then
  unused (and not meta-learned).
"""

import keras
import numpy as np
import tensorflow as tf

from tfmeta.models.batchnorm import batch_norm_layers


def _stacked_copies(variable, copies: int, trainable: bool, name: str) -> keras.Variable:
    value = np.repeat(np.asarray(variable.numpy())[None], copies, axis=0)
    return keras.Variable(value, dtype=variable.dtype, trainable=trainable, name=name)


class PerStepBatchNorm:
    """Per-step copies of a network's BatchNorm statistics and/or weights.

    Args:
        model: the network.
        inner_steps: inner steps while meta-training (`inner_steps + 1` copies).
        statistics: keep per-step statistics (BNRS).
        weights: keep per-step BatchNorm scales and offsets (BNWB).

    Raises:
        ValueError: if `weights` is True and the network has no BatchNorm layer
            with a trainable scale or offset.

    Example:

    ```python
    per_step = PerStepBatchNorm(conv4(ways=5), inner_steps=5, statistics=True, weights=True)
    per_step.state_variables       # 8 variables of shape (6, 64)
    per_step.weight_variables      # 8 variables of shape (6, 64)
    ```
    """

    def __init__(self, model: keras.Model, inner_steps: int, statistics: bool = False, weights: bool = False):
        self.inner_steps = inner_steps
        self.statistics = bool(statistics)
        copies = inner_steps + 1
        self._model = model
        # {trainable index: (inner_steps + 1, ...) copies}
        self.weight_copies = {}
        if weights:
            bn_ids = {id(v) for layer in batch_norm_layers(model) for v in layer.trainable_variables}
            for i, var in enumerate(model.trainable_variables):
                if id(var) in bn_ids:
                    self.weight_copies[i] = _stacked_copies(var, copies, True, f"step_bn_{i}")
            if not self.weight_copies:
                raise ValueError(
                    "`per_step_bn_weights=True` needs BatchNorm layers with trainable scale or offset in `model`. "
                    f"Received: model {model.name!r} without any"
                )
        self._state_copies = []
        if self.statistics:
            for j, v in enumerate(model.non_trainable_variables):
                self._state_copies.append(_stacked_copies(v, copies, False, f"step_state_{j}"))

    @property
    def active(self) -> bool:
        """Whether any per-step copy is kept."""
        return self.statistics or bool(self.weight_copies)

    @property
    def weight_variables(self) -> list:
        """The per-step BatchNorm weights (meta-learned), by trainable index."""
        return [self.weight_copies[i] for i in sorted(self.weight_copies)]

    @property
    def state_variables(self) -> list:
        """The state the learner keeps: the stacked copies, or the network's own statistics."""
        return list(self._state_copies) if self.statistics else list(self._model.non_trainable_variables)

    def state_at(self, stacked: list, step: int) -> list:
        """The network's non-trainable values for inner step `step`, from the learner's state values."""
        if not self.statistics:
            return stacked
        return [s[min(step, self.inner_steps)] for s in stacked]

    def weights_at(self, trainable: list, step: int) -> list:
        """`trainable` with the BatchNorm weights of inner step `step` put in."""
        if not self.weight_copies:
            return trainable
        trainable = list(trainable)
        for i, copies in self.weight_copies.items():
            trainable[i] = copies[min(step, self.inner_steps)]
        return trainable

    def values_for_step(self, stacked: list):
        """`inner_loop`'s `values_for_step` hook (None when nothing is per step)."""
        if not self.active:
            return None

        def values(step, carried_trainable, carried_state):
            state = self.state_at(stacked, step) if self.statistics else carried_state
            return self.weights_at(carried_trainable, step), state

        return values

    def query_state(self, stacked: list, result, steps: int) -> list:
        """Non-trainable values for the query pass after `steps` inner steps."""
        return self.state_at(stacked, steps) if self.statistics else result.non_trainable

    def step_state(self, stacked: list, result, step: int) -> list:
        """Non-trainable values to run the query with after inner step `step + 1` (multi-step loss)."""
        return self.state_at(stacked, step + 1) if self.statistics else result.states[step]

    def new_state(self, stacked: list, result, query_state: list, steps: int) -> list:
        """The learner's state after a task: each step's copy updated by its own pass."""
        if not self.statistics:
            return query_state
        new = []
        for j, values in enumerate(stacked):
            slices = [values[k] for k in range(self.inner_steps + 1)]
            for s in range(min(steps, self.inner_steps + 1)):
                slices[s] = result.states[s][j]
            slices[min(steps, self.inner_steps)] = query_state[j]
            new.append(tf.stack(slices))
        return new
