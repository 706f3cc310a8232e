"""`MatchingNetwork` (Vinyals et al., 2016): attention over the support set, with optional full context embeddings."""

import keras
import tensorflow as tf

from tfmeta.learners.base import check_positive, check_steps
from tfmeta.learners.metric.embedding import EmbeddingLearner, embedding_shape, num_classes
from tfmeta.learners.metric.protonet import cosine_similarities


def class_log_probabilities(scores, labels, ways) -> tf.Tensor:
    """`log P(y = k | x, S) = log sum_{i: y_i = k} softmax_i(scores)`: the attention's mass on each class.

    Computed per class with a log-sum-exp, so that a class whose attention
    underflows in float32 gets a finite log-probability (the log of the
    attention summed in probability space would be `-inf`).

    Args:
        scores: `(Q, S)` attention scores of each query over the support set.
        labels: `(S,)` int labels in `[0, ways)` of the support set.
        ways: the number of classes N (a scalar).

    Returns:
        `(Q, N)` log-probabilities; each row's exponentials sum to 1.
    """
    log_attention = tf.transpose(tf.nn.log_softmax(scores, axis=-1))  # (S, Q)
    # Shift each class by its largest term: exact for any constant, hence no gradient through it.
    class_max = tf.stop_gradient(tf.math.unsorted_segment_max(log_attention, labels, ways))  # (N, Q)
    shifted = tf.exp(log_attention - tf.gather(class_max, labels))  # (S, Q), each class's largest term is 1
    class_sums = tf.math.unsorted_segment_sum(shifted, labels, ways)  # (N, Q)
    return tf.transpose(tf.math.log(class_sums) + class_max)  # (Q, N)


