"""`conv4_relation`: the embedding module of Relation Networks (Sung et al., 2018), feature maps."""

import keras

from tfmeta.models.batchnorm import BatchNorm
from tfmeta.models.conv4 import check_ways_and_filters


def conv4_relation(ways: int | None = None, input_shape=(28, 28, 1), filters: int = 64, dtype=None,
                   seed=None) -> keras.Model:
    """The embedding module of Relation Networks (Sung et al., 2018), built.

    Four blocks of `[Conv2D(filters, 3x3) -> BatchNorm -> ReLU]`, the first two
    with 2x2 max-pooling and no padding, the last two without pooling and with
    "same" padding, as the authors' code (`floodsung/LearningToCompare_FSL`,
    `omniglot/omniglot_train_one_shot.py`, `CNNEncoder`: `padding=0, 0, 1, 1`;
    the paper, section 3.4: "the first two blocks also contain a 2x2
    max-pooling layer while the latter two do not"). Unlike Conv-4 its output is
    a feature map, compared by a learned relation module rather than a distance:

    ```
    28x28x1  -> 26 -> 13 -> 11 -> 5 -> 5 -> 5:    (n, 5, 5, 64)     Omniglot
    84x84x3  -> 82 -> 41 -> 39 -> 19 -> 19 -> 19:  (n, 19, 19, 64)   miniImageNet
    ```

    The BatchNorm is `tfmeta.models.BatchNorm` with momentum 0.9, as in
    `conv4` (the authors' PyTorch code sets `momentum=1`, which keeps only the
    last batch's statistics, and evaluates on batch statistics; tfmeta's metric
    learners evaluate on moving statistics).

    With `ways=None` (the Relation Network's embedding) the model outputs the
    feature maps; with `ways` it adds `Flatten -> Dense(ways)` (logits), so that
    `tfmeta.models.build_backbone("conv4_relation", ways=5)` gives any learner a
    classifier. Metric learners that compare vectors (Prototypical and
    Matching Networks) need flat features: give them `"conv4"`.

    Args:
        ways: size of the output layer; None: no head, the model outputs its
            feature maps `(n, h, w, filters)`.
        input_shape: `(height, width, channels)` of one example.
        filters: channels of each convolution.
        dtype: dtype policy of every layer; None: Keras's default.
        seed: integer seed of the initialisers (None: Keras's global state).

    Returns:
        A built `keras.Sequential`.

    Raises:
        ValueError: if `ways` is neither None nor a positive integer, `filters`
            is not a positive integer, or the input is smaller than 10x10 (two
            unpadded 3x3 convolutions and 2x2 poolings).

    Example:

    ```python
    embedding = tfmeta.models.conv4_relation()
    embedding(tf.zeros([10, 28, 28, 1])).shape   # (10, 5, 5, 64)
    ```
    """
    check_ways_and_filters(ways, filters)
    if len(input_shape) != 3 or min(input_shape[:2]) < 10:
        raise ValueError(
            "`input_shape` must be (height, width, channels) with height and width >= 10 (two unpadded "
            f"3x3 convolutions, each followed by a 2x2 pooling). Received: input_shape={tuple(input_shape)}"
        )
    init = lambda i: keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
    layers = [keras.Input(tuple(input_shape), dtype=dtype)]
    for block in range(4):
        pooled = block < 2
        layers += [
            keras.layers.Conv2D(filters, 3, padding="valid" if pooled else "same", kernel_initializer=init(block),
                                dtype=dtype, name=f"conv{block}"),
            BatchNorm(momentum=0.9, dtype=dtype, name=f"bn{block}"),
            keras.layers.ReLU(dtype=dtype, name=f"relu{block}"),
        ]
        if pooled:
            layers.append(keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{block}"))
    if ways is not None:
        layers += [keras.layers.Flatten(dtype=dtype, name="flatten"),
                   keras.layers.Dense(ways, kernel_initializer=init(4), dtype=dtype, name="logits")]
    return keras.Sequential(layers, name="conv4_relation")
