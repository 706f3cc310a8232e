"""Memory-augmented neural network (Santoro et al. 2016) and its LSTM-only baseline.

The task is a label-offset sequence (`tfmeta.data.sequences`): at step `t` the
network sees image `x_t` and the one-hot label of step `t-1`, and predicts the label
of `x_t`. What it learns about the task lives in its recurrent state: an LSTM
controller's `(h, c)` and, for the MANN, an external memory `M` (`slots x width`)
with its usage and read weights. Per step (`MemoryNetwork.step`):

```
h_t, c_t  = LSTM([x_t, y_{t-1}, r_{t-1}], (h_{t-1}, c_{t-1}))
k_t       = tanh(W_k h_t)          (one key per read head, also the written vector)
a_t       = W_a h_t + b_a          (one write gate per head)
w^lu      = 1 on the n least used slots of w^u_{t-1} (n = read heads), 0 elsewhere
w^w_t     = sigmoid(a_t) w^r_{t-1} + (1 - sigmoid(a_t)) w^lu       (LRUA)
M_t       = M_{t-1} with its least used slot zeroed, + sum_heads w^w_t k_t^T
w^r_t     = softmax_i(cos(k_t, M_t(i)))                             (content addressing)
r_t       = w^r_t M_t
w^u_t     = gamma w^u_{t-1} + sum_heads w^r_t + sum_heads w^w_t
logits_t  = W_o [h_t, r_t] + b_o
```

The LSTM baseline (`memory_network(use_memory=False)`) is the same controller with
neither memory nor reads: `logits_t = W_o h_t + b_o`.

How the sequence task maps onto the learner contract (`tfmeta.learners.base`): a
task is an `Episode` whose support set is the labelled sequence in order and whose
query set is empty (`tfmeta.data.sequence_dataset`).

* `task_loss(episode)`: the cross-entropy of the online predictions at every step
  of the sequence (each prediction made before that step's label is shown),
  averaged over the steps; metrics: `accuracy` over all steps and `instance_k`, the
  accuracy on the `k`-th presentations of the classes (Santoro et al.'s table).
* `adapt(support_x, support_y)`: runs the labelled sequence; the task state is the
  recurrent state after it (memory, usage, read weights, reads, controller `h, c`)
  and the one-hot of the last label (the label input of the next step).
* `predict(task_state, x)`: each row of `x` as the next step after the state
  (independently: every row from the same state), logits `(n, ways)`.
* `evaluate_task`: the online metrics of the sequence (as `task_loss`), which the
  evaluator averages with confidence intervals.

The loop, the evaluator, checkpoints and `tf.distribute` are the shared ones;
`meta_gradients` and `evaluate_tasks` are overridden to run a meta-batch of
sequences as one batched recurrence (the same values as the per-task default, which
runs the tasks one by one through `tf.map_fn`, but each time step is one batched
matrix product instead of one per task). Exports serve one step of the recurrence
(`tfmeta.export.recurrent`).
"""


import keras
import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.data.sequences import presentation_indices, previous_labels
from tfmeta.learners.base import CLASSIFICATION, Learner, TaskLoss, check_steps

MEMORY_INIT = 1e-6  # every memory entry at the start of a sequence (cosine similarity needs non-zero rows)
NORM_EPS = 1e-12  # inside the square root of the norms (a zeroed slot has norm 0)


# ------------------------------------------------------------------ the memory


def cosine_similarity(keys, memory):
    """Cosine similarity of each key with each memory slot.

    Args:
        keys: `(..., R, M)`, one key per head.
        memory: `(..., N, M)`, N slots.

    Returns:
        `(..., R, N)`: `k . M(i) / (|k| |M(i)|)` (norms as `sqrt(sum x^2 + 1e-12)`).
    """
    dot = tf.einsum("...rm,...nm->...rn", keys, memory)
    key_norm = tf.sqrt(tf.reduce_sum(tf.square(keys), axis=-1) + NORM_EPS)  # (..., R)
    slot_norm = tf.sqrt(tf.reduce_sum(tf.square(memory), axis=-1) + NORM_EPS)  # (..., N)
    return dot / (key_norm[..., :, None] * slot_norm[..., None, :])


