"""`RelationNetwork` (Sung et al., 2018): a learned relation module scores (class, query) pairs of feature maps."""

import keras
import tensorflow as tf

from tfmeta.learners.base import TaskLoss, Weights
from tfmeta.learners.metric.embedding import EmbeddingLearner, embedding_shape, num_classes
from tfmeta.models.batchnorm import BatchNorm

PADDINGS = (None, "same", "valid")
SHOT_POOLING = ("sum", "mean")


def _after_block(size: int, padding: str) -> int:
    """Spatial size after a 3x3 convolution and a 2x2 pooling (skipped below 2)."""
    size = size - 2 if padding == "valid" else size
    return size // 2 if size >= 2 else size


def relation_module(feature_shape, filters: int = 64, hidden: int = 8, padding: str | None = None, dtype=None,
                    seed=None) -> keras.Model:
    """The relation module of Relation Networks (Sung et al., 2018, section 3.4), built.

    On feature maps `(h, w, c)` (the paper's), its input is a pair concatenated
    along the channels, `(h, w, 2c)`:

    ```
    2 x [Conv2D(filters, 3x3) -> BatchNorm -> ReLU -> MaxPool(2)] -> Flatten
        -> Dense(hidden, ReLU) -> Dense(1, sigmoid)                    # a score in [0, 1]
    ```

    Padding: `"same"` on Omniglot's 5x5 maps (the authors' code:
    `omniglot_train_one_shot.py`, `RelationNetwork`, `padding=1`; 5 -> 2 -> 1,
    64 features) and `"valid"` on miniImageNet's 19x19 maps
    (`miniimagenet_train_one_shot.py`, `padding=0`; 19 -> 8 -> 3, 576
    features, the paper's "H = 64 * 3 * 3"). `padding=None` picks `"valid"`
    where two unpadded blocks leave at least 1x1 (maps of 10x10 or more) and
    `"same"` below, which reproduces both (the rule of Chen et al.'s
    `CloserLookFewShot`, `methods/relationnet.py`). A pooling that would leave
    less than 1x1 is skipped (maps of 1x1).

    On vectors `(e,)` (an embedding that outputs features, e.g. an MLP or
    `conv4(ways=None)`) the two convolutional blocks become
    `Dense(filters) -> BatchNorm -> ReLU` on the concatenated pair `(2e,)`.

    BatchNorm is `tfmeta.models.BatchNorm` with momentum 0.9. Initialisers
    are Keras's defaults (Glorot uniform, zero biases); the authors' code draws
    the Dense weights from N(0, 0.01) with biases 1 and the convolutions
    He-normal.

    Args:
        feature_shape: the shape of one embedding, `(h, w, c)` or `(e,)`.
        filters: channels (or units) of the two blocks.
        hidden: units of the hidden Dense layer (the paper's 8).
        padding: of the convolutions: `"same"`, `"valid"` or None (see above).
        dtype: dtype policy of every layer; None: Keras's default.
        seed: integer seed of the initialisers (None: Keras's global state).

    Returns:
        A built `keras.Sequential` mapping pairs `(n, h, w, 2c)` or `(n, 2e)`
        to scores `(n, 1)`.

    Raises:
        ValueError: if `feature_shape` has another rank, a size is not a
            positive integer, `padding` is unknown, or `"valid"` padding leaves
            nothing of the map.

    Example:

    ```python
    module = relation_module((5, 5, 64))        # Omniglot: 5x5x128 pairs -> (n, 1)
    ```
    """
    feature_shape = tuple(int(d) for d in feature_shape)
    if len(feature_shape) not in (1, 3):
        raise ValueError(
            "`feature_shape` must be (height, width, channels) or (features,). "
            f"Received: feature_shape={feature_shape}"
        )
    for arg, value in (("filters", filters), ("hidden", hidden)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer. Received: {arg}={value!r}")
    if padding not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}. Received: padding={padding!r}")
    init = lambda i: keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
    pair_shape = feature_shape[:-1] + (2 * feature_shape[-1],)
    layers = [keras.Input(pair_shape, dtype=dtype)]
    if len(feature_shape) == 3:
        side = min(feature_shape[:2])
        if padding is None:
            padding = "valid" if side >= 10 else "same"
        for block in range(2):
            after_conv = side - 2 if padding == "valid" else side
            if after_conv < 1:
                raise ValueError(
                    f"padding='valid' leaves nothing of {feature_shape[0]}x{feature_shape[1]} feature maps after "
                    f"{block + 1} convolution(s): use padding='same'. Received: feature_shape={feature_shape}"
                )
            layers += [
                keras.layers.Conv2D(filters, 3, padding=padding, kernel_initializer=init(block), dtype=dtype,
                                    name=f"conv{block}"),
                BatchNorm(momentum=0.9, dtype=dtype, name=f"bn{block}"),
                keras.layers.ReLU(dtype=dtype, name=f"relu{block}"),
            ]
            if after_conv >= 2:
                layers.append(keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{block}"))
            side = _after_block(side, padding)
        layers.append(keras.layers.Flatten(dtype=dtype, name="flatten"))
    else:
        for block in range(2):
            layers += [
                keras.layers.Dense(filters, kernel_initializer=init(block), dtype=dtype, name=f"dense{block}"),
                BatchNorm(momentum=0.9, dtype=dtype, name=f"bn{block}"),
                keras.layers.ReLU(dtype=dtype, name=f"relu{block}"),
            ]
    layers += [
        keras.layers.Dense(hidden, activation="relu", kernel_initializer=init(2), dtype=dtype, name="fc"),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init(3), dtype=dtype, name="score"),
    ]
    return keras.Sequential(layers, name="relation_module")


