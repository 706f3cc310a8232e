"""`resnet12`: the few-shot ResNet-12 of MetaOptNet (Lee et al., 2019) and RFS (Tian et al., 2020).

Reference implementations (read for the details below, not copied):
`kjunelee/MetaOptNet` `models/ResNet12_embedding.py` (+ `models/dropblock.py`)
and `WangYueFt/rfs` `models/resnet.py` (`resnet12`, `n_blocks=[1, 1, 1, 1]`).

* Four residual blocks, 64-160-320-640 channels. Each block: three
  `conv 3x3 (padding 1, no bias) -> BatchNorm`, with LeakyReLU(0.1) after the
  first two; a shortcut `conv 1x1 (no bias) -> BatchNorm` (present in every
  block: the references add it whenever the stride is not 1, and all four
  blocks pool by 2); `add -> LeakyReLU(0.1) -> MaxPool 2x2`.
* Regularisation after the pooling, when `drop_rate > 0`: plain dropout in
  blocks 1-2, DropBlock in blocks 3-4; both train with `drop_rate=0.1`, block
  size 5 on mini/tieredImageNet and 2 on CIFAR-FS/FC100.
* Initialisation: convolutions He-normal with `mode="fan_out"` (PyTorch's
  `kaiming_normal_(mode='fan_out', nonlinearity='leaky_relu')`, i.e. std
  `sqrt(2 / (k*k*out))`); BatchNorm scale 1, offset 0, PyTorch's defaults
  `momentum=0.1` (Keras `0.9`) and `epsilon=1e-5`.
* Features: global average pooling (RFS's `avg_pool=True`, `AdaptiveAvgPool2d(1)`;
  MetaOptNet's embedding flattens the 5x5x640 map instead), 640 values. RFS puts
  a linear classifier on them; here `ways` adds a `Dense(ways)` head.

Differences, on purpose: the BatchNorm is `tfmeta.models.BatchNorm` (exact
second-order meta-gradients; see batchnorm.py); DropBlock runs at a fixed rate
(the references ramp it up over 40,000 forward passes); the head is initialised
like Conv-4's (Glorot uniform kernel, zero bias).
"""

import itertools

import keras

from tfmeta.models.batchnorm import BatchNorm
from tfmeta.models.dropblock import DropBlock

STANDARD_CHANNELS = (64, 160, 320, 640)


