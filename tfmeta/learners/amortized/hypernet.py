"""HyperNetwork learners: a set encoder of the support set (and the task's description) outputs weights.

Three ways to generate, one class each (`tfmeta.learners.build("hypernet", ...)`
picks one with `generate`):

* `HyperNetwork` (`generate="all"`, regression): every trainable weight of a
  small target network (the sinusoid MLP 1-40-40-1) from the support set's
  encoding, as offsets from meta-learned weights (Ha et al., 2017, HyperNetworks;
  Bertinetto et al., 2016, learnets). The target runs through
  `Model.stateless_call` on the generated weights, as MAML's fast weights do.
* `HyperHead` (`generate="head"`, classification): only the classifier head,
  one weight vector and bias per class from the class's mean embedding
  (Qiao et al., 2018, "predicting parameters from activations"; Gidaris and
  Komodakis, 2018), any number of classes. At initialisation the head is the
  linear form of Prototypical Networks (`w_k = c_k`, `b_k = -|c_k|^2 / 2`).
* `FiLMHyperNetwork` (`generate="film"`, classification): per-channel scales
  and shifts of every BatchNorm layer of the embedding (Conv-4), from the task's
  representation, the mean of its class prototypes (TADAM's task embedding,
  Oreshkin et al., 2018; FiLM, Perez et al., 2018); the embedding runs through
  `stateless_call` with the generated BatchNorm weights, then Prototypical
  Networks' nearest mean classifies.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import CLASSIFICATION, REGRESSION, Learner, TaskLoss, Weights
from tfmeta.learners.amortized import common
from tfmeta.learners.amortized.sets import check_sizes, masked_class_means, mlp_stack, set_mean
from tfmeta.learners.metric.embedding import EmbeddingLearner, num_classes
from tfmeta.learners.metric.protonet import squared_distances
from tfmeta.models.batchnorm import batch_norm_layers

GENERATES = ("all", "head", "film")


def _check_scale(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"`generator_scale` must be a number >= 0. Received: generator_scale={value!r}")
    return float(value)


def _last_initializer(scale: float, seed=None):
    """The generator's output layer: zeros (scale 0: start at the meta-learned weights) or
    `N(0, scale^2 / fan_in)`, so that a generated offset is about `scale` times the size of the
    generator's hidden activations."""
    if scale == 0.0:
        return "zeros"
    return keras.initializers.VarianceScaling(scale=scale**2, mode="fan_in", distribution="truncated_normal",
                                              seed=seed)


