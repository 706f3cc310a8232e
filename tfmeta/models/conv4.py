"""`conv4`: the standard 4-block convolutional learner for few-shot images."""

import keras

from tfmeta.models.batchnorm import BatchNorm


def check_ways_and_filters(ways, filters) -> None:
    """Raises `ValueError` unless `ways` is None or a positive integer and `filters` is one."""
    is_size = lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if ways is not None and not is_size(ways):
        raise ValueError(f"`ways` must be None or a positive integer. Received: ways={ways!r}")
    if not is_size(filters):
        raise ValueError(f"`filters` must be a positive integer. Received: filters={filters!r}")


def conv4(ways: int | None, input_shape=(28, 28, 1), filters: int = 64, dtype=None, seed=None) -> keras.Model:
    """Conv-4 (Vinyals et al., 2016; Finn et al., 2017), built.

    Four blocks of `[Conv2D(filters, 3x3, same) -> BatchNorm -> ReLU ->
    MaxPool(2)]`, then `Flatten -> Dense(ways)` (logits). On Omniglot 28x28x1
    the feature map after four blocks is 1x1xfilters. The BatchNorm is
    `tfmeta.models.BatchNorm` (exact second-order meta-gradients), its moving
    statistics updated with momentum 0.9 (PyTorch's default, which the
    reference few-shot code uses; they matter to learners evaluated on them,
    such as Prototypical Networks, not to MAML, which normalises with the
    batch's statistics).

    With `ways=None` the model stops at `Flatten`: an embedding network for
    metric learners (Prototypical Networks: 1600 features on 84x84 inputs with
    64 filters). Its layers, names and initial weights are those of the model
    with a head, built with the same `seed`, minus the `Dense` layer.

    Args:
        ways: number of classes per task (size of the output layer); None:
            no output layer, the model outputs the flattened features.
        input_shape: `(height, width, channels)` of one example.
        filters: channels of each convolution.
        dtype: dtype policy of every layer (e.g. `"float64"` for gradient
            checks); None: Keras's default.
        seed: integer seed of the initialisers (None: Keras's global state).

    Returns:
        A built `keras.Sequential` mapping `(n, *input_shape)` to logits `(n, ways)`,
        or to features `(n, (H // 16) * (W // 16) * filters)` when `ways` is None.

    Raises:
        ValueError: if `ways` is neither None nor a positive integer, `filters`
            is not a positive integer, or the input is too small for four 2x
            poolings.

    Example:

    ```python
    model = tfmeta.models.conv4(ways=5)
    model(tf.zeros([10, 28, 28, 1])).shape   # (10, 5)
    embedding = tfmeta.models.conv4(ways=None, input_shape=(84, 84, 3))
    embedding(tf.zeros([10, 84, 84, 3])).shape   # (10, 1600)
    ```
    """
    check_ways_and_filters(ways, filters)
    if len(input_shape) != 3 or min(input_shape[:2]) < 16:
        raise ValueError(
            "`input_shape` must be (height, width, channels) with height and width >= 16 "
            f"(four 2x poolings). Received: input_shape={tuple(input_shape)}"
        )
    init = lambda i: keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
    layers = [keras.Input(tuple(input_shape), dtype=dtype)]
    for block in range(4):
        layers += [
            keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=init(block), dtype=dtype,
                                name=f"conv{block}"),
            BatchNorm(momentum=0.9, dtype=dtype, name=f"bn{block}"),
            keras.layers.ReLU(dtype=dtype, name=f"relu{block}"),
            keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{block}"),
        ]
    layers.append(keras.layers.Flatten(dtype=dtype, name="flatten"))
    if ways is not None:
        layers.append(keras.layers.Dense(ways, kernel_initializer=init(4), dtype=dtype, name="logits"))
    return keras.Sequential(layers, name="conv4")
