"""In-graph request validation for served signatures.

The checks are runtime ops (`tf.debugging.Assert` over `tf.raw_ops.Shape`), so they
run whatever static shape the signature declares: TF Serving's C++ server feeds
tensors without checking them against the signature, and a bad request must end
in a clear `InvalidArgumentError`, not in a kernel failing deep inside the model.
Only core TensorFlow ops are used.
"""

import tensorflow as tf


def _shape(x):
    # A runtime Shape op: never folded to a constant at trace time.
    return tf.raw_ops.Shape(input=x, out_type=tf.int32)


def check_finite(x, name: str) -> list:
    """Checks every entry of a floating-point `x` is finite (no NaN, no Inf); no check for other dtypes.

    A NaN pixel would otherwise come back as NaN logits (or, through a
    softmax, an arbitrary class) instead of an error.
    """
    if not x.dtype.is_floating:
        return []
    bad = tf.math.count_nonzero(tf.logical_not(tf.math.is_finite(x)), dtype=tf.int32)
    return [
        tf.debugging.Assert(
            tf.equal(bad, 0),
            [f"`{name}` must be finite (no NaN or Inf). Received: non-finite entries in {name}:", bad],
            name=f"check_{name}_finite",
        )
    ]


def check_batch(x, name: str, example_shape, allow_empty: bool = False) -> list:
    """Checks `x` is `[batch, *example_shape]` with `batch >= 1` (or `>= 0` with `allow_empty`),
    and finite (`check_finite`).

    Args:
        x: the input tensor.
        name: the input's name in the signature (used in messages).
        example_shape: the expected shape of one example, e.g. `(28, 28, 1)`.
        allow_empty: accept `batch == 0` (a support set may be empty when the
            task's description is given: zero-shot).

    Returns:
        The assert ops, to use as control dependencies.
    """
    expected = [int(d) for d in example_shape]
    rank = len(expected) + 1
    shape = _shape(x)
    actual_rank = tf.raw_ops.Size(input=shape, out_type=tf.int32)
    rank_ok = tf.equal(actual_rank, rank)
    # Pad with -1 so the comparison is well defined whatever rank was received.
    padded = tf.concat([shape, tf.fill([rank], -1)], axis=0)[:rank]
    dims_ok = tf.reduce_all(tf.equal(padded[1:], tf.constant(expected, tf.int32)))
    pretty = "[batch, " + ", ".join(str(d) for d in expected) + "]"
    shape_check = tf.debugging.Assert(
        tf.logical_and(rank_ok, dims_ok),
        [f"`{name}` must have shape {pretty}. Received: {name}.shape=", shape],
        summarize=8,
        name=f"check_{name}_shape",
    )
    if allow_empty:
        return [shape_check] + check_finite(x, name)
    return check_finite(x, name) + [
        shape_check,
        tf.debugging.Assert(
            tf.logical_or(tf.logical_not(rank_ok), padded[0] > 0),
            [f"`{name}` must hold at least one example. Received: {name}.shape=", shape],
            summarize=8,
            name=f"check_{name}_not_empty",
        ),
    ]


def check_same_batch(x, x_name: str, y, y_name: str) -> list:
    """Checks `x` and `y` have the same leading (batch) size."""
    x_size = _shape(x)[0]
    y_size = tf.concat([_shape(y), [-1]], axis=0)[0]
    return [
        tf.debugging.Assert(
            tf.equal(x_size, y_size),
            [f"`{y_name}` must have one entry per example of `{x_name}`. Received: {x_name} has", x_size,
             f"examples, {y_name} has", y_size],
            name=f"check_{y_name}_size",
        )
    ]


def check_vector(x, name: str, size: int) -> list:
    """Checks `x` has shape `[size]` (e.g. a task's description, `task_metadata`) and is finite."""
    shape = _shape(x)
    ok = tf.logical_and(tf.equal(tf.raw_ops.Size(input=shape, out_type=tf.int32), 1),
                        tf.reduce_all(tf.equal(tf.concat([shape, [-1]], axis=0)[:1], size)))
    return [
        tf.debugging.Assert(
            ok,
            [f"`{name}` must have shape [{size}]. Received: {name}.shape=", shape],
            summarize=8,
            name=f"check_{name}_shape",
        )
    ] + check_finite(x, name)


def check_rank(x, name: str, rank: int, pretty: str) -> list:
    """Checks `x` has rank `rank` (`pretty` describes the expected shape)."""
    shape = _shape(x)
    return [
        tf.debugging.Assert(
            tf.equal(tf.raw_ops.Size(input=shape, out_type=tf.int32), rank),
            [f"`{name}` must have shape {pretty}. Received: {name}.shape=", shape],
            summarize=8,
            name=f"check_{name}_rank",
        )
    ]


def check_labels(labels, name: str, ways: int, any_ways: bool = False) -> list:
    """Checks integer labels lie in `[0, ways)` and every class has an example.

    Args:
        labels: the support labels.
        name: the input's name in the signature.
        ways: the head size (fixed-ways models), or the largest number of
            classes a request may hold (`any_ways`).
        any_ways: the request's classes are `0..max(labels)`, any number up to
            `ways`; otherwise exactly `0..ways-1`.

    Returns:
        The assert ops.
    """
    labels = tf.reshape(labels, [-1])
    in_range = tf.reduce_all(tf.logical_and(labels >= 0, labels < ways))
    served = f"up to {ways} classes" if any_ways else f"{ways}-way tasks"
    range_check = tf.debugging.Assert(
        in_range,
        [f"`{name}` must lie in [0, {ways}) (this model serves {served}). Received: {name}=", labels],
        summarize=64,
        name=f"check_{name}_range",
    )
    with tf.control_dependencies([range_check]):
        counts = tf.math.bincount(labels, minlength=ways, maxlength=ways, dtype=tf.int32)
        if any_ways:  # the request's classes: 0..max(labels)
            counts = counts[: tf.reduce_max(labels) + 1]
        missing = tf.reshape(tf.where(tf.equal(counts, 0)), [-1])
        expected = "every class 0..max(label)" if any_ways else f"every class 0..{ways - 1}"
        present = tf.debugging.Assert(
            tf.equal(tf.size(missing), 0),
            [f"{expected} needs at least one example in `{name}`. "
             f"Received no example of classes:", tf.cast(missing, tf.int32), f"; {name}=", labels],
            summarize=64,
            name=f"check_{name}_classes",
        )
    return [range_check, present]


def check_shots(labels, name: str, max_shots: int) -> list:
    """Checks no class has more than `max_shots` examples in `labels`."""
    labels = tf.reshape(labels, [-1])
    counts = tf.math.bincount(labels, dtype=tf.int32)
    return [
        tf.debugging.Assert(
            tf.reduce_all(counts <= max_shots),
            [f"`{name}` may hold at most {max_shots} examples of a class (this model's max_shots). "
             "Received examples per class:", counts],
            summarize=64,
            name=f"check_{name}_shots",
        )
    ]


def with_checks(checks: list, *tensors):
    """Returns `tensors` behind `checks` (identity ops depending on them)."""
    with tf.control_dependencies(checks):
        out = tuple(tf.identity(t) for t in tensors)
    return out if len(out) > 1 else out[0]
