"""Conditional Neural Processes (Garnelo et al., 2018), with the Attentive NP's attention as an option.

Regression (`ConditionalNeuralProcess`): an encoder MLP over the context pairs
`(x_i, y_i)`, a permutation-invariant aggregation, and a decoder MLP from the
representation and a target `x` to a Gaussian `(mean, stddev)`, trained by
maximum likelihood. With `attention=True` (Kim et al., 2019, the deterministic
path of the Attentive Neural Process) the context representations first attend
to each other (self-attention) and each target attends to them (multihead
cross-attention) instead of taking their mean: the representation differs per
target, which removes the CNP's underfitting of its own context points.

Classification (`CNPClassifier`): the aggregation is per class, the mean of the
encoded support embeddings of each class, and the decoder scores each class
from its representation and a query's embedding, so any number of classes is
served by one network.

Layer sizes are the reference code's (deepmind/neural-processes,
`conditional_neural_process.ipynb`: encoder `[128, 128, 128, 128]`, decoder
`[128, 128, 2]`, stddev `0.1 + 0.9 * softplus`; `attentive_neural_process.ipynb`:
keys and queries through an MLP `[128, 128]`, 8-head dot-product attention).
"""

import keras
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import REGRESSION, Learner, TaskLoss
from tfmeta.learners.metric.embedding import EmbeddingLearner, num_classes
from tfmeta.learners.amortized import common
from tfmeta.learners.amortized.sets import (
    MultiHeadAttention,
    SelfAttentionBlock,
    check_sizes,
    masked_class_means,
    mlp_stack,
    set_mean,
)


def _check_stddev(min_stddev) -> float:
    if isinstance(min_stddev, bool) or not isinstance(min_stddev, (int, float)) or not 0.0 <= min_stddev < 1.0:
        raise ValueError(f"`min_stddev` must be a number in [0, 1). Received: min_stddev={min_stddev!r}")
    return float(min_stddev)


