"""The one inner loop of the gradient family: a pure function over fast weights.

Every gradient-based learner (MAML, first-order MAML, ANIL, Meta-SGD,
MAML++, Reptile) adapts through `inner_loop` (`adapt_network` runs it on a
learner's network), and so does the LSTM meta-learner
(`tfmeta.learners.recurrent.LSTMMetaLearner`), whose learned update rule
replaces the SGD step through the `update_rule` hook. It runs the learner with
`keras.Model.stateless_call` on explicit weights, so the model's variables
are never written, and it carries the non-trainable state (BatchNorm moving
statistics) that each call returns.

Second order comes for free: when an outer `tf.GradientTape` is recording,
the inner tapes' gradient computations are recorded too, so the outer
gradient differentiates through the updates. `first_order=True` wraps the
inner gradients in `tf.stop_gradient` on the same code path.
"""

from typing import Callable, NamedTuple, Optional

import tensorflow as tf


class InnerLoopResult(NamedTuple):
    """What `inner_loop` returns.

    Attributes:
        trainable: the adapted (fast) trainable values after the last step.
        non_trainable: the non-trainable state after the last step.
        trajectory: `trainable` after each step, `trajectory[s]` after step
            `s + 1` (length `steps`; `trajectory[-1] is trainable`).
        states: non-trainable state after each step (length `steps`).
        support_losses: support loss at the start of each step (length `steps`).
        rule_state: the `update_rule`'s state after the last step (None
            without an `update_rule`).
    """

    trainable: list
    non_trainable: list
    trajectory: list
    states: list
    support_losses: list
    rule_state: object = None