def content_weights(keys, memory):
    """Read weights by content: softmax over slots of the cosine similarity, `(..., R, N)`."""
    return tf.nn.softmax(cosine_similarity(keys, memory), axis=-1)


def least_used(usage, n: int):
    """The `n` least used slots (ties: the lowest index first).

    Args:
        usage: `(..., N)` usage weights.
        n: how many slots (the number of read heads).

    Returns:
        `(weights, least)`: `weights` `(..., N)` 1 on the `n` least used slots and 0
        elsewhere (`w^lu`), `least` `(...,)` int32 the index of the least used one.
    """
    _, index = tf.math.top_k(-usage, k=n)  # (..., n), smallest usage first
    weights = tf.reduce_sum(tf.one_hot(index, usage.shape[-1], dtype=usage.dtype), axis=-2)
    return weights, index[..., 0]


def lrua_step(memory, usage, read_weights, keys, gates, gamma: float):
    """One step of least-recently-used access: write, then read by content.

    Args:
        memory: `(..., N, M)` before the step.
        usage: `(..., N)` usage weights before the step (`w^u_{t-1}`).
        read_weights: `(..., R, N)` read weights of the previous step (`w^r_{t-1}`).
        keys: `(..., R, M)` this step's keys (read by, and written into memory).
        gates: `(..., R)` write gates before the sigmoid (`alpha`).
        gamma: usage decay in [0, 1].

    Returns:
        `(memory, usage, read_weights, reads, write_weights)` after the step:
        `(..., N, M)`, `(..., N)`, `(..., R, N)`, `(..., R, M)`, `(..., R, N)`.

    Example:

    ```python
    memory, usage, read_w, reads, write_w = lrua_step(memory, usage, read_w, keys, gates, gamma=0.95)
    ```
    """
    heads, slots = keys.shape[-2], memory.shape[-2]
    least_used_weights, least = least_used(usage, heads)  # from w^u_{t-1}
    sigma = tf.sigmoid(gates)[..., None]  # (..., R, 1)
    write_weights = sigma * read_weights + (1.0 - sigma) * least_used_weights[..., None, :]  # (..., R, N)
    keep = 1.0 - tf.one_hot(least, slots, dtype=memory.dtype)  # (..., N): the least used slot is zeroed
    memory = memory * keep[..., None] + tf.einsum("...rn,...rm->...nm", write_weights, keys)
    read_weights = content_weights(keys, memory)
    reads = tf.einsum("...rn,...nm->...rm", read_weights, memory)
    usage = gamma * usage + tf.reduce_sum(read_weights, axis=-2) + tf.reduce_sum(write_weights, axis=-2)
    return memory, usage, read_weights, reads, write_weights


# ------------------------------------------------------------------ the network