class HyperNetwork(common.WholeMetaBatch, Learner):
    """Generates every trainable weight of a (small) target network from the support set.

    ```
    z     = mean_i phi([x_i, y_i])                      # set encoder, over the real support points
    z     = [z, psi(metadata)]                          # with a task description (metadata_dim)
    theta = theta_0 + G(z)                              # G: MLP -> one offset per weight; theta_0 meta-learned
    y(x)  = target.stateless_call(theta, x)             # the target network on the generated weights
    loss  = mean squared error on the query set
    ```

    The task state is the generated `Weights` (as MAML's fast weights), so
    `predict(adapt(...), x)` is exactly `model.stateless_call(weights.trainable,
    weights.non_trainable, x)`. An empty support set gives `z = 0` (with metadata:
    the description alone, zero-shot). Adapts in one forward pass.

    Args:
        model: the target network, a built Keras model `(n, D) -> (n, d)`
            (e.g. `tfmeta.models.mlp()`, 1-40-40-1). Its variables are `theta_0`.
        task: `"regression"` (classifiers: `HyperHead`, `FiLMHyperNetwork`).
        encoder_sizes: the set encoder `phi`'s layer sizes.
        generator_sizes: hidden layer sizes of `G` (its output layer has one
            unit per target weight).
        metadata_dim: size of the task description (None: none).
        metadata_sizes: the MLP `psi` that encodes it.
        generator_scale: size of the initial offsets relative to `G`'s hidden
            activations (0: `G` starts at zero, `theta = theta_0`).
        seed: integer seed of the initialisers.
        name: the registry name.

    Raises:
        ValueError: if `task` is not regression, the target has no trainable
            weights or a non-vector input, or on bad sizes.

    Example:

    ```python
    hypernet = HyperNetwork(tfmeta.models.mlp(hidden=(40, 40)))
    weights = hypernet.adapt(support_x, support_y)       # Weights: 1,761 generated values
    y = hypernet.predict(weights, query_x)               # = model.stateless_call(*weights, query_x)[0]
    ```
    """

    def __init__(self, model: keras.Model, task: str = REGRESSION, encoder_sizes=(128, 128, 128),
                 generator_sizes=(128,), metadata_dim: int | None = None, metadata_sizes=(128, 128),
                 generator_scale: float = 0.1, seed: int | None = None, name: str = "hypernet"):
        if task != REGRESSION:
            raise ValueError("HyperNetwork generates every weight of a regressor; for classification generate the "
                             "head (`HyperHead`, generate='head') or FiLM layers (`FiLMHyperNetwork`, "
                             f"generate='film'). Received: task={task!r}")
        super().__init__(model, REGRESSION, name=name)
        if not model.trainable_variables:
            raise ValueError(f"The target network has no trainable weights to generate. Received: model={model.name!r}")
        shape = self.input_shape
        if shape is None or len(shape) != 1:
            raise ValueError(f"The target network must take vectors `(n, D)`. Received: input shape {shape}")
        self.metadata_dim = common.check_metadata_dim(metadata_dim)
        self.encoder_sizes = check_sizes("encoder_sizes", encoder_sizes)
        self.generator_sizes = check_sizes("generator_sizes", generator_sizes)
        self.metadata_sizes = check_sizes("metadata_sizes", metadata_sizes)
        self.generator_scale = _check_scale(generator_scale)
        self.shapes = [tuple(int(d) for d in v.shape) for v in model.trainable_variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        seed_at = lambda i: None if seed is None else seed + 100 * i
        outputs = common.output_size(model)
        self.encoder = mlp_stack(self.encoder_sizes, shape[0] + outputs, "set_encoder", seed=seed_at(0))
        z_dim = self.encoder_sizes[-1] + (self.metadata_sizes[-1] if metadata_dim else 0)
        self.generator = mlp_stack(self.generator_sizes + (sum(self.sizes),), z_dim, "generator", seed=seed_at(1),
                                   last_initializer=_last_initializer(self.generator_scale, seed_at(2)))
        self.parts = [self.encoder, self.generator]
        self.metadata_encoder = None
        if metadata_dim:
            self.metadata_encoder = mlp_stack(self.metadata_sizes, metadata_dim, "metadata_encoder", seed=seed_at(3))
            self.parts.append(self.metadata_encoder)

    @property
    def extra_variables(self) -> list:
        """The set encoder's, the generator's (and the metadata encoder's) weights."""
        return common.trainable_of(self.parts)

    @property
    def num_generated(self) -> int:
        """How many values one task's generated weights hold."""
        return sum(self.sizes)

    def config(self) -> dict:
        return {**super().config(), "generate": "all", "encoder_sizes": list(self.encoder_sizes),
                "generator_sizes": list(self.generator_sizes), "metadata_dim": self.metadata_dim,
                "generator_scale": self.generator_scale, "num_generated": self.num_generated}

    def task_embedding(self, support_x, support_y, support_mask=None, metadata=None, batch_rank: int = 0):
        """`z`: the set encoding of the support set `(Z,)` (and the metadata's encoding); `(tasks, Z)` for a
        meta-batch (`batch_rank=1`)."""
        metadata = common.task_metadata(self, metadata, rank=1 + batch_rank)
        support_x = tf.convert_to_tensor(support_x)
        shape = tf.concat([tf.shape(support_x)[:batch_rank + 1], [self.input_shape[0]]], axis=0)
        x = tf.reshape(support_x, shape)  # (..., S, D)
        pairs = tf.concat([x, tf.cast(support_y, x.dtype)], axis=-1)
        z = set_mean(self.encoder(pairs), support_mask)
        if metadata is not None:  # Dense layers want a rank >= 2
            z = tf.concat([z, self.metadata_encoder(metadata[..., None, :])[..., 0, :]], axis=-1)
        return z

    def generate(self, z) -> Weights:
        """The target's weights for a task embedding `z`: `theta_0 + G(z)`, as `Weights`."""
        offsets = tf.split(self.generator(z[None])[0], self.sizes)
        trainable = [v.value + tf.cast(tf.reshape(o, s), v.dtype)
                     for v, o, s in zip(self.model.trainable_variables, offsets, self.shapes)]
        return Weights(trainable, [v.value for v in self.model.non_trainable_variables])

    def adapt(self, support_x, support_y, steps=None, training: bool = True) -> Weights:
        return self.adapt_task(support_x, support_y, steps=steps, training=training)

    def adapt_task(self, support_x, support_y, support_mask=None, metadata=None, steps=None,
                   training: bool = True) -> Weights:
        """The generated weights of one task (one forward pass of the set encoder and the generator).

        Raises:
            ValueError: if `steps` is given, or the metadata is missing or misshapen.
        """
        self.check_adapt_steps(steps)
        return self.generate(self.task_embedding(support_x, support_y, support_mask, metadata))

    def predict(self, task_state: Weights, x, training: bool = True):
        outputs, _ = self.call_network(task_state, x, training=training)
        return outputs

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        weights = self.adapt_task(episode.support_x, episode.support_y, episode.support_mask, episode.metadata,
                                  training=training)
        outputs, _ = self.call_network(weights, episode.query_x, training=training)
        if episode.query_mask is None:
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        else:
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y, mask=episode.query_mask)
        return TaskLoss(loss, metrics, self.current_state())

    # ---------------------------------------------------- meta-batches at once

    def per_task_metrics(self, episodes: Episode, training: bool = True) -> dict:
        """`{"loss", "mse"}`, each `(tasks,)`, for a whole meta-batch at once.

        The set encoder and the generator run on the meta-batch; the target runs on
        each task's generated weights under `tf.vectorized_map` (one batched matmul
        per layer instead of one small graph per task). The same numbers as
        `task_loss` on each task.
        """
        z = self.task_embedding(episodes.support_x, episodes.support_y, episodes.support_mask, episodes.metadata,
                                batch_rank=1)  # (tasks, Z)
        offsets = tf.split(self.generator(z), self.sizes, axis=-1)
        trainable = [v.value[None] + tf.cast(tf.reshape(o, [-1, *s]), v.dtype)
                     for v, o, s in zip(self.model.trainable_variables, offsets, self.shapes)]  # (tasks, ...) each

        def one_task(args):
            weights, x = args
            return self.call_network(Weights(list(weights), []), x, training=training)[0]

        outputs = tf.vectorized_map(one_task, (trainable, episodes.query_x))  # (tasks, Q, d)
        if outputs.dtype in (tf.float16, tf.bfloat16):
            outputs = tf.cast(outputs, tf.float32)
        squared = tf.reduce_mean(tf.square(outputs - tf.cast(episodes.query_y, outputs.dtype)), axis=-1)
        if episodes.query_mask is None:
            mse = tf.reduce_mean(squared, axis=-1)
        else:
            mask = tf.cast(episodes.query_mask, squared.dtype)
            mse = tf.reduce_sum(squared * mask, axis=-1) / tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)
        return {"loss": mse, "mse": mse}