def resnet12(
    ways: int | None = None,
    input_shape=(84, 84, 3),
    channels=STANDARD_CHANNELS,
    drop_rate: float = 0.0,
    dropblock_size: int = 5,
    dtype=None,
    seed=None,
) -> keras.Model:
    """ResNet-12 for few-shot images, built as a functional Keras model.

    ```
    for each block (channels c):
        y = LeakyReLU(BN(conv3x3_c(x)))
        y = LeakyReLU(BN(conv3x3_c(y)))
        y = BN(conv3x3_c(y))
        x = MaxPool2x2(LeakyReLU(y + BN(conv1x1_c(x))))    # then Dropout / DropBlock if drop_rate
    features = GlobalAveragePooling(x)                       # (n, channels[-1])
    logits = Dense(ways)(features)                           # only if ways is not None
    ```

    Every layer is a plain Keras layer or a `tfmeta.models.BatchNorm` (no
    nested models), so the model works with `Model.stateless_call` and nested
    `tf.GradientTape`s. With `drop_rate > 0` the dropout and DropBlock layers
    hold seed-generator states among the non-trainable variables; they are the
    identity with `training=False`.

    Args:
        ways: size of the `Dense` head (logits); None: no head, the model
            outputs the `channels[-1]` features (metric learners).
        input_shape: `(height, width, channels)` of one example; height and
            width at least 16 (four 2x poolings).
        channels: the four blocks' widths; `(64, 160, 320, 640)` is the
            standard network (12.4M parameters without the head).
        drop_rate: dropout rate of blocks 1-2 and DropBlock rate of blocks 3-4
            (0: none, the default; the references train with 0.1).
        dropblock_size: DropBlock's block side (the references: 5 for 84x84
            inputs, 2 for 32x32), clipped to the feature map.
        dtype: dtype policy of every layer (e.g. `"float64"` for gradient
            checks); None: Keras's default.
        seed: integer seed of the initialisers and the dropout masks (None:
            Keras's global state).

    Returns:
        A built functional `keras.Model` named `"resnet12"`, mapping
        `(n, *input_shape)` to `(n, ways)` logits, or to `(n, channels[-1])`
        features when `ways` is None.

    Raises:
        ValueError: if `ways` is neither None nor a positive integer, `channels`
            is not four positive integers, the input is too small, or
            `drop_rate`/`dropblock_size` is out of range.

    Example:

    ```python
    backbone = tfmeta.models.resnet12()                       # features
    backbone(tf.zeros([2, 84, 84, 3])).shape                  # (2, 640)
    learner = tfmeta.models.resnet12(ways=5, input_shape=(32, 32, 3), seed=0)
    learner(tf.zeros([2, 32, 32, 3])).shape                   # (2, 5)
    ```
    """
    if ways is not None and (not isinstance(ways, int) or isinstance(ways, bool) or ways < 1):
        raise ValueError(f"`ways` must be None or a positive integer. Received: ways={ways!r}")
    channels = tuple(channels)
    if len(channels) != 4 or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in channels):
        raise ValueError(f"`channels` must be four positive integers. Received: channels={channels!r}")
    if len(input_shape) != 3 or min(input_shape[:2]) < 16:
        raise ValueError(
            "`input_shape` must be (height, width, channels) with height and width >= 16 "
            f"(four 2x poolings). Received: input_shape={tuple(input_shape)}"
        )
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"`drop_rate` must be in [0, 1). Received: drop_rate={drop_rate!r}")
    if not isinstance(dropblock_size, int) or isinstance(dropblock_size, bool) or dropblock_size < 1:
        raise ValueError(f"`dropblock_size` must be a positive integer. Received: dropblock_size={dropblock_size!r}")

    seed_of = lambda offset: None if seed is None else seed + offset
    conv_index = itertools.count()  # convolution i (in build order) is seeded with seed + i
    he_fan_out = lambda: keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=seed_of(next(conv_index))
    )
    conv = lambda filters, size, name: keras.layers.Conv2D(
        filters, size, padding="same", use_bias=False, kernel_initializer=he_fan_out(), dtype=dtype, name=name
    )
    norm = lambda name: BatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)
    leaky = lambda name: keras.layers.LeakyReLU(negative_slope=0.1, dtype=dtype, name=name)

    inputs = keras.Input(tuple(input_shape), dtype=dtype, name="images")
    x = inputs  # (n, H, W, C)
    for block, filters in enumerate(channels):
        p = f"block{block}_"
        y = leaky(p + "relu0")(norm(p + "bn0")(conv(filters, 3, p + "conv0")(x)))
        y = leaky(p + "relu1")(norm(p + "bn1")(conv(filters, 3, p + "conv1")(y)))
        y = norm(p + "bn2")(conv(filters, 3, p + "conv2")(y))
        shortcut = norm(p + "shortcut_bn")(conv(filters, 1, p + "shortcut_conv")(x))
        x = leaky(p + "relu")(keras.layers.Add(dtype=dtype, name=p + "add")([y, shortcut]))
        x = keras.layers.MaxPooling2D(2, dtype=dtype, name=p + "pool")(x)  # (n, H/2^(b+1), ..., filters)
        if drop_rate > 0.0:
            if block < 2:
                x = keras.layers.Dropout(drop_rate, seed=seed_of(100 + block), dtype=dtype, name=p + "dropout")(x)
            else:
                x = DropBlock(
                    drop_rate, dropblock_size, seed=seed_of(100 + block), dtype=dtype, name=p + "dropblock"
                )(x)
    outputs = keras.layers.GlobalAveragePooling2D(dtype=dtype, name="features")(x)  # (n, channels[-1])
    if ways is not None:
        outputs = keras.layers.Dense(  # seed + 16: after the 16 convolutions
            ways, kernel_initializer=keras.initializers.GlorotUniform(seed=seed_of(16)), dtype=dtype, name="logits"
        )(outputs)
    return keras.Model(inputs, outputs, name="resnet12")