class ConditionalNeuralProcess(common.WholeMetaBatch, Learner):
    """A Conditional Neural Process for regression (the Attentive NP's deterministic path with `attention=True`).

    For one task with context `(x_i, y_i)_{i<n}` (a mask marks the real points) and
    targets `x_t`:

    ```
    r_i  = encoder([f(x_i), y_i])                          # MLP 128-128-128-128
    r    = mean_i r_i                                      # attention=False (CNP)
    r_t  = MHA(q=a(f(x_t)), k=a(f(x_i)), v=SA(r_i))_t      # attention=True (ANP): a = MLP 128-128,
                                                           # SA = self-attention layers over the context
    mu_t, s_t = decoder([r or r_t, m, f(x_t)])             # MLP 128-128-2; m = metadata encoding
    sigma_t = 0.1 + 0.9 * softplus(s_t)
    loss = -mean_t log N(y_t; mu_t, sigma_t^2)             # per target point
    ```

    `adapt` returns the context's representation (`{"representation"}`, or the
    attention's keys, values and mask), `predict` a Gaussian per target
    (`{"mean", "stddev"}`, `probabilistic = True`). Metrics: `log_likelihood`
    per target point and `mse`; model selection on `log_likelihood`. An empty
    context gives the zero representation (the prior), so with `metadata_dim`
    the learner predicts from the task's description alone.

    Args:
        model: the network of the inputs, `f` (default: the identity on
            `input_dim`-sized inputs, as the reference code; any built Keras
            model mapping `(n, *x_shape)` to `(n, F)`).
        input_dim: size of `x` when `model` is None.
        output_dim: size of `y`.
        encoder_sizes: the encoder MLP's layer sizes (the last is `r`'s size).
        decoder_sizes: the decoder MLP's hidden layer sizes (its last layer,
            `2 * output_dim`, is added).
        attention: the Attentive NP's attention (self- and cross-attention).
        num_heads: heads of the attentions (must divide `encoder_sizes[-1]`).
        attention_sizes: the MLP that maps `f(x)` to keys and queries.
        self_attention_layers: layers of self-attention over the context
            (with `attention`; 0: cross-attention only, as the reference notebook).
        metadata_dim: size of the task description the learner conditions on
            (None: none).
        metadata_sizes: the MLP that encodes the description.
        min_stddev: the lower bound of the predicted stddev (the reference's 0.1).
        seed: integer seed of the initialisers.
        name: the registry name (default `"cnp"`, `"anp"` with attention).

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: on bad sizes, a `num_heads` that does not divide the
            representation size, or a bad `metadata_dim` / `min_stddev`.

    Example:

    ```python
    cnp = ConditionalNeuralProcess()                     # x, y in R
    state = cnp.adapt(context_x, context_y)              # {"representation": (128,)}
    out = cnp.predict(state, target_x)                   # {"mean": (T, 1), "stddev": (T, 1)}
    anp = ConditionalNeuralProcess(attention=True)
    ```
    """

    probabilistic = True

    def __init__(
        self,
        model: keras.Model | None = None,
        input_dim: int = 1,
        output_dim: int = 1,
        encoder_sizes=(128, 128, 128, 128),
        decoder_sizes=(128, 128),
        attention: bool = False,
        num_heads: int = 8,
        attention_sizes=(128, 128),
        self_attention_layers: int = 2,
        metadata_dim: int | None = None,
        metadata_sizes=(128, 128),
        min_stddev: float = 0.1,
        seed: int | None = None,
        name: str | None = None,
    ):
        model = common.identity_features(input_dim) if model is None else model
        super().__init__(model, REGRESSION, name=name or ("anp" if attention else "cnp"))
        if not isinstance(output_dim, int) or isinstance(output_dim, bool) or output_dim < 1:
            raise ValueError(f"`output_dim` must be a positive integer. Received: output_dim={output_dim!r}")
        if not isinstance(self_attention_layers, int) or self_attention_layers < 0:
            raise ValueError(f"`self_attention_layers` must be an integer >= 0. "
                             f"Received: self_attention_layers={self_attention_layers!r}")
        self.metadata_dim = common.check_metadata_dim(metadata_dim)
        self.encoder_sizes = check_sizes("encoder_sizes", encoder_sizes)
        self.decoder_sizes = check_sizes("decoder_sizes", decoder_sizes)
        self.attention = bool(attention)
        self.output_dim = output_dim
        self.min_stddev = _check_stddev(min_stddev)
        self.num_heads, self.self_attention_layers = num_heads, self_attention_layers
        self.attention_sizes = check_sizes("attention_sizes", attention_sizes)
        self.metadata_sizes = check_sizes("metadata_sizes", metadata_sizes)
        features = common.output_size(model)
        r = self.encoder_sizes[-1]
        seed_at = lambda i: None if seed is None else seed + 100 * i
        self.encoder = mlp_stack(self.encoder_sizes, features + output_dim, "encoder", seed=seed_at(0))
        decoder_in = r + features + (self.metadata_sizes[-1] if metadata_dim else 0)
        self.decoder = mlp_stack(self.decoder_sizes + (2 * output_dim,), decoder_in, "decoder", seed=seed_at(1))
        self.parts = [self.encoder, self.decoder]
        self.metadata_encoder = None
        if metadata_dim:
            self.metadata_encoder = mlp_stack(self.metadata_sizes, metadata_dim, "metadata_encoder", seed=seed_at(2))
            self.parts.append(self.metadata_encoder)
        self.self_attention = []
        if self.attention:
            key = self.attention_sizes[-1]
            self.attention_mlp = mlp_stack(self.attention_sizes, features, "attention_mlp", seed=seed_at(3))
            self.cross_attention = MultiHeadAttention(num_heads, key, r, seed=seed_at(4), name="cross_attention")
            self.cross_attention.build(None)
            self.parts += [self.attention_mlp, self.cross_attention]
            for i in range(self_attention_layers):
                block = SelfAttentionBlock(num_heads, r, seed=seed_at(5 + i), name=f"self_attention{i}")
                block.build(None)
                self.self_attention.append(block)
            self.parts += self.self_attention

    # ------------------------------------------------------------------ state

    @property
    def extra_variables(self) -> list:
        """The encoders', attentions' and decoder's weights."""
        return common.trainable_of(self.parts)

    def metrics_dtype(self) -> tf.DType:
        """float64 when the decoder is float64, float32 otherwise."""
        return tf.float64 if self.decoder.trainable_variables[0].dtype == "float64" else tf.float32

    def metric_names(self) -> tuple:
        return ("log_likelihood", "mse")

    def selection_metric(self) -> tuple[str, bool]:
        """The test log-likelihood per target point, higher is better."""
        return ("log_likelihood", True)

    def config(self) -> dict:
        return {**super().config(), "encoder_sizes": list(self.encoder_sizes),
                "decoder_sizes": list(self.decoder_sizes), "attention": self.attention,
                "num_heads": self.num_heads if self.attention else None,
                "attention_sizes": list(self.attention_sizes) if self.attention else None,
                "self_attention_layers": self.self_attention_layers if self.attention else 0,
                "metadata_dim": self.metadata_dim, "min_stddev": self.min_stddev, "output_dim": self.output_dim}

    # ------------------------------------------------------------ the contract

    def _features(self, x, training):
        """`f(x)`: `(..., n, F)` from `(..., n, *x_shape)` (one task, or a meta-batch)."""
        x = tf.convert_to_tensor(x)
        example_rank = len(self.input_shape)
        if x.shape.rank == example_rank + 1:  # one task
            return self.call_network(self.initial_weights(), x, training=training)[0]
        lead = tf.shape(x)[:-example_rank]
        flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-example_rank:]], axis=0))
        outputs, _ = self.call_network(self.initial_weights(), flat, training=training)
        return tf.reshape(outputs, tf.concat([lead, tf.shape(outputs)[-1:]], axis=0))

    def adapt(self, support_x, support_y, steps=None, training: bool = True):
        """The context's representation (every point real, no metadata); see `adapt_task`."""
        return self.adapt_task(support_x, support_y, steps=steps, training=training)

    def adapt_task(self, support_x, support_y, support_mask=None, metadata=None, steps=None, training: bool = True):
        """Encodes the context (one forward pass).

        Args:
            support_x: `(S, *x_shape)` context inputs (S may be 0).
            support_y: `(S, output_dim)` context targets.
            support_mask: optional `(S,)`: padded points (0) are ignored.
            metadata: `(metadata_dim,)` for a learner with `metadata_dim`.
            steps: must be None (one pass).
            training: passed to the input network.

        Returns:
            `{"representation": (R,)}` (CNP) or `{"keys": (S, K), "values": (S, R),
            "mask": (S,)}` (attention), plus `{"metadata": (D,)}` with metadata.

        Raises:
            ValueError: if `steps` is given, or the metadata is missing or misshapen.
        """
        self.check_adapt_steps(steps)
        return self._encode(support_x, support_y, support_mask, metadata, training, batch_rank=0)

    def _encode(self, support_x, support_y, support_mask, metadata, training, batch_rank: int):
        """`adapt_task` for one task (`batch_rank=0`) or a meta-batch (1: a leading tasks axis)."""
        metadata = common.task_metadata(self, metadata, rank=1 + batch_rank)
        features = self._features(support_x, training)  # (..., S, F)
        pairs = tf.concat([features, tf.cast(support_y, features.dtype)], axis=-1)
        encoded = self.encoder(pairs)  # (..., S, R)
        if self.attention:
            values = encoded
            for block in self.self_attention:
                values = block(values, support_mask)
            mask = tf.ones(tf.shape(encoded)[:-1], encoded.dtype) if support_mask is None else \
                tf.cast(support_mask, encoded.dtype)
            state = {"keys": self.attention_mlp(features), "values": values, "mask": mask}
        else:
            state = {"representation": set_mean(encoded, support_mask)}
        if metadata is not None:  # (..., M) -> (..., D); Dense layers want a rank >= 2
            state["metadata"] = self.metadata_encoder(metadata[..., None, :])[..., 0, :]
        return state

    def predict(self, task_state: dict, x, training: bool = True) -> dict:
        """The Gaussian predictive of each target: `{"mean": (T, d), "stddev": (T, d)}`
        (with a leading tasks axis for a meta-batch's state)."""
        features = self._features(x, training)  # (..., T, F)
        points = tf.shape(features)[:-1]
        broadcast = lambda v: tf.broadcast_to(v[..., None, :], tf.concat([points, tf.shape(v)[-1:]], axis=0))
        if self.attention:
            queries = self.attention_mlp(features)
            representation = self.cross_attention(queries, task_state["keys"], task_state["values"],
                                                  task_state["mask"])  # (..., T, R)
        else:
            representation = broadcast(task_state["representation"])
        inputs = [representation]
        if "metadata" in task_state:
            inputs.append(broadcast(task_state["metadata"]))
        inputs.append(tf.cast(features, representation.dtype))
        outputs = self.decoder(tf.concat(inputs, axis=-1))  # (..., T, 2d)
        if outputs.dtype in (tf.float16, tf.bfloat16):
            outputs = tf.cast(outputs, tf.float32)
        mean, raw = tf.split(outputs, 2, axis=-1)
        return {"mean": mean, "stddev": self.min_stddev + (1.0 - self.min_stddev) * tf.nn.softplus(raw)}

    def loss_and_metrics(self, outputs: dict, targets, mask=None):
        """`-log_likelihood` per target point (the loss), `log_likelihood` and `mse` (see
        `common.gaussian_loss_and_metrics`)."""
        return common.gaussian_loss_and_metrics(outputs, targets, mask)

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        """The negative log-likelihood per (real) target point given the (real) context points."""
        state = self.adapt_task(episode.support_x, episode.support_y, episode.support_mask, episode.metadata,
                                training=training)
        outputs = self.predict(state, episode.query_x, training=training)
        loss, metrics = self.loss_and_metrics(outputs, episode.query_y, episode.query_mask)
        return TaskLoss(loss, metrics, self.current_state())

    # ---------------------------------------------------- meta-batches at once

    def per_task_metrics(self, episodes: Episode, training: bool = True) -> dict:
        """`{"loss", "log_likelihood", "mse"}`, each `(tasks,)`, for a whole meta-batch in one pass.

        The same numbers as `task_loss` on each task (masks make the padded
        shapes exact), computed on `(tasks, points, ...)` tensors instead of one
        task at a time: one large op per layer rather than one per task.
        """
        state = self._encode(episodes.support_x, episodes.support_y, episodes.support_mask, episodes.metadata,
                             training, batch_rank=1)
        outputs = self.predict(state, episodes.query_x, training=training)
        return common.gaussian_task_metrics(outputs, episodes.query_y, episodes.query_mask)