class RelationNetwork(EmbeddingLearner):
    """Relation Networks: a learned module scores how well a query matches each class.

    ```
    c_k = sum_{i: y_i = k} f(x_i)                        # class feature maps: the task state (N, h, w, c)
    r_k(x) = g([c_k, f(x)])                              # relation module on the pair (channels concatenated)
    loss = mean over queries and classes of (r_k(x) - [y = k])^2      # MSE to one-hot targets
    ```

    (Sung et al., "Learning to Compare: Relation Network for Few-Shot
    Learning", CVPR 2018, eqs. 1-3; K shots: "we element-wise sum over the
    embedding module outputs of all samples from each training class".) The
    mean over the `Q x N` scores is the authors' `nn.MSELoss()`; the paper
    writes a sum (a constant factor, which Adam does not see). Scores are in
    [0, 1] (a sigmoid); an export's `logits` are these scores and its
    `probabilities` their softmax (a normalisation for clients, not a
    calibrated probability), `classes` their argmax.

    Any number of classes and of shots per class. With unequal shots the sum
    makes a class's map grow with its shots, as it does between a 1-shot and a
    5-shot model in the paper (trained and tested on equal shots);
    `shot_pooling="mean"` averages them instead.

    The embedding: the paper's is `tfmeta.models.conv4_relation()` (feature
    maps, `(n, 5, 5, 64)` on Omniglot; `build_backbone("conv4_relation")`,
    the relation trainer's default backbone). Any embedding works: one that
    outputs vectors gets the relation module's Dense variant (see
    `relation_module`). `embed` (and the export's `embed` signature) returns
    the feature maps flattened, `(n, h * w * c)`.

    The relation module has BatchNorm too: its trainable variables are
    `extra_variables`, its moving statistics follow the embedding's in
    `state_variables` (the loop averages them across tasks and replicas), and
    `task_loss` returns the new state of both. As the metric family, both
    networks normalise with batch statistics while meta-training (a task's
    support and query sets in one batch for the embedding, its `Q x N` pairs
    for the relation module) and with their moving statistics at evaluation
    and in served models. The authors' code keeps PyTorch BatchNorm with
    `momentum=1` (the last batch's statistics) and evaluates in training mode;
    it also clips each network's gradient norm to 0.5, which tfmeta's loop
    does not. Measured on the Omniglot sample (`trainers.relation` defaults,
    2,000 steps, the same 600 test tasks): 82.6 ± 0.8% (MSE 0.204) on moving
    statistics, 85.3 ± 0.7% (MSE 0.066) on batch statistics
    (`Evaluator(learner, training=True)`, the authors' evaluation, where a
    query's scores depend on the other queries of its request).

    Args:
        embedding: the embedding network, a built `keras.Model` with a defined
            output shape, feature maps `(n, h, w, c)` or vectors `(n, e)`.
        relation: the relation module, a built `keras.Model` mapping pairs
            `(n, h, w, 2c)` (or `(n, 2e)`) to scores `(n, 1)`; None: built by
            `relation_module` from `filters`, `hidden` and `padding`.
        filters, hidden, padding: of the default relation module.
        shot_pooling: `"sum"` (the paper's) or `"mean"` of a class's shots.
        seed: integer seed of the default relation module's initialisers.
        name: the registry name.

    Raises:
        ValueError: on an embedding output of another rank, a `relation` whose
            input or output does not fit it, or a bad option.

    Example:

    ```python
    relation = tfmeta.learners.RelationNetwork(tfmeta.models.conv4_relation())
    class_maps = relation.adapt(support_x, support_y)     # (ways, 5, 5, 64)
    scores = relation.predict(class_maps, query_x)        # (queries, ways), in [0, 1]
    ```
    """

    def __init__(self, embedding: keras.Model, relation: keras.Model | None = None, filters: int = 64,
                 hidden: int = 8, padding: str | None = None, shot_pooling: str = "sum", seed: int | None = None,
                 name: str = "relation"):
        super().__init__(embedding, name=name)
        shape = embedding_shape(embedding)
        if len(shape) not in (1, 3):
            raise ValueError(
                "The embedding must output feature maps (n, h, w, c) or vectors (n, e). "
                f"Received: embedding output shape (n, {', '.join(map(str, shape))})"
            )
        if shot_pooling not in SHOT_POOLING:
            raise ValueError(f"`shot_pooling` must be one of {SHOT_POOLING}. Received: shot_pooling={shot_pooling!r}")
        self.feature_shape = shape
        self.shot_pooling = shot_pooling
        # How the relation module was built, for configs and model cards (None: given by the caller).
        self.relation_options = None if relation is not None else {"filters": filters, "hidden": hidden,
                                                                   "padding": padding}
        if relation is None:
            dtype = "float64" if self.metrics_dtype() == tf.float64 else None  # else the global (mixed) policy
            relation = relation_module(shape, filters=filters, hidden=hidden, padding=padding, dtype=dtype, seed=seed)
        self._check_relation(relation)
        self.relation = relation

    def _check_relation(self, relation) -> None:
        if not isinstance(relation, keras.Model) or not relation.built:
            raise ValueError(f"`relation` must be a built keras.Model. Received: relation={relation!r}")
        pair = self.feature_shape[:-1] + (2 * self.feature_shape[-1],)
        inputs = tuple(relation.inputs[0].shape[1:]) if relation.inputs else None
        outputs = tuple(relation.outputs[0].shape[1:]) if relation.outputs else None
        if inputs != pair or outputs != (1,):
            raise ValueError(
                f"`relation` must map pairs {(None,) + pair} to scores (None, 1) for this embedding. "
                f"Received: relation with inputs {inputs} and outputs {outputs}"
            )

    # ------------------------------------------------------------- variables

    @property
    def extra_variables(self) -> list:
        """The relation module's trainable variables."""
        return list(self.relation.trainable_variables)

    @property
    def state_variables(self) -> list:
        """The embedding's non-trainable variables, then the relation module's (BatchNorm moving statistics)."""
        return list(self.model.non_trainable_variables) + list(self.relation.non_trainable_variables)

    def config(self) -> dict:
        return {**super().config(), "feature_shape": list(self.feature_shape), "shot_pooling": self.shot_pooling,
                "relation_module": self.relation_options}

    # ---------------------------------------------------------- the contract

    def embed(self, x, training: bool = False):
        """Flattened feature maps `(n, h * w * c)` (the export's `embed` signature)."""
        size = 1
        for d in self.feature_shape:
            size *= d
        return tf.reshape(self.embed_with_state(x, training)[0], [-1, size])  # (n, h * w * c)

    def task_state(self, support_embeddings, support_y):
        """The class feature maps `(N, *feature_shape)`: the sum (or mean) of each class's shots."""
        pool = tf.math.unsorted_segment_sum if self.shot_pooling == "sum" else tf.math.unsorted_segment_mean
        return pool(support_embeddings, support_y, num_classes(support_y))

    def relation_scores(self, class_maps, query_maps, training: bool, state=None):
        """Scores of every (query, class) pair, and the relation module's new non-trainable state.

        Args:
            class_maps: `(N, *feature_shape)` the task state.
            query_maps: `(Q, *feature_shape)` the queries' embeddings.
            training: passed to the relation module (BatchNorm).
            state: its non-trainable values to start from (None: the current ones).

        Returns:
            `(scores (Q, N), new_state)`; scores in float32 (float64 for a float64 network).
        """
        ways, queries = tf.shape(class_maps)[0], tf.shape(query_maps)[0]
        dims = [queries, ways, *self.feature_shape]
        pairs = tf.concat([tf.broadcast_to(class_maps[None], dims),  # (Q, N, *F): class first, as the paper
                           tf.broadcast_to(query_maps[:, None], dims)], axis=-1)  # (Q, N, ..., 2c)
        pairs = tf.reshape(pairs, [queries * ways, *self.feature_shape[:-1], 2 * self.feature_shape[-1]])
        state = [v.value for v in self.relation.non_trainable_variables] if state is None else state
        weights = Weights([v.value for v in self.relation.trainable_variables], state)
        scores, new_state = self.call_network(weights, tf.cast(pairs, self.relation.compute_dtype), training,
                                              model=self.relation)
        return tf.reshape(tf.cast(scores, self.metrics_dtype()), [queries, ways]), list(new_state)

    def adapt(self, support_x, support_y, steps=None, training: bool = False):
        self.check_adapt_steps(steps)
        return self.task_state(self.embed_with_state(support_x, training)[0], support_y)

    def predict(self, task_state, x, training: bool = False):
        return self.relation_scores(task_state, self.embed_with_state(x, training)[0], training)[0]

    def predict_embedded(self, task_state, query_embeddings):
        """Scores `(Q, N)` of query feature maps (the embedding's outputs), relation module at test time."""
        return self.relation_scores(task_state, query_embeddings, training=False)[0]

    def task_loss(self, episode, step=None, training: bool = True) -> TaskLoss:
        support, query, embedding_state = self.embed_episode(episode, training)
        scores, relation_state = self.relation_scores(self.task_state(support, episode.support_y), query, training)
        loss, metrics = self.loss_and_metrics(scores, episode.query_y)
        return TaskLoss(loss, metrics, embedding_state + relation_state)

    def loss_and_metrics(self, outputs, targets):
        """Mean squared error of the scores `(Q, N)` to the one-hot labels, and accuracy (argmax); float32
        for 16-bit scores (mixed precision)."""
        scores = tf.cast(outputs, tf.float32) if outputs.dtype in (tf.float16, tf.bfloat16) else outputs
        labels = tf.cast(targets, tf.int32)
        one_hot = tf.one_hot(labels, tf.shape(scores)[-1], dtype=scores.dtype)
        loss = tf.reduce_mean(tf.square(scores - one_hot))
        correct = tf.equal(tf.argmax(scores, axis=-1, output_type=tf.int32), labels)
        return loss, {"accuracy": tf.reduce_mean(tf.cast(correct, scores.dtype))}