class HyperHead(EmbeddingLearner):
    """Generates a linear classifier head, one weight vector and bias per class, from the class's mean embedding.

    ```
    c_k        = mean_{i: y_i = k} e(x_i)                  # e: the embedding (e.g. Conv-4 without head)
    [dw_k, db_k] = G([c_k, psi(metadata_k)])               # G: MLP, output layer initialised at 0
    w_k = c_k + dw_k,   b_k = -|c_k|^2 / 2 + db_k          # Prototypical Networks at initialisation
    logit_k(x) = w_k . e(x) + b_k
    ```

    Any number of classes and of shots per class (`any_ways`); the embedding
    on its moving statistics at test (`training_at_test = False`), as the
    metric learners.

    Args:
        embedding: the embedding network, a built Keras model `(n, *x) -> (n, E)`.
        generator_sizes: `G`'s hidden sizes (its output layer, `E + 1`, is added).
        metadata_dim: size of each class's description (None: none).
        metadata_sizes: the MLP `psi` that encodes it.
        seed: integer seed of the initialisers.
        name: the registry name.

    Example:

    ```python
    head = HyperHead(tfmeta.models.conv4(ways=None))
    state = head.adapt(support_x, support_y)      # {"weights": (ways, E), "biases": (ways,)}
    logits = head.predict(state, query_x)
    ```
    """

    def __init__(self, embedding: keras.Model, generator_sizes=(128,), metadata_dim: int | None = None,
                 metadata_sizes=(128, 128), seed: int | None = None, name: str = "hypernet"):
        super().__init__(embedding, name=name)
        self.metadata_dim = common.check_metadata_dim(metadata_dim)
        self.generator_sizes = check_sizes("generator_sizes", generator_sizes)
        self.metadata_sizes = check_sizes("metadata_sizes", metadata_sizes)
        features = common.output_size(embedding, "embedding")
        self.generator, self.metadata_encoder, self.parts = common.generator_and_metadata_encoder(
            features + 1, features, self.generator_sizes, metadata_dim, self.metadata_sizes, "head_generator", seed)

    @property
    def extra_variables(self) -> list:
        return common.trainable_of(self.parts)

    def config(self) -> dict:
        return {**super().config(), "generate": "head", "generator_sizes": list(self.generator_sizes),
                "metadata_dim": self.metadata_dim}

    def head(self, class_means, metadata=None) -> dict:
        """The generated head `{"weights": (ways, E), "biases": (ways,)}` from the class means `(ways, E)`."""
        metadata = common.task_metadata(self, metadata, rank=2)
        inputs = class_means if metadata is None else tf.concat([class_means, self.metadata_encoder(metadata)], -1)
        offsets = tf.cast(self.generator(inputs), class_means.dtype)  # (ways, E + 1)
        weights = class_means + offsets[:, :-1]
        biases = -0.5 * tf.reduce_sum(tf.square(class_means), axis=-1) + offsets[:, -1]
        return {"weights": weights, "biases": biases}

    def task_state(self, support_embeddings, support_y):
        return self.head(masked_class_means(support_embeddings, support_y, num_classes(support_y)))

    def adapt_task(self, support_x, support_y, support_mask=None, metadata=None, steps=None, training: bool = False):
        self.check_adapt_steps(steps)
        means = masked_class_means(self.embed(support_x, training=training), support_y, num_classes(support_y),
                                   support_mask)
        return self.head(means, metadata)

    def predict_embedded(self, task_state: dict, query_embeddings):
        return tf.matmul(query_embeddings, task_state["weights"], transpose_b=True) + task_state["biases"][None]

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        support, query, state = self.embed_episode(episode, training)
        means = masked_class_means(support, episode.support_y, num_classes(episode.support_y), episode.support_mask)
        outputs = self.predict_embedded(self.head(means, episode.metadata), query)
        if episode.query_mask is None:
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        else:
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y, mask=episode.query_mask)
        return TaskLoss(loss, metrics, state)