class MatchingNetwork(EmbeddingLearner):
    """Matching Networks: a query's class distribution is its attention over the support set.

    ```
    a(x, x_i) = softmax_i(scale * cos(f(x, S), g(x_i, S)))     # attention over the S support examples
    P(y = k | x, S) = sum_i a(x, x_i) [y_i = k]                # outputs: log P, (Q, N)
    loss = -log P(y | x, S) on the query set                   # the default cross-entropy of log P
    ```

    (Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS 2016,
    eqs. 1-2.) Without full context embeddings `f = g = ` the embedding
    network; the task state is the support embeddings and their one-hot
    labels `((S, E), (S, N))`, for any number of classes and of shots per class
    (unequal too). The outputs are log-probabilities, so the default
    cross-entropy (of their softmax, itself) is the paper's loss, and an
    export's `probabilities` are `P(y | x, S)`.

    **Full context embeddings** (`fce=True`; the paper's appendix A):

    ```
    g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)          # bidirectional LSTM over the support set, skip connection
    f(x, S) = attLSTM(f'(x), g(S), K) = h_K:         # K steps of reading g(S) by attention
        h_0 = f'(x), c_0 = 0
        r_{k-1} = sum_i softmax_i(h_{k-1}^T g(x_i)) g(x_i)
        ĥ_k, c_k = LSTM([f'(x), r_{k-1}], h_{k-1}, c_{k-1})
        h_k = ĥ_k + f'(x)
    ```

    `f' = g' = ` the embedding network; both LSTMs have E units (the skip
    connections add their outputs to E-wide embeddings). The paper writes
    the LSTM step as `LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})`, the read-out
    concatenated to the hidden state; the gates are affine in the
    concatenation, so feeding `r_{k-1}` with the input instead is the same
    function (and a standard `LSTMCell`). The paper leaves K and h_0 open:
    h_0 = f'(x) and c_0 = 0 follow the implementation of Hariharan and
    Girshick (`facebookresearch/low-shot-shrink-hallucinate`), which Chen et
    al.'s `CloserLookFewShot` (`methods/matchingnet.py`) and easyfsl copy;
    they take K = |S|, the support size, where this class takes a fixed
    `fce_steps` (default 5, |S| of a 5-way 1-shot task), so that a query costs
    the same whatever the support set. g depends on the order of the support
    set (the LSTM reads it as a sequence); the plain model does not. The LSTMs'
    variables are `extra_variables` (meta-learned, checkpointed, exported).

    **Scale.** The paper's softmax is over raw cosines. Embeddings after a
    ReLU (Conv-4's) are non-negative, so their cosines lie in [0, 1]: with one
    shot of N classes the attention on a perfect match is at most
    `e / (e + N - 1)`, 0.40 for 5 ways, so the loss cannot go below
    -log 0.40 = 0.91 however good the embedding, and its gradient keeps
    pushing every cosine towards 0 or 1. `cosine_scale` multiplies the
    cosines: 1.0 is the paper's model; the default 10 is the scale of
    Prototypical Networks' cosine variant here (TADAM's metric scaling,
    Oreshkin et al. 2018), with which that bound is `e^10 / (e^10 + 4)` =
    0.9998 for 5 ways. The reference
    implementations sharpen it too: Hariharan and Girshick leave the query
    unnormalised (its norm acts as a temperature), Chen et al. multiply by 100.
    Measured on the Omniglot sample (`trainers.matching` defaults, 5-way 1-shot,
    500 steps, 200 test tasks): 79.1 ± 1.4% with 10, 64.4 ± 1.7% with 1 (its
    training loss stalls at 1.2).

    Args:
        embedding: the embedding network, a built `keras.Model` with a defined
            output shape `(n, E)` (the paper's: `tfmeta.models.conv4(ways=None)`,
            64 features on 28x28 Omniglot).
        fce: full context embeddings (the bidirectional and attention LSTMs).
        fce_steps: K, the attention LSTM's processing steps (`fce=True`).
        cosine_scale: the factor of the cosines before the softmax (1.0: the paper).
        seed: integer seed of the LSTMs' initialisers (None: Keras's global state).
        name: the registry name.

    Raises:
        ValueError: if the embedding's output is not a vector per example, or
            on a non-positive `cosine_scale` or `fce_steps`.

    Example:

    ```python
    matching = tfmeta.learners.MatchingNetwork(tfmeta.models.conv4(ways=None), fce=True)
    state = matching.adapt(support_x, support_y)         # (g(S) (S, 64), one-hot labels (S, N))
    log_probs = matching.predict(state, query_x)         # (queries, N), log P(y | x, S)
    ```
    """

    def __init__(self, embedding: keras.Model, fce: bool = False, fce_steps: int = 5, cosine_scale: float = 10.0,
                 seed: int | None = None, name: str = "matching"):
        super().__init__(embedding, name=name)
        shape = embedding_shape(embedding)
        if len(shape) != 1:
            raise ValueError(
                "Matching Networks compare vectors: the embedding must output (n, E). "
                f"Received: embedding output shape (n, {', '.join(map(str, shape))})"
            )
        if not isinstance(fce, bool):
            raise ValueError(f"`fce` must be True or False. Received: fce={fce!r}")
        self.fce = fce
        self.fce_steps = check_steps("fce_steps", fce_steps)
        self.cosine_scale = check_positive("cosine_scale", cosine_scale)
        self.embedding_size = shape[0]
        self.support_lstm = self.query_cell = None
        if fce:
            units = self.embedding_size
            # float32 LSTMs (float64 for a float64 network), also under mixed precision: they are small.
            dtype = self.metrics_dtype().name
            seeded = lambda kind, i: kind(seed=None if seed is None else seed + i)
            lstm = lambda i, **kwargs: keras.layers.LSTM(
                units, return_sequences=True, use_cudnn=False, dtype=dtype,
                kernel_initializer=seeded(keras.initializers.GlorotUniform, i),
                recurrent_initializer=seeded(keras.initializers.Orthogonal, i), **kwargs)
            # use_cudnn=False: the same graph on any device, so that an export made on a GPU serves on a CPU.
            self.support_lstm = keras.layers.Bidirectional(lstm(0), backward_layer=lstm(1, go_backwards=True),
                                                           merge_mode="sum", dtype=dtype, name="fce_support_lstm")
            self.query_cell = keras.layers.LSTMCell(
                units, dtype=dtype, kernel_initializer=seeded(keras.initializers.GlorotUniform, 2),
                recurrent_initializer=seeded(keras.initializers.Orthogonal, 2), name="fce_query_lstm")
            self.support_lstm(tf.zeros([1, 2, units], dtype))  # build
            self.query_cell(tf.zeros([1, 2 * units], dtype), [tf.zeros([1, units], dtype)] * 2)

    @property
    def extra_variables(self) -> list:
        """The LSTMs' variables (`fce=True`): the bidirectional LSTM's, then the attention LSTM's."""
        if not self.fce:
            return []
        return list(self.support_lstm.trainable_variables) + list(self.query_cell.trainable_variables)

    def config(self) -> dict:
        return {**super().config(), "fce": self.fce, "fce_steps": self.fce_steps, "cosine_scale": self.cosine_scale}

    def _lstm_dtype(self, x):
        return tf.cast(x, self.metrics_dtype())

    def support_context(self, support_embeddings):
        """g(S): the support embeddings, read by the bidirectional LSTM with a skip connection (`fce=True`).

        Args:
            support_embeddings: `(S, E)` g'(x_i), in the support set's order.

        Returns:
            `(S, E)` g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i); the input itself without FCE.
        """
        if not self.fce:
            return support_embeddings
        g_prime = self._lstm_dtype(support_embeddings)
        both = self.support_lstm(g_prime[None])[0]  # (S, E): forward + backward hidden states
        return tf.cast(both + g_prime, tf.float32)

    def query_context(self, query_embeddings, support_context):
        """f(x, S): the attention LSTM's K steps over g(S) (`fce=True`); the input itself without FCE.

        Args:
            query_embeddings: `(Q, E)` f'(x).
            support_context: `(S, E)` g(S).

        Returns:
            `(Q, E)` f(x, S) = h_K.
        """
        if not self.fce:
            return query_embeddings
        f_prime, g = self._lstm_dtype(query_embeddings), self._lstm_dtype(support_context)
        h, c = f_prime, tf.zeros_like(f_prime)  # (Q, E) each
        for _ in range(self.fce_steps):
            attention = tf.nn.softmax(tf.matmul(h, g, transpose_b=True), axis=-1)  # (Q, S)
            read_out = tf.matmul(attention, g)  # (Q, E)
            h_hat, (_, c) = self.query_cell(tf.concat([f_prime, read_out], axis=-1), [h, c])
            h = h_hat + f_prime
        return tf.cast(h, tf.float32)

    def task_state(self, support_embeddings, support_y):
        """`(g(S) (S, E), one-hot labels (S, N))`: what a query attends to."""
        return self.support_context(support_embeddings), tf.one_hot(support_y, num_classes(support_y))

    def attention_scores(self, task_state, query_embeddings) -> tf.Tensor:
        """`(Q, S)` scores `cosine_scale * cos(f(x, S), g(x_i, S))`, before the softmax over the support set."""
        support_context, _ = task_state
        queries = self.query_context(query_embeddings, support_context)
        return self.cosine_scale * cosine_similarities(queries, support_context)

    def predict_embedded(self, task_state, query_embeddings):
        """`(Q, N)` log P(y | x, S) of query embeddings f'(x)."""
        _, one_hot = task_state
        labels = tf.argmax(one_hot, axis=-1, output_type=tf.int32)  # (S,)
        return class_log_probabilities(self.attention_scores(task_state, query_embeddings), labels,
                                       tf.shape(one_hot)[-1])
