"""Helpers of the amortized family: input features, metadata checks, Gaussian likelihoods."""

import math

import keras
import tensorflow as tf

from tfmeta.learners.amortized.sets import mlp_stack


LOG_2PI = math.log(2.0 * math.pi)


def identity_features(input_dim: int = 1, dtype=None) -> keras.Model:
    """A built model that returns its input `(n, input_dim)` (the features of a regressor's `x`).

    The "network" of a learner whose encoders read the raw inputs (a CNP on 1-D
    functions): no variables; its `Input` gives the export its example shape.
    """
    if not isinstance(input_dim, int) or isinstance(input_dim, bool) or input_dim < 1:
        raise ValueError(f"`input_dim` must be a positive integer. Received: input_dim={input_dim!r}")
    inputs = keras.Input((input_dim,), dtype=dtype, name="x")
    return keras.Model(inputs, keras.layers.Identity(dtype=dtype)(inputs), name="identity_features")


def output_size(model: keras.Model, name: str = "model") -> int:
    """The static size of the last axis of `model`'s (first) output.

    Raises:
        ValueError: if the model has no output of known size.
    """
    if not model.outputs or model.outputs[0].shape[-1] is None:
        raise ValueError(f"`{name}` must have one output with a known last dimension. Received: {model.name!r}")
    return int(model.outputs[0].shape[-1])


def check_metadata_dim(metadata_dim):
    """`metadata_dim` if None or a positive int.

    Raises:
        ValueError: otherwise.
    """
    if metadata_dim is not None and (not isinstance(metadata_dim, int) or isinstance(metadata_dim, bool)
                                     or metadata_dim < 1):
        raise ValueError(f"`metadata_dim` must be None or a positive integer. Received: metadata_dim={metadata_dim!r}")
    return metadata_dim


def task_metadata(learner, metadata, rank: int = 1):
    """The task's metadata as float32 if the learner conditions on it, else None.

    Args:
        learner: a learner with `metadata_dim` (None: metadata is ignored).
        metadata: the task's description: `(M,)` (`rank=1`, a regression task)
            or `(ways, M)` (`rank=2`, per class), or None.
        rank: the rank one task's metadata must have.

    Raises:
        ValueError: if the learner conditions on metadata and none is given,
            or its shape is not `(..., metadata_dim)` of that rank.
    """
    if learner.metadata_dim is None:
        return None
    if metadata is None:
        raise ValueError(f"{type(learner).__name__} conditions on task metadata of size {learner.metadata_dim}: "
                         f"pass `metadata` (episodes: a TaskEpisode with metadata). Received: metadata=None")
    metadata = tf.convert_to_tensor(metadata)
    # (A last dimension unknown while tracing passes: exports check it at run time.)
    if metadata.shape.rank != rank or metadata.shape[-1] not in (None, learner.metadata_dim):
        expected = "(M,)" if rank == 1 else "(ways, M)"
        raise ValueError(f"`metadata` of one task must have shape {expected} with M = metadata_dim = "
                         f"{learner.metadata_dim}. Received: metadata.shape={metadata.shape}")
    return tf.cast(metadata, tf.float32)


def gaussian_log_likelihood(targets, mean, stddev):
    """`log N(y; mean, stddev^2)` per point, summed over the output dimensions: `(n,)` from `(n, d)`."""
    z = (targets - mean) / stddev
    return tf.reduce_sum(-0.5 * tf.square(z) - tf.math.log(stddev) - 0.5 * LOG_2PI, axis=-1)