class FiLMHyperNetwork(Learner):
    """Generates FiLM scales and shifts for every BatchNorm layer of the embedding (TADAM-like), then ProtoNets.

    ```
    z      = mean_k c_k, c_k = mean_{i: y_i = k} e(x_i)     # the task: the mean of its prototypes (TADAM)
    dg, db = G([z, mean_k psi(metadata_k)])                 # per BatchNorm layer, per channel; G starts at 0
    gamma_l = gamma_l + dg_l,  beta_l = beta_l + db_l       # FiLM through BatchNorm's scale and shift
    e_z(x) = embedding.stateless_call(conditioned weights, x)
    logit_k(x) = -|e_z(x) - mean_{i: y_i = k} e_z(x_i)|^2
    ```

    The conditioned embedding runs through `Model.stateless_call` with the
    generated BatchNorm weights (no variable is written). While meta-training
    the conditioned embedding sees the support and query sets in one batch and
    its BatchNorm statistics are the learner's state; at test it runs on the
    moving statistics (`training_at_test = False`). Any number of classes.

    Args:
        embedding: a built embedding network with `tfmeta.models.BatchNorm` (or
            Keras BatchNormalization) layers that have a scale and a shift
            (e.g. `tfmeta.models.conv4(ways=None)`).
        generator_sizes: `G`'s hidden sizes.
        metadata_dim: size of each class's description (None: none).
        metadata_sizes: the MLP `psi` that encodes it.
        seed: integer seed of the initialisers.
        name: the registry name.

    Raises:
        ValueError: if the embedding has no BatchNorm layer with scale and shift.

    Example:

    ```python
    film = FiLMHyperNetwork(tfmeta.models.conv4(ways=None))
    state = film.adapt(support_x, support_y)     # {"film": (2 * 256,), "prototypes": (ways, 64)}
    logits = film.predict(state, query_x)
    ```
    """

    any_ways = True
    training_at_test = False

    def __init__(self, embedding: keras.Model, generator_sizes=(128,), metadata_dim: int | None = None,
                 metadata_sizes=(128, 128), seed: int | None = None, name: str = "hypernet"):
        super().__init__(embedding, CLASSIFICATION, name=name)
        index = {id(v): i for i, v in enumerate(embedding.trainable_variables)}
        self.film_indices = []  # (gamma index, beta index, channels) per BatchNorm layer
        for layer in batch_norm_layers(embedding):
            gamma, beta = layer.gamma, layer.beta
            if gamma is not None and beta is not None and id(gamma) in index and id(beta) in index:
                self.film_indices.append((index[id(gamma)], index[id(beta)], int(gamma.shape[-1])))
        if not self.film_indices:
            raise ValueError("FiLM conditions BatchNorm layers with a trainable scale and shift; the embedding has "
                             f"none. Received: embedding={embedding.name!r}")
        self.metadata_dim = common.check_metadata_dim(metadata_dim)
        self.generator_sizes = check_sizes("generator_sizes", generator_sizes)
        self.metadata_sizes = check_sizes("metadata_sizes", metadata_sizes)
        features = common.output_size(embedding, "embedding")
        self.num_film = 2 * sum(c for _, _, c in self.film_indices)
        self.generator, self.metadata_encoder, self.parts = common.generator_and_metadata_encoder(
            self.num_film, features, self.generator_sizes, metadata_dim, self.metadata_sizes, "film_generator", seed)

    @property
    def extra_variables(self) -> list:
        return common.trainable_of(self.parts)

    def config(self) -> dict:
        return {**super().config(), "generate": "film", "generator_sizes": list(self.generator_sizes),
                "metadata_dim": self.metadata_dim, "film_layers": len(self.film_indices)}

    # --------------------------------------------------------------- pieces

    def _embed(self, x, trainable, training, state=None):
        state = [v.value for v in self.model.non_trainable_variables] if state is None else state
        outputs, new_state = self.call_network(Weights(trainable, state), x, training=training)
        return tf.cast(outputs, tf.float32), list(new_state)

    def film(self, support_x, support_y, support_mask=None, metadata=None, training: bool = True):
        """The generated FiLM offsets `(2 * channels,)`: from the mean prototype of an unconditioned pass."""
        metadata = common.task_metadata(self, metadata, rank=2)
        plain = [v.value for v in self.model.trainable_variables]
        embeddings, _ = self._embed(support_x, plain, training)
        z = tf.reduce_mean(masked_class_means(embeddings, support_y, num_classes(support_y), support_mask), axis=0)
        if metadata is not None:
            z = tf.concat([z, tf.reduce_mean(self.metadata_encoder(metadata), axis=0)], axis=-1)
        return tf.cast(self.generator(z[None])[0], tf.float32)

    def conditioned_weights(self, film) -> list:
        """The embedding's trainable values with each BatchNorm's `gamma + dg` and `beta + db`."""
        values = [v.value for v in self.model.trainable_variables]
        offset = 0
        for gamma_index, beta_index, channels in self.film_indices:
            d_gamma, d_beta = film[offset:offset + channels], film[offset + channels:offset + 2 * channels]
            offset += 2 * channels
            values[gamma_index] = values[gamma_index] + tf.cast(d_gamma, values[gamma_index].dtype)
            values[beta_index] = values[beta_index] + tf.cast(d_beta, values[beta_index].dtype)
        return values

    # ------------------------------------------------------------ the contract

    def adapt(self, support_x, support_y, steps=None, training: bool = False) -> dict:
        return self.adapt_task(support_x, support_y, steps=steps, training=training)

    def adapt_task(self, support_x, support_y, support_mask=None, metadata=None, steps=None,
                   training: bool = False) -> dict:
        """`{"film": (2C,), "prototypes": (ways, E)}`: the FiLM offsets and the conditioned prototypes."""
        self.check_adapt_steps(steps)
        film = self.film(support_x, support_y, support_mask, metadata, training)
        embeddings, _ = self._embed(support_x, self.conditioned_weights(film), training)
        return {"film": film,
                "prototypes": masked_class_means(embeddings, support_y, num_classes(support_y), support_mask)}

    def predict(self, task_state: dict, x, training: bool = False):
        embeddings, _ = self._embed(x, self.conditioned_weights(task_state["film"]), training)
        return -squared_distances(embeddings, task_state["prototypes"])

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        film = self.film(episode.support_x, episode.support_y, episode.support_mask, episode.metadata, training)
        support_size = tf.shape(episode.support_x)[0]
        both = tf.concat([episode.support_x, tf.cast(episode.query_x, episode.support_x.dtype)], axis=0)
        embeddings, state = self._embed(both, self.conditioned_weights(film), training)
        support, query = embeddings[:support_size], embeddings[support_size:]
        prototypes = masked_class_means(support, episode.support_y, num_classes(episode.support_y),
                                        episode.support_mask)
        outputs = -squared_distances(query, prototypes)
        if episode.query_mask is None:
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        else:
            loss, metrics = self.loss_and_metrics(outputs, episode.query_y, mask=episode.query_mask)
        return TaskLoss(loss, metrics, state)


def build_hypernet(model: keras.Model, task: str = CLASSIFICATION, generate: str | None = None, **kwargs):
    """The registry's `"hypernet"`: `HyperNetwork` (`generate="all"`, the default for
    regression), `HyperHead` (`"head"`, the default for classification) or
    `FiLMHyperNetwork` (`"film"`).

    Raises:
        ValueError: on an unknown `generate`, or one that does not fit the task.
    """
    generate = generate or ("all" if task == REGRESSION else "head")
    if generate not in GENERATES:
        raise ValueError(f"`generate` must be one of {GENERATES}. Received: generate={generate!r}")
    if generate == "all":
        return HyperNetwork(model, task=task, **kwargs)
    if task != CLASSIFICATION:
        raise ValueError(f"generate={generate!r} makes a classifier. Received: task={task!r}")
    return (HyperHead if generate == "head" else FiLMHyperNetwork)(model, **kwargs)
