"""`LSTMMetaLearner`: the LSTM meta-learner of Ravi & Larochelle (2017), "Optimization as a model for few-shot learning".

A learned optimizer: a coordinate-wise LSTM, its parameters shared by every
weight of the learner's network, whose cell state *is* the network's weights.
It sits in the recurrent family (what it keeps about a task is the state of a
recurrence); the brief of issue 12 also lists it among the gradient-based
learners, and it adapts through the gradient family's one inner loop
(`tfmeta.learners.gradient.inner_loop`, its `update_rule` hook), so it shares
MAML's `stateless_call` forward passes, BatchNorm state handling and
first-order switch instead of a second loop.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import CLASSIFICATION, Learner, TaskLoss, Weights, check_positive, check_steps
from tfmeta.learners.gradient.inner_loop import adapt_network

# Andrychowicz et al. (2016), appendix A: p = 10.
PREPROCESS_P = 10.0


def preprocess(x, p: float = PREPROCESS_P):
    """Andrychowicz et al.'s (2016) gradient preprocessing, element-wise.

    ```
    x -> (log|x| / p, sign(x))   if |x| >= exp(-p)
         (-1, exp(p) * x)        otherwise
    ```

    Args:
        x: a tensor of any shape (gradients, or a loss).
        p: the scale `p` (> 0); 10 in the paper.

    Returns:
        A tensor of shape `x.shape + (2,)`.

    Example:

    ```python
    preprocess(tf.constant([1.0, 1e-5]))   # [[0, 1], [-1, exp(10) * 1e-5 = 0.2203]]
    ```
    """
    x = tf.convert_to_tensor(x)
    threshold = tf.cast(math.exp(-p), x.dtype)
    large = tf.abs(x) >= threshold
    magnitude = tf.math.log(tf.maximum(tf.abs(x), threshold)) / tf.cast(p, x.dtype)  # no log(0) on either branch
    first = tf.where(large, magnitude, -tf.ones_like(x))
    second = tf.where(large, tf.sign(x), tf.cast(math.exp(p), x.dtype) * x)
    return tf.stack([first, second], axis=-1)


class LSTMMetaLearner(Learner):
    """Ravi & Larochelle's (2017) LSTM meta-learner: a learned update rule whose cell state is the weights.

    Every scalar weight of the network (every "coordinate", all variables
    flattened into one vector `theta` of `P` entries) runs the same small
    two-layer LSTM, with parameters shared across coordinates. At inner step
    `t`, with `g_t` the support-loss gradient at `theta_{t-1}` and `L_t` the
    support loss:

    ```
    x_t = [preprocess(g_t), preprocess(L_t)]                    # (P, 4), preprocess: Andrychowicz et al.
    h_t, s_t = LSTM(x_t, (h_{t-1}, s_{t-1}))                    # (P, hidden_size): first layer, per coordinate
    f_t = sigmoid(W_F . [h_t, theta_{t-1}, f_{t-1}] + b_F)      # forget gate, (P,)
    i_t = sigmoid(W_I . [h_t, theta_{t-1}, i_{t-1}] + b_I)      # input gate: a learning rate per coordinate
    theta_t = f_t * theta_{t-1} + i_t * (-g_t)                  # the cell state: the new weights
    ```

    `theta_0` (the initial cell state) is the network's own trainable values,
    meta-learned with the LSTM. At initialisation `W_F = W_I = 0`,
    `b_F = forget_bias` (5: `f = 0.9933`) and `b_I = logit(inner_lr)`, so the
    first updates are SGD with step `inner_lr` (and a weight decay of
    `1 - sigmoid(forget_bias)` per step): `theta_1 = f theta_0 - inner_lr g_1`.
    `hidden_size=0` drops the first layer (the gates read `x_t` directly).
    `f_0 = i_0 = 0`, `h_0 = s_0 = 0`.

    As Ravi & Larochelle, the meta-gradient ignores second derivatives through
    the gradient inputs (`first_order=True`: `g_t` and `L_t` are constants
    for the outer tape; the dependence of the query loss on `theta_0` and on
    the LSTM through `f_t * theta_{t-1}`, the gates and the final weights is
    kept). `first_order=False` differentiates through them too (for checks).

    BatchNorm runs on the batch's statistics while meta-training (and, as
    MAML here, at test: `training_at_test`); its weights and biases are
    coordinates like any other. The network is any built `keras.Model` on
    the learner contract (Conv-4 by default in `trainers.lstm_meta`).

    Args:
        model: the learner's network, a built `keras.Model`.
        task: `"classification"` or `"regression"`.
        inner_steps: updates while meta-training.
        eval_inner_steps: updates at evaluation (None: `inner_steps`).
        inner_lr: the input gate's initial value (the learning rate the
            meta-learner starts as), in (0, 1).
        forget_bias: the forget gate's initial bias (`sigmoid(5) = 0.9933`).
        hidden_size: units of the first (ordinary) LSTM layer; 20 in the
            paper; 0: none.
        first_order: ignore second derivatives through the gradient and loss
            inputs (the paper's approximation).
        seed: integer seed of the first layer's initialiser (None: Keras's
            global state, which the loop seeds).
        name: the registry name (default `"lstm_meta"`).

    Raises:
        ValueError: on a non-positive step count, an `inner_lr` outside
            (0, 1), a non-finite `forget_bias`, or a negative `hidden_size`.
        TypeError: if `model` is not a `keras.Model`.

    Example:

    ```python
    learner = tfmeta.learners.LSTMMetaLearner(tfmeta.models.conv4(ways=5), inner_steps=5, inner_lr=0.1)
    grads, metrics, state = learner.meta_gradients(episodes, step=optimizer.iterations)
    weights = learner.adapt(support_x, support_y)           # the cell state after 5 steps: Weights
    logits = learner.predict(weights, query_x)
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        task: str = CLASSIFICATION,
        inner_steps: int = 5,
        eval_inner_steps=None,
        inner_lr: float = 0.1,
        forget_bias: float = 5.0,
        hidden_size: int = 20,
        first_order: bool = True,
        seed: int | None = None,
        name: str | None = None,
    ):
        check_steps("inner_steps", inner_steps)
        if eval_inner_steps is not None:
            check_steps("eval_inner_steps", eval_inner_steps, allow_zero=True)
        check_positive("inner_lr", inner_lr)
        if not inner_lr < 1:
            raise ValueError(f"`inner_lr` is the input gate's initial value, a sigmoid: it must be in (0, 1). "
                             f"Received: inner_lr={inner_lr!r}")
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)) or not math.isfinite(forget_bias):
            raise ValueError(f"`forget_bias` must be a finite number. Received: forget_bias={forget_bias!r}")
        check_steps("hidden_size", hidden_size, allow_zero=True)
        super().__init__(model, task, name=name or "lstm_meta")
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = float(inner_lr)
        self.forget_bias = float(forget_bias)
        self.hidden_size = hidden_size
        self.first_order = bool(first_order)
        if not model.trainable_variables:
            raise ValueError(f"`model` has no trainable variables: nothing to adapt. Received: model={model.name!r}")
        dtype = model.trainable_variables[0].dtype
        self._sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
        self._shapes = [tuple(v.shape) for v in model.trainable_variables]
        features = hidden_size if hidden_size else 4
        self._lstm = []
        if hidden_size:  # kernel (4 + H, 4H), gates in Keras's order i, f, c, o; bias with the forget gate at 1
            kernel = keras.initializers.GlorotUniform(seed=seed)((4 + hidden_size, 4 * hidden_size))
            bias = np.zeros(4 * hidden_size)
            bias[hidden_size:2 * hidden_size] = 1.0
            self._lstm = [keras.Variable(kernel, dtype=dtype, name="lstm_meta_lstm_kernel"),
                          keras.Variable(bias, dtype=dtype, name="lstm_meta_lstm_bias")]
        # Gate weights over [features, theta, previous gate], zero: the first updates are SGD.
        self.forget_kernel = keras.Variable(np.zeros(features + 2), dtype=dtype, name="lstm_meta_forget_kernel")
        self.forget_bias_variable = keras.Variable(self.forget_bias, dtype=dtype, name="lstm_meta_forget_bias")
        self.input_kernel = keras.Variable(np.zeros(features + 2), dtype=dtype, name="lstm_meta_input_kernel")
        self.input_bias_variable = keras.Variable(math.log(inner_lr / (1 - inner_lr)), dtype=dtype,
                                                  name="lstm_meta_input_bias")

    # ------------------------------------------------------------------ state

    @property
    def extra_variables(self) -> list:
        """The meta-learner's parameters: the first layer's kernel and bias (if
        any), then the forget gate's kernel and bias, then the input gate's."""
        return self._lstm + [self.forget_kernel, self.forget_bias_variable, self.input_kernel,
                             self.input_bias_variable]

    @property
    def eval_steps(self) -> int:
        return self.eval_inner_steps

    def config(self) -> dict:
        return {**super().config(), "inner_steps": self.inner_steps, "eval_inner_steps": self.eval_inner_steps,
                "inner_lr": self.inner_lr, "forget_bias": self.forget_bias, "hidden_size": self.hidden_size,
                "first_order": self.first_order}

    def gates_at_start(self) -> dict:
        """`{"forget": f, "input": i}` at the current gate biases with zero gate inputs (the
        values at initialisation: `sigmoid(forget_bias)` and `inner_lr`)."""
        sigmoid = lambda v: float(1 / (1 + np.exp(-float(v.numpy()))))
        return {"forget": sigmoid(self.forget_bias_variable), "input": sigmoid(self.input_bias_variable)}

    def scalars(self) -> dict:
        """The gates' biases as gate values (`lstm_meta/forget_gate_bias`, `lstm_meta/input_gate_bias`)."""
        gates = self.gates_at_start()
        return {"lstm_meta/forget_gate_bias": gates["forget"], "lstm_meta/input_gate_bias": gates["input"]}

    # -------------------------------------------------------------- the update

    def initial_rule_state(self) -> tuple:
        """`(h, s, f, i)` of every coordinate before the first step: zeros, `(P, H)`, `(P, H)`, `(P,)`, `(P,)`."""
        dtype = self.forget_kernel.dtype
        coordinates = sum(self._sizes)
        hidden = tf.zeros([coordinates, self.hidden_size], dtype)
        gate = tf.zeros([coordinates], dtype)
        return hidden, hidden, gate, gate

    def update_rule(self, step, trainable, grads, loss, rule_state):
        """One step of the coordinate-wise LSTM (`inner_loop`'s `update_rule`; see the class docstring).

        Args:
            step: the inner step (unused: the rule is the same at every step).
            trainable: the current weights `theta_{t-1}`, one tensor per variable.
            grads: the support-loss gradients, aligned with `trainable`
                (None: the loss does not depend on the variable; 0 is used).
            loss: the support loss (scalar).
            rule_state: `(h, s, f, i)` from the previous step (`initial_rule_state()` first).

        Returns:
            `(new trainable, new rule_state)`.
        """
        del step
        theta = tf.concat([tf.reshape(t, [-1]) for t in trainable], axis=0)  # (P,)
        grad = tf.concat([tf.reshape(tf.zeros_like(t) if g is None else tf.cast(g, t.dtype), [-1])
                          for t, g in zip(trainable, grads)], axis=0)  # (P,)
        h, s, f_prev, i_prev = rule_state
        coordinates = tf.shape(theta)[0]
        loss_in = tf.broadcast_to(preprocess(tf.cast(loss, theta.dtype))[None, :], [coordinates, 2])
        x = tf.concat([preprocess(grad), loss_in], axis=-1)  # (P, 4)
        if self.hidden_size:
            kernel, bias = self._lstm
            gates = tf.matmul(tf.concat([x, h], axis=-1), kernel) + bias  # (P, 4H)
            gi, gf, gc, go = tf.split(gates, 4, axis=-1)
            s = tf.sigmoid(gf) * s + tf.sigmoid(gi) * tf.tanh(gc)
            h = tf.sigmoid(go) * tf.tanh(s)
            features = h
        else:
            features = x
        gate_in = lambda prev: tf.concat([features, theta[:, None], prev[:, None]], axis=-1)  # (P, F + 2)
        f = tf.sigmoid(tf.linalg.matvec(gate_in(f_prev), self.forget_kernel) + self.forget_bias_variable)
        i = tf.sigmoid(tf.linalg.matvec(gate_in(i_prev), self.input_kernel) + self.input_bias_variable)
        theta = f * theta - i * grad  # the cell state: c_t = f_t c_{t-1} + i_t (-g_t)
        pieces = tf.split(theta, self._sizes)
        return [tf.reshape(p, shape) for p, shape in zip(pieces, self._shapes)], (h, s, f, i)

    # -------------------------------------------------------------- the contract

    def _num_steps(self, steps, training) -> int:
        if steps is None:
            return self.inner_steps if training else self.eval_inner_steps
        return check_steps("steps", steps, allow_zero=True)

    def _inner(self, x, y, steps, training):
        return adapt_network(self, self.initial_weights(), x, y, steps, None, training=training,
                             first_order=self.first_order, update_rule=self.update_rule,
                             rule_state=self.initial_rule_state())

    def adapt(self, support_x, support_y, steps=None, training: bool = True) -> Weights:
        """The cell state after `steps` updates on the support set: the adapted weights.

        Returns:
            `Weights`: the adapted trainable values and the non-trainable
            values (BatchNorm state) to run the query with (`predict`).

        Raises:
            ValueError: if `steps` is not a non-negative integer.
        """
        result = self._inner(support_x, support_y, self._num_steps(steps, training), training)
        return Weights(result.trainable, result.non_trainable)

    def predict(self, task_state: Weights, x, training: bool = True):
        outputs, _ = self.call_network(task_state, x, training=training)
        return outputs

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        """Query loss after `inner_steps` updates of the LSTM on the support set.

        Args:
            episode: one task.
            step: unused (no schedule).
            training: passed to the network.

        Returns:
            A `TaskLoss` (the new BatchNorm state is the query pass's).
        """
        del step
        result = self._inner(episode.support_x, episode.support_y, self._num_steps(None, training), training)
        outputs, state = self.call_network(Weights(result.trainable, result.non_trainable), episode.query_x,
                                           training=training)
        loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        return TaskLoss(loss, metrics, list(state))