def gaussian_task_metrics(outputs: dict, targets, mask=None) -> dict:
    """Per-task `loss` (negative log-likelihood), `log_likelihood` and `mse`, means over each task's real targets.

    Args:
        outputs: `{"mean": (..., n, d), "stddev": (..., n, d)}`.
        targets: `(..., n, d)`.
        mask: optional `(..., n)`: 1 a real target, 0 padding.

    Returns:
        A dict of `(...)` tensors (scalars for one task), float32 under mixed precision.
    """
    mean = outputs["mean"]
    if mean.dtype in (tf.float16, tf.bfloat16):
        mean = tf.cast(mean, tf.float32)
    stddev = tf.cast(outputs["stddev"], mean.dtype)
    targets = tf.cast(targets, mean.dtype)
    log_p = gaussian_log_likelihood(targets, mean, stddev)  # (..., n)
    squared = tf.reduce_mean(tf.square(targets - mean), axis=-1)  # (..., n)
    if mask is None:
        reduce = lambda v: tf.reduce_mean(v, axis=-1)
    else:
        mask = tf.cast(mask, mean.dtype)
        count = tf.maximum(tf.reduce_sum(mask, axis=-1), tf.ones([], mean.dtype))
        reduce = lambda v: tf.reduce_sum(v * mask, axis=-1) / count
    log_likelihood = reduce(log_p)
    return {"loss": -log_likelihood, "log_likelihood": log_likelihood, "mse": reduce(squared)}


def gaussian_loss_and_metrics(outputs: dict, targets, mask=None):
    """The negative log-likelihood per target point (the loss) and the metrics of a Gaussian prediction.

    Args:
        outputs: `{"mean": (n, d), "stddev": (n, d)}`.
        targets: `(n, d)`.
        mask: optional `(n,)`: 1 a real target, 0 padding.

    Returns:
        `(loss, {"log_likelihood", "mse"})`: the mean over the real targets of
        `-log N(y; mean, stddev^2)`, of `log N(...)` and of `|y - mean|^2 / d`;
        float32 (also under mixed precision).
    """
    metrics = gaussian_task_metrics(outputs, targets, mask)
    return metrics["loss"], {"log_likelihood": metrics["log_likelihood"], "mse": metrics["mse"]}


def trainable_of(parts) -> list:
    """The trainable variables of Keras layers or models, each once, in order."""
    out, seen = [], set()
    for part in parts:
        for v in part.trainable_variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


class WholeMetaBatch:
    """Mixin (before `Learner` in the bases) for learners whose `per_task_metrics(episodes,
    training)` computes every task of a meta-batch in one pass: meta-gradients and evaluation
    on the whole batch at once instead of task by task (`map_over_tasks`). The gradient of the
    mean task loss is the mean of the tasks' gradients. A learner whose network holds state
    (BatchNorm statistics) goes task by task (`Learner`'s methods)."""

    def meta_gradients(self, episodes, step=None, training: bool = True, loss_scale=None):
        if self.state_variables:
            return super().meta_gradients(episodes, step, training, loss_scale)
        meta_vars = self.meta_variables
        with tf.GradientTape() as tape:
            per_task = self.per_task_metrics(episodes, training)
            loss = tf.reduce_mean(per_task["loss"])
            scaled = loss if loss_scale is None else loss * tf.cast(loss_scale, loss.dtype)
        grads = tape.gradient(scaled, meta_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        dtype = self.metrics_dtype()
        metrics = {name: tf.cast(tf.reduce_mean(value), dtype) for name, value in per_task.items()}
        return grads, metrics, self.current_state()

    def evaluate_tasks(self, episodes, steps=None, training: bool = True) -> dict:
        self.check_adapt_steps(steps)
        if self.state_variables:
            return super().evaluate_tasks(episodes, steps, training)
        dtype = self.metrics_dtype()
        return {name: tf.cast(value, dtype) for name, value in self.per_task_metrics(episodes, training).items()}


def generator_and_metadata_encoder(outputs: int, features: int, generator_sizes, metadata_dim, metadata_sizes,
                                   name: str, seed=None):
    """A weight generator MLP (output layer at zero: it starts from the base weights) of the
    features (and of the encoded task metadata), and the metadata encoder (None without metadata).

    Returns:
        `(generator, metadata_encoder, parts)`, `parts` the Keras models holding their variables.
    """
    seed_at = lambda i: None if seed is None else seed + 100 * i
    inputs = features + (metadata_sizes[-1] if metadata_dim else 0)
    generator = mlp_stack(tuple(generator_sizes) + (outputs,), inputs, name, seed=seed_at(0), last_initializer="zeros")
    encoder = None
    if metadata_dim:
        encoder = mlp_stack(metadata_sizes, metadata_dim, "metadata_encoder", seed=seed_at(1))
    return generator, encoder, [generator] + ([encoder] if encoder is not None else [])
