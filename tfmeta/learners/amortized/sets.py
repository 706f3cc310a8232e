"""What the amortized learners share: MLPs over the points of a set, masked pooling, attention.

Every function here works on one task (no tasks axis): `tf.map_fn` runs the
learners task by task (`tfmeta.learners.map_over_tasks`). A set is a
`(n, d)` tensor with an optional mask `(n,)` (1 a real point, 0 padding);
every pooling is invariant to the order of the real points and ignores the
padded ones whatever their values.
"""

import math

import keras
import tensorflow as tf


def check_sizes(name: str, sizes) -> tuple:
    """`sizes` as a tuple of positive ints.

    Raises:
        ValueError: if `sizes` is empty or holds anything but positive ints.
    """
    sizes = tuple(sizes) if isinstance(sizes, (tuple, list)) else None
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"`{name}` must be a non-empty sequence of positive integers. Received: {name}={sizes!r}")
    return sizes


class MLP(keras.layers.Layer):
    """An MLP on the last axis of a tensor of any rank: ReLU between layers, the last one linear.

    (The reference's `batch_mlp`; a Layer rather than a `keras.Sequential`, whose
    `Input` would fix the rank: the learners run it on one task `(n, d)` and on
    a meta-batch `(tasks, n, d)` alike.)

    Args:
        sizes: output sizes of the layers (the last one is linear).
        seed: integer seed of the initialisers (None: Keras's global state).
        last_initializer: kernel initializer of the last layer (default Glorot
            uniform); e.g. zeros for a generator that starts at zero.
    """

    def __init__(self, sizes, seed=None, last_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.sizes = check_sizes(f"{self.name} sizes", sizes)
        init = lambda i: keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
        self.dense = []
        for i, units in enumerate(self.sizes):
            last = i == len(self.sizes) - 1
            kernel = last_initializer if last and last_initializer is not None else init(i)
            self.dense.append(keras.layers.Dense(units, activation=None if last else "relu",
                                                 kernel_initializer=kernel, name=f"dense{i}"))

    def build(self, input_shape):
        size = input_shape[-1]
        for layer in self.dense:
            layer.build((None, size))
            size = layer.units

    def call(self, x):
        for layer in self.dense:
            x = layer(x)
        return x


def mlp_stack(sizes, input_dim: int, name: str, seed=None, last_initializer=None) -> MLP:
    """A built `MLP` on `input_dim`-sized inputs (see `MLP`)."""
    mlp = MLP(sizes, seed=seed, last_initializer=last_initializer, name=name)
    mlp.build((None, input_dim))
    return mlp


def set_mean(values, mask=None):
    """The mean over the real points of a set: `(..., d)` from `(..., n, d)` and a mask `(..., n)`.

    Zeros when no point is real (an empty context): the "nothing seen yet"
    representation, never NaN.
    """
    one = tf.ones([], values.dtype)
    if mask is None:
        count = tf.cast(tf.shape(values)[-2], values.dtype)
        return tf.reduce_sum(values, axis=-2) / tf.maximum(count, one)
    mask = tf.cast(mask, values.dtype)[..., None]
    return tf.reduce_sum(values * mask, axis=-2) / tf.maximum(tf.reduce_sum(mask, axis=-2), one)


def masked_class_means(values, labels, ways, mask=None):
    """The mean of each class's real points: `(ways, d)` from `(n, d)`, labels `(n,)` in `[0, ways)`.

    A class without a real point gets zeros.
    """
    weights = tf.ones_like(values[:, :1]) if mask is None else tf.cast(mask, values.dtype)[:, None]
    sums = tf.math.unsorted_segment_sum(values * weights, labels, ways)
    counts = tf.math.unsorted_segment_sum(weights, labels, ways)
    return sums / tf.maximum(counts, tf.ones([], values.dtype))


def masked_softmax(logits, mask=None):
    """Softmax over the last axis (the keys), with padded keys at weight 0 exactly.

    Rows with no real key get all-zero weights (their attention output is 0).
    """
    if mask is None:
        return tf.nn.softmax(logits, axis=-1)
    mask = tf.cast(mask, logits.dtype)
    large = tf.constant(1e9 if logits.dtype != tf.float16 else 6e4, logits.dtype)
    return tf.nn.softmax(logits - (1.0 - mask) * large, axis=-1) * mask


class MultiHeadAttention(keras.layers.Layer):
    """Multi-head dot-product attention as the ANP reference (`multihead_attention`).

    Per head `h` (head size `d_v / num_heads`), with projections without bias:

    ```
    o_h = softmax((q W_q^h)(k W_k^h)^T / sqrt(head_size)) (v W_v^h)
    out = sum_h o_h W_o^h                                  # (m, d_v)
    ```

    `W_q, W_k, W_v` are initialised from `N(0, d_k^-1)`, `W_o` from `N(0, d_v^-1)`
    (the reference's initialisers); padded keys get weight 0 (`masked_softmax`).

    Args:
        num_heads: number of heads; must divide `d_v`.
        key_dim: size of the queries and keys, `d_k`.
        value_dim: size of the values and of the output, `d_v`.
        seed: integer seed of the initialisers.

    Raises:
        ValueError: if `num_heads` does not divide `value_dim`.
    """

    def __init__(self, num_heads: int, key_dim: int, value_dim: int, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_heads, int) or num_heads < 1 or value_dim % num_heads:
            raise ValueError(f"`num_heads` must be a positive divisor of the value size {value_dim}. "
                             f"Received: num_heads={num_heads!r}")
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        head = value_dim // num_heads
        self.head_size = head
        normal = lambda std, i: keras.initializers.RandomNormal(stddev=std, seed=None if seed is None else seed + i)
        self.wq = self.add_weight(shape=(num_heads, key_dim, head), initializer=normal(key_dim ** -0.5, 0), name="wq")
        self.wk = self.add_weight(shape=(num_heads, key_dim, head), initializer=normal(key_dim ** -0.5, 1), name="wk")
        self.wv = self.add_weight(shape=(num_heads, value_dim, head), initializer=normal(key_dim ** -0.5, 2),
                                  name="wv")
        self.wo = self.add_weight(shape=(num_heads, head, value_dim), initializer=normal(value_dim ** -0.5, 3),
                                  name="wo")

    def call(self, queries, keys, values, key_mask=None):
        """`(..., m, d_v)` from queries `(..., m, d_k)`, keys `(..., n, d_k)`, values `(..., n, d_v)`
        and a key mask `(..., n)` (leading axes: tasks, or none).

        (`key_mask`, not `mask`: Keras gives a `mask` argument a meaning of its own.)
        """
        q = tf.einsum("...md,hde->...hme", queries, self.wq)
        k = tf.einsum("...nd,hde->...hne", keys, self.wk)
        v = tf.einsum("...nd,hde->...hne", values, self.wv)
        logits = tf.einsum("...hme,...hne->...hmn", q, k) / math.sqrt(self.head_size)
        weights = masked_softmax(logits, None if key_mask is None else key_mask[..., None, None, :])
        return tf.einsum("...hme,hed->...md", tf.einsum("...hmn,...hne->...hme", weights, v), self.wo)


class SelfAttentionBlock(keras.layers.Layer):
    """One layer of self-attention over a set (ANP's "stacked multihead", Transformer-style).

    ```
    h = LayerNorm(h + MultiHeadAttention(h, h, h))
    h = LayerNorm(h + Dense(relu(Dense(h))))
    ```

    Padded points are masked as keys (they never reach a real point); their
    own rows are computed and ignored downstream.

    Args:
        num_heads: heads of the attention.
        dim: size of the points.
        seed: integer seed.
    """

    def __init__(self, num_heads: int, dim: int, seed=None, **kwargs):
        super().__init__(**kwargs)
        init = lambda i: keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
        self.attention = MultiHeadAttention(num_heads, dim, dim, seed=seed, name="attention")
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.norm2 = keras.layers.LayerNormalization(name="norm2")
        self.hidden = keras.layers.Dense(dim, activation="relu", kernel_initializer=init(10), name="hidden")
        self.out = keras.layers.Dense(dim, kernel_initializer=init(11), name="out")
        self.dim = dim

    def build(self, input_shape=None):
        for layer in (self.norm1, self.norm2, self.hidden):
            layer.build((None, self.dim))
        self.out.build((None, self.dim))

    def call(self, h, point_mask=None):
        h = self.norm1(h + self.attention(h, h, h, point_mask))
        return self.norm2(h + self.out(self.hidden(h)))