def inner_loop(
    forward: Callable,
    loss_fn: Callable,
    trainable: list,
    non_trainable: list,
    x,
    y,
    steps: int,
    step_sizes: Callable,
    first_order: bool = False,
    values_for_step: Optional[Callable] = None,
    update_rule: Optional[Callable] = None,
    rule_state=None,
) -> InnerLoopResult:
    """Plain gradient steps on a support loss, as a function of the weights.

    For each step `s` and each adapted variable `i`:

    ```
    outputs, state = forward(theta, state, x)
    g_i = d loss_fn(outputs, y) / d theta_i     # stop_gradient(g_i) if first_order
    theta_i <- theta_i - step_sizes(s)[i] * g_i
    ```

    The loop is unrolled in Python (`steps` is static), which is what nested
    tapes need for second-order gradients.

    A learned update rule (the LSTM meta-learner) replaces the last line:
    `trainable, rule_state <- update_rule(s, trainable, g, loss, rule_state)`,
    with `g` aligned with `trainable` (None for the values kept fixed) and,
    if `first_order`, `g` and `loss` under `tf.stop_gradient`. Without it the
    code path is the plain SGD step above, unchanged.

    Args:
        forward: `forward(trainable, non_trainable, x) -> (outputs,
            new_non_trainable)`, typically `Model.stateless_call` with
            `training` bound.
        loss_fn: `loss_fn(outputs, y) -> scalar loss`.
        trainable: initial trainable values (tensors or variables).
        non_trainable: initial non-trainable values.
        x: support inputs `(support_size, ...)`.
        y: support labels or targets.
        steps: number of inner steps (static, >= 0).
        step_sizes: `step_sizes(step) -> list` aligned with `trainable`:
            a learning rate (scalar or a tensor of the variable's shape) for
            each adapted variable, None for the variables kept fixed. With an
            `update_rule` only which entries are None counts (None instead of
            a function: every value adapts).
        first_order: drop second derivatives (`tf.stop_gradient` on the
            inner gradients).
        values_for_step: optional `values_for_step(step, trainable, state)
            -> (trainable, state)`: the values to run `step` with, given the
            carried ones (MAML++ per-step BatchNorm statistics, weights and
            biases); None: carry both.
        update_rule: optional `update_rule(step, trainable, grads, loss,
            rule_state) -> (trainable, rule_state)`: a learned update in
            place of the SGD step (see above); None: SGD with `step_sizes`.
        rule_state: the `update_rule`'s initial state (any nest of tensors).

    Returns:
        An `InnerLoopResult`.

    Raises:
        ValueError: if `steps` is negative or `step_sizes` returns a list of
            the wrong length.

    Example:

    ```python
    forward = lambda w, s, x: model.stateless_call(w, s, x, training=True)
    loss_fn = lambda out, y: tf.reduce_mean(tf.square(out - y))
    result = inner_loop(forward, loss_fn, weights.trainable, weights.non_trainable,
                        x, y, steps=1, step_sizes=lambda s: [0.01] * len(weights.trainable))
    ```
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative integer. Received: steps={steps!r}")
    trainable = [tf.convert_to_tensor(t) for t in trainable]  # variables are read once, here
    state = list(non_trainable)
    trajectory, states, losses = [], [], []
    for step in range(steps):
        sizes = [1.0] * len(trainable) if step_sizes is None and update_rule is not None else step_sizes(step)
        if len(sizes) != len(trainable):
            raise ValueError(
                f"`step_sizes({step})` must give one entry per trainable value ({len(trainable)}). "
                f"Received: {len(sizes)} entries"
            )
        adapted = [i for i, size in enumerate(sizes) if size is not None]
        if values_for_step is not None:
            trainable, state = values_for_step(step, list(trainable), list(state))
        with tf.GradientTape() as tape:
            tape.watch([trainable[i] for i in adapted])
            outputs, state = forward(trainable, state, x)
            loss = loss_fn(outputs, y)
        grads = tape.gradient(loss, [trainable[i] for i in adapted])
        trainable = list(trainable)
        if update_rule is None:  # SGD (the MAML family)
            for i, grad in zip(adapted, grads):
                if grad is None:  # a variable the loss does not depend on
                    continue
                if first_order:
                    grad = tf.stop_gradient(grad)
                size = tf.cast(tf.convert_to_tensor(sizes[i], dtype_hint=grad.dtype), grad.dtype)  # no float32 detour
                trainable[i] = trainable[i] - size * grad
        else:  # a learned update (the LSTM meta-learner)
            aligned = [None] * len(trainable)
            for i, grad in zip(adapted, grads):
                aligned[i] = None if grad is None else (tf.stop_gradient(grad) if first_order else grad)
            trainable, rule_state = update_rule(step, trainable, aligned,
                                                tf.stop_gradient(loss) if first_order else loss, rule_state)
            trainable = list(trainable)
        state = list(state)
        trajectory.append(trainable)
        states.append(state)
        losses.append(loss)
    return InnerLoopResult(trainable, state, trajectory, states, losses, rule_state)


def adapt_network(
    learner,
    weights,
    x,
    y,
    steps: int,
    step_sizes: Callable,
    training: bool = True,
    first_order: bool = False,
    values_for_step: Optional[Callable] = None,
    mask=None,
    update_rule: Optional[Callable] = None,
    rule_state=None,
) -> InnerLoopResult:
    """`inner_loop` on a learner's network and support loss.

    Args:
        learner: a `tfmeta.learners.Learner` (its `call_network` and
            `loss_and_metrics` give the forward pass and the support loss).
        weights: the starting `Weights` (trainable, non_trainable).
        x, y: the support set.
        steps, step_sizes, first_order, values_for_step, update_rule,
            rule_state: as in `inner_loop`.
        training: passed to the network.
        mask: optional `(S,)` support mask (1 real, 0 padding): the support
            loss is the mean over the real points (0 when there are none).

    Returns:
        An `InnerLoopResult`.

    Example:

    ```python
    result = adapt_network(maml, maml.initial_weights(), support_x, support_y, steps=5,
                           step_sizes=lambda s: [0.4] * len(maml.model.trainable_variables))
    ```
    """
    from tfmeta.learners.base import Weights  # noqa: PLC0415 - base imports nothing from here

    forward = lambda w, s, inputs: learner.call_network(Weights(w, s), inputs, training=training)
    if mask is None:
        loss_fn = lambda outputs, labels: learner.loss_and_metrics(outputs, labels)[0]
    else:
        loss_fn = lambda outputs, labels: learner.loss_and_metrics(outputs, labels, mask=mask)[0]
    return inner_loop(forward, loss_fn, weights.trainable, weights.non_trainable, x, y, steps, step_sizes,
                      first_order=first_order, values_for_step=values_for_step, update_rule=update_rule,
                      rule_state=rule_state)