class MemoryNetwork(keras.Model):
    """An LSTM controller with (or without) an LRUA external memory, run step by step.

    Args:
        ways: classes per sequence (the size of the label inputs and the logits).
        input_shape: shape of one example, e.g. `(20, 20, 1)` (flattened at the input).
        controller_units: LSTM units (Santoro et al.: 200).
        memory_slots: N, memory rows (128).
        memory_width: M, the size of a row (40).
        read_heads: R (4).
        gamma: usage decay (0.95).
        use_memory: False: the LSTM baseline (no memory, no reads).
        dtype: the layers' dtype (e.g. `"float64"` for gradient checks).

    Raises:
        ValueError: on a non-positive size, `ways < 2`, `read_heads > memory_slots`
            or `gamma` outside [0, 1].

    Example:

    ```python
    net = MemoryNetwork(ways=5, input_shape=(20, 20, 1))
    state = net.initial_state(batch=16)
    logits, state = net.run(state, images, label_inputs)   # (16, T, 5)
    ```
    """

    def __init__(self, ways: int, input_shape, controller_units: int = 200, memory_slots: int = 128,
                 memory_width: int = 40, read_heads: int = 4, gamma: float = 0.95, use_memory: bool = True,
                 dtype=None, name: str | None = None):
        super().__init__(name=name or ("mann_network" if use_memory else "lstm_network"), dtype=dtype)
        if not isinstance(ways, int) or isinstance(ways, bool) or ways < 2:
            raise ValueError(f"`ways` must be an integer >= 2. Received: ways={ways!r}")
        for arg, value in (("controller_units", controller_units), ("memory_slots", memory_slots),
                           ("memory_width", memory_width), ("read_heads", read_heads)):
            check_steps(arg, value)
        if read_heads > memory_slots:
            raise ValueError(f"`read_heads` must be <= `memory_slots`. Received: read_heads={read_heads}, "
                             f"memory_slots={memory_slots}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"`gamma` must be a number in [0, 1]. Received: gamma={gamma!r}")
        shape = tuple(int(d) for d in input_shape)
        if not shape or any(d < 1 for d in shape):
            raise ValueError(f"`input_shape` must be a non-empty shape of positive sizes. "
                             f"Received: input_shape={input_shape!r}")
        self.ways, self.example_shape = ways, shape
        self.units, self.slots, self.width, self.heads = controller_units, memory_slots, memory_width, read_heads
        self.gamma, self.use_memory = float(gamma), bool(use_memory)
        self.input_dim = int(np.prod(shape))
        self.controller = keras.layers.LSTMCell(controller_units, dtype=dtype, name="controller")
        if self.use_memory:
            self.key_layer = keras.layers.Dense(read_heads * memory_width, activation="tanh", dtype=dtype, name="keys")
            self.gate_layer = keras.layers.Dense(read_heads, dtype=dtype, name="write_gates")
        self.classifier = keras.layers.Dense(ways, dtype=dtype, name="classifier")
        self.build()

    def build(self, input_shape=None):
        reads = self.heads * self.width if self.use_memory else 0
        self.controller.build((None, self.input_dim + self.ways + reads))
        if self.use_memory:
            self.key_layer.build((None, self.units))
            self.gate_layer.build((None, self.units))
        self.classifier.build((None, self.units + reads))
        self.built = True

    @property
    def state_shapes(self) -> dict:
        """Shape of one sequence's recurrent state, by name (no batch axis)."""
        shapes = {"h": (self.units,), "c": (self.units,)}
        if self.use_memory:
            shapes.update(memory=(self.slots, self.width), usage=(self.slots,),
                          read_weights=(self.heads, self.slots), reads=(self.heads, self.width))
        return shapes

    def initial_state(self, batch) -> dict:
        """The state at the start of a sequence, `(batch, ...)` per entry: zeros, and
        every memory entry `MEMORY_INIT`."""
        dtype = self.compute_dtype
        state = {name: tf.zeros(tf.concat([[batch], shape], 0), dtype) for name, shape in self.state_shapes.items()}
        if self.use_memory:
            state["memory"] = state["memory"] + tf.constant(MEMORY_INIT, dtype)
        return state

    def step(self, state: dict, x, label_input):
        """One time step for a batch of sequences.

        Args:
            state: the recurrent state, `(B, ...)` per entry.
            x: `(B, D)` flattened examples.
            label_input: `(B, ways)` the previous step's one-hot label (zeros: none).

        Returns:
            `(logits (B, ways), new state)`.
        """
        batch = tf.shape(x)[0]
        parts = [x, label_input]
        if self.use_memory:
            parts.append(tf.reshape(state["reads"], [batch, self.heads * self.width]))
        h, (h, c) = self.controller(tf.concat(parts, axis=-1), [state["h"], state["c"]])
        if not self.use_memory:
            return self.classifier(h), {"h": h, "c": c}
        keys = tf.reshape(self.key_layer(h), [batch, self.heads, self.width])
        memory, usage, read_weights, reads, _ = lrua_step(state["memory"], state["usage"], state["read_weights"],
                                                          keys, self.gate_layer(h), self.gamma)
        logits = self.classifier(tf.concat([h, tf.reshape(reads, [batch, self.heads * self.width])], axis=-1))
        return logits, {"h": h, "c": c, "memory": memory, "usage": usage, "read_weights": read_weights,
                        "reads": reads}

    def run(self, state: dict, images, label_inputs):
        """Runs a batch of sequences from `state`.

        Args:
            state: `(B, ...)` per entry.
            images: `(B, T, *example_shape)`.
            label_inputs: `(B, T, ways)` (`tfmeta.data.previous_labels`).

        Returns:
            `(logits (B, T, ways), final state)`.
        """
        dtype = self.compute_dtype
        batch, length = tf.shape(images)[0], tf.shape(images)[1]
        x = tf.cast(tf.reshape(images, [batch, length, self.input_dim]), dtype)
        time_major = (tf.transpose(x, [1, 0, 2]), tf.transpose(tf.cast(label_inputs, dtype), [1, 0, 2]))

        def body(carry, inputs):
            _, previous = carry
            return self.step(previous, *inputs)

        first = tf.zeros([batch, self.ways], dtype)
        logits, states = tf.scan(body, time_major, initializer=(first, state))
        final = {name: tf.cond(length > 0, lambda v=value: v[-1], lambda s=state[name]: s)
                 for name, value in states.items()}
        return tf.transpose(logits, [1, 0, 2]), final

    def call(self, inputs):
        """Logits `(B, T, ways)` of sequences from the initial state: `inputs = (images, label_inputs)`."""
        images, label_inputs = inputs
        return self.run(self.initial_state(tf.shape(images)[0]), images, label_inputs)[0]

    def get_config(self) -> dict:
        return {"ways": self.ways, "input_shape": self.example_shape, "controller_units": self.units,
                "memory_slots": self.slots, "memory_width": self.width, "read_heads": self.heads,
                "gamma": self.gamma, "use_memory": self.use_memory}


def memory_network(ways: int = 5, input_shape=(20, 20, 1), use_memory: bool = True, dtype=None,
                   seed: int | None = None, **kwargs) -> MemoryNetwork:
    """A `MemoryNetwork` (seeded with `seed` if given): the MANN's, or the LSTM baseline's with `use_memory=False`."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return MemoryNetwork(ways, input_shape, use_memory=use_memory, dtype=dtype, **kwargs)


# ------------------------------------------------------------------ the learner


class MANN(Learner):
    """Memory-augmented neural network on label-offset sequences (Santoro et al. 2016).

    See the module docstring for the recurrence and for how `adapt` / `predict` /
    `task_loss` map the sequence task onto the learner contract.

    Args:
        model: a `MemoryNetwork` (with memory for `"mann"`, without for `"lstm_seq"`).
        task: `"classification"` (the only one).
        name: the registry name.
        instances: presentations per class in the sequences (the `instance_k`
            metrics, k = 1..instances; Santoro et al.: 10).

    Raises:
        TypeError: if `model` is not a `MemoryNetwork`.
        ValueError: on a regression task, a bad `instances`, or (for the
            registry names) a network with/without memory under the wrong name.

    Example:

    ```python
    mann = MANN(memory_network(ways=5, input_shape=(20, 20, 1)))
    loss = mann.task_loss(sequence_episode).loss           # online cross-entropy over the sequence
    state = mann.adapt(images[:7], labels[:7])             # memory after 7 labelled steps
    logits = mann.predict(state, images[7:8])              # the prediction at step 7
    ```
    """

    training_at_test = False

    def __init__(self, model: MemoryNetwork, task: str = CLASSIFICATION, name: str | None = None,
                 instances: int = 10):
        if not isinstance(model, MemoryNetwork):
            raise TypeError(f"`model` must be a MemoryNetwork (tfmeta.learners.recurrent.memory_network). "
                            f"Received: model={type(model).__name__}")
        if task != CLASSIFICATION:
            raise ValueError(f"{type(self).__name__} classifies label-offset sequences. Received: task={task!r}")
        super().__init__(model, task, name or ("mann" if model.use_memory else "lstm_seq"))
        self.instances = check_steps("instances", instances)

    # ----------------------------------------------------------- properties

    @property
    def ways(self) -> int:
        return self.model.ways

    @property
    def input_shape(self) -> tuple:
        return self.model.example_shape

    def metric_names(self) -> tuple:
        return ("accuracy",) + tuple(f"instance_{k}" for k in range(1, self.instances + 1))

    def config(self) -> dict:
        return {**super().config(), **self.model.get_config(), "instances": self.instances}

    # ------------------------------------------------------------ sequences

    def check_sequence(self, images, labels) -> None:
        """Raises ValueError (static shapes) on sequences that do not fit the network.

        Args:
            images: `(B, T, *example_shape)`.
            labels: `(B, T)`.
        """
        shape = tuple(images.shape[2:])
        if len(images.shape) != 2 + len(self.input_shape) or shape != self.input_shape:
            raise ValueError(f"Sequence images must be (tasks, steps, *{self.input_shape}). "
                             f"Received: images.shape={tuple(images.shape)}")
        if len(labels.shape) != 2 or labels.shape[:2] != images.shape[:2]:
            raise ValueError(f"Sequence labels must be (tasks, steps) matching the images "
                             f"{tuple(images.shape[:2])}. Received: labels.shape={tuple(labels.shape)}")

    def sequence_logits(self, images, labels):
        """Online logits of a batch of labelled sequences from the initial state.

        Args:
            images: `(B, T, *example_shape)`.
            labels: int `(B, T)` in `0..ways-1`.

        Returns:
            `(logits (B, T, ways), final state)`: `logits[:, t]` is the prediction
            for step `t` before its label is shown.
        """
        self.check_sequence(images, labels)
        state = self.model.initial_state(tf.shape(images)[0])
        return self.model.run(state, images, previous_labels(labels, self.ways, self.model.compute_dtype))

    def sequence_metrics(self, logits, labels) -> tuple:
        """Per-sequence loss and metrics of online logits.

        Args:
            logits: `(B, T, ways)`.
            labels: int `(B, T)`.

        Returns:
            `(loss (B,), {name: (B,)})`: the mean cross-entropy over the steps, the
            accuracy over the steps, and `instance_k` the accuracy over the steps
            that are the `k`-th presentation of their class (0 for a sequence
            without such steps).
        """
        labels = tf.cast(labels, tf.int32)
        logits = tf.cast(logits, tf.float32) if logits.dtype in (tf.float16, tf.bfloat16) else logits
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), logits.dtype)
        metrics = {"accuracy": tf.reduce_mean(correct, axis=-1)}
        presentation = presentation_indices(labels, self.ways)
        for k in range(1, self.instances + 1):
            mask = tf.cast(tf.equal(presentation, k), logits.dtype)
            metrics[f"instance_{k}"] = tf.math.divide_no_nan(tf.reduce_sum(correct * mask, -1), tf.reduce_sum(mask, -1))
        return loss, metrics

    def _batch_metrics(self, episodes: Episode) -> tuple:
        logits, _ = self.sequence_logits(episodes.support_x, episodes.support_y)
        return self.sequence_metrics(logits, episodes.support_y)

    # ------------------------------------------------------------ contract

    def adapt(self, support_x, support_y, steps=None, training: bool = True):
        """Runs one labelled sequence `(T, *shape)`, `(T,)`; returns the task state.

        Returns:
            `{"state": recurrent state (1, ...) per entry, "last_label": (1, ways)
            one-hot of the last label (zeros for an empty sequence)}`.
        """
        self.check_adapt_steps(steps)
        images, labels = tf.convert_to_tensor(support_x)[None], tf.convert_to_tensor(support_y)[None]
        _, state = self.sequence_logits(images, labels)
        one_hot = tf.one_hot(tf.cast(labels, tf.int32), self.ways, dtype=self.model.compute_dtype)  # (1, T, ways)
        last = tf.pad(one_hot, [[0, 0], [1, 0], [0, 0]])[:, -1]  # the last label; zeros for an empty sequence
        return {"state": state, "last_label": last}

    def predict(self, task_state, x, training: bool = True):
        """Logits `(n, ways)`: each row of `x` `(n, *shape)` as the next step after `task_state`."""
        n = tf.shape(x)[0]
        state = {name: tf.repeat(value, n, axis=0) for name, value in task_state["state"].items()}
        flat = tf.cast(tf.reshape(x, [n, self.model.input_dim]), self.model.compute_dtype)
        logits, _ = self.model.step(state, flat, tf.repeat(task_state["last_label"], n, axis=0))
        return logits

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        """The online cross-entropy of one sequence (the episode's support set), averaged over its steps."""
        loss, metrics = self._batch_metrics(Episode(episode.support_x[None], episode.support_y[None],
                                                    episode.query_x[None], episode.query_y[None]))
        return TaskLoss(loss[0], {name: value[0] for name, value in metrics.items()}, self.current_state())

    def evaluate_task(self, episode: Episode, steps=None, training: bool = True):
        """The online loss and metrics of one sequence (as `task_loss`)."""
        self.check_adapt_steps(steps)
        result = self.task_loss(episode, training=training)
        return result.loss, result.metrics

    # ----------------------------------------------- batched meta-batches

    def meta_gradients(self, episodes: Episode, step=None, training: bool = True, loss_scale=None):
        """The mean meta-gradient over a meta-batch of sequences, as one batched recurrence."""
        meta_vars = self.meta_variables
        dtype = self.metrics_dtype()
        with tf.GradientTape() as tape:
            losses, metrics = self._batch_metrics(episodes)
            loss = tf.reduce_mean(losses)
            scaled = loss if loss_scale is None else loss * tf.cast(loss_scale, loss.dtype)
        grads = tape.gradient(scaled, meta_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        means = {name: tf.cast(tf.reduce_mean(value), dtype) for name, value in metrics.items()}
        means["loss"] = tf.cast(loss, dtype)
        return grads, means, self.current_state()

    def evaluate_tasks(self, episodes: Episode, steps=None, training: bool = True) -> dict:
        """Per-sequence online metrics of a meta-batch: `{name: (tasks,)}`."""
        self.check_adapt_steps(steps)
        dtype = self.metrics_dtype()
        losses, metrics = self._batch_metrics(episodes)
        out = {name: tf.cast(value, dtype) for name, value in metrics.items()}
        out["loss"] = tf.cast(losses, dtype)
        return out


def build_mann(model: MemoryNetwork, **kwargs) -> MANN:
    """The registry's `"mann"`: a `MemoryNetwork` with memory.

    Raises:
        ValueError: if the network has no memory (that is `"lstm_seq"`).
    """
    if not isinstance(model, MemoryNetwork) or not model.use_memory:
        raise ValueError(f"'mann' needs a MemoryNetwork with memory (memory_network(use_memory=True)). "
                         f"Received: model={getattr(model, 'name', type(model).__name__)!r}")
    return MANN(model, **{**kwargs, "name": "mann"})


def build_lstm_seq(model: MemoryNetwork, **kwargs) -> MANN:
    """The registry's `"lstm_seq"`: the LSTM baseline, a `MemoryNetwork` without memory.

    Raises:
        ValueError: if the network has a memory (that is `"mann"`).
    """
    if not isinstance(model, MemoryNetwork) or model.use_memory:
        raise ValueError(f"'lstm_seq' needs a MemoryNetwork without memory (memory_network(use_memory=False)). "
                         f"Received: model={getattr(model, 'name', type(model).__name__)!r}")
    return MANN(model, **{**kwargs, "name": "lstm_seq"})