class CNPClassifier(EmbeddingLearner):
    """A Conditional Neural Process for few-shot classification: per-class aggregation, any number of classes.

    ```
    e(x)  = embedding(x)                                   # e.g. Conv-4 without head
    r_k   = mean_{i: y_i = k} encoder(e(x_i))              # per class (CNP paper, Omniglot)
    m_k   = metadata_encoder(metadata_k)                   # optional: per-class description
    logit_k(x) = decoder([r_k, m_k, e(x)])                 # one MLP, shared by the classes
    ```

    The decoder scores each class from that class's representation, so the
    logits are equivariant to relabelling the support set and one network
    serves any number of classes (`any_ways`). Like the metric learners, the
    embedding runs on a task's support and query sets in one batch while
    meta-training and on its moving statistics at test (`training_at_test = False`).

    Args:
        embedding: the embedding network, a built Keras model `(n, *x) -> (n, E)`.
        encoder_sizes: the per-example encoder MLP (the last size is `r_k`'s).
        decoder_sizes: the decoder's hidden sizes (a last layer of 1 is added).
        metadata_dim: size of each class's description (None: none).
        metadata_sizes: the MLP that encodes it.
        seed: integer seed of the initialisers.
        name: the registry name.

    Raises:
        ValueError: on bad sizes or `metadata_dim`.

    Example:

    ```python
    cnp = CNPClassifier(tfmeta.models.conv4(ways=None))
    state = cnp.adapt(support_x, support_y)            # (ways, 128) class representations
    logits = cnp.predict(state, query_x)               # (queries, ways)
    ```
    """

    has_embedding = False  # classes are compared by the decoder, not in the embedding space

    def __init__(self, embedding: keras.Model, encoder_sizes=(128, 128), decoder_sizes=(128, 128),
                 metadata_dim: int | None = None, metadata_sizes=(128, 128), seed: int | None = None,
                 name: str = "cnp"):
        super().__init__(embedding, name=name)
        self.metadata_dim = common.check_metadata_dim(metadata_dim)
        self.encoder_sizes = check_sizes("encoder_sizes", encoder_sizes)
        self.decoder_sizes = check_sizes("decoder_sizes", decoder_sizes)
        self.metadata_sizes = check_sizes("metadata_sizes", metadata_sizes)
        features = common.output_size(embedding, "embedding")
        seed_at = lambda i: None if seed is None else seed + 100 * i
        self.encoder = mlp_stack(self.encoder_sizes, features, "encoder", seed=seed_at(0))
        decoder_in = self.encoder_sizes[-1] + features + (self.metadata_sizes[-1] if metadata_dim else 0)
        self.decoder = mlp_stack(self.decoder_sizes + (1,), decoder_in, "decoder", seed=seed_at(1))
        self.parts = [self.encoder, self.decoder]
        self.metadata_encoder = None
        if metadata_dim:
            self.metadata_encoder = mlp_stack(self.metadata_sizes, metadata_dim, "metadata_encoder", seed=seed_at(2))
            self.parts.append(self.metadata_encoder)

    @property
    def extra_variables(self) -> list:
        """The encoder's and decoder's weights."""
        return common.trainable_of(self.parts)

    def config(self) -> dict:
        return {**super().config(), "encoder_sizes": list(self.encoder_sizes),
                "decoder_sizes": list(self.decoder_sizes), "metadata_dim": self.metadata_dim}

    def class_representations(self, support_embeddings, support_y, support_mask=None, metadata=None):
        """The task state: `(ways, R [+ D])`, the mean encoded support embedding of each class (and its metadata)."""
        ways = num_classes(support_y)
        encoded = self.encoder(support_embeddings)
        state = masked_class_means(encoded, support_y, ways, support_mask)
        metadata = common.task_metadata(self, metadata, rank=2)
        if metadata is not None:
            state = tf.concat([state, tf.cast(self.metadata_encoder(metadata), state.dtype)], axis=-1)
        return state

    def task_state(self, support_embeddings, support_y):
        return self.class_representations(support_embeddings, support_y)

    def adapt_task(self, support_x, support_y, support_mask=None, metadata=None, steps=None, training: bool = False):
        self.check_adapt_steps(steps)
        return self.class_representations(self.embed(support_x, training=training), support_y, support_mask, metadata)

    def predict_embedded(self, task_state, query_embeddings):
        """Logits `(Q, ways)`: the decoder on every (class representation, query embedding) pair."""
        queries, ways = tf.shape(query_embeddings)[0], tf.shape(task_state)[0]
        pairs = tf.concat([
            tf.broadcast_to(task_state[None], [queries, ways, task_state.shape[-1]]),
            tf.broadcast_to(tf.cast(query_embeddings, task_state.dtype)[:, None],
                            [queries, ways, query_embeddings.shape[-1]]),
        ], axis=-1)  # (Q, ways, R + E)
        return tf.cast(self.decoder(pairs)[..., 0], tf.float32)

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        support, query, state = self.embed_episode(episode, training)
        task_state = self.class_representations(support, episode.support_y, episode.support_mask, episode.metadata)
        outputs = self.predict_embedded(task_state, query)
        if episode.query_mask is None:
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        else:
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y, mask=episode.query_mask)
        return TaskLoss(loss, metrics, state)
