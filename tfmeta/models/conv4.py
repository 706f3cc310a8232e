"""`conv4`: the standard 4-block convolutional learner for few-shot images."""

import keras

from tfmeta.models.batchnorm import BatchNorm


def conv4(ways: int, input_shape=(28, 28, 1), filters: int = 64, dtype=None, seed=None) -> keras.Model:
    """Conv-4 (Vinyals et al., 2016; Finn et al., 2017), built.

    Four blocks of `[Conv2D(filters, 3x3, same) -> BatchNorm -> ReLU ->
    MaxPool(2)]`, then `Flatten -> Dense(ways)` (logits). On Omniglot 28x28x1
    the feature map after four blocks is 1x1xfilters. The BatchNorm is
    `tfmeta.models.BatchNorm` (exact second-order meta-gradients).

    Args:
        ways: number of classes per task (size of the output layer).
        input_shape: `(height, width, channels)` of one example.
        filters: channels of each convolution.
        dtype: dtype policy of every layer (e.g. `"float64"` for gradient
            checks); None: Keras's default.
        seed: integer seed of the initialisers (None: Keras's global state).

    Returns:
        A built `keras.Sequential` mapping `(n, *input_shape)` to logits `(n, ways)`.

    Raises:
        ValueError: if `ways` or `filters` is not a positive integer, or the
            input is too small for four 2x poolings.

    Example:

    ```python
    model = tfmeta.models.conv4(ways=5)
    model(tf.zeros([10, 28, 28, 1])).shape   # (10, 5)
    ```
    """
    for name, value in (("ways", ways), ("filters", filters)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
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
            BatchNorm(dtype=dtype, name=f"bn{block}"),
            keras.layers.ReLU(dtype=dtype, name=f"relu{block}"),
            keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{block}"),
        ]
    layers += [
        keras.layers.Flatten(dtype=dtype, name="flatten"),
        keras.layers.Dense(ways, kernel_initializer=init(4), dtype=dtype, name="logits"),
    ]
    return keras.Sequential(layers, name="conv4")
