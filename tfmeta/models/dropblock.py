"""`DropBlock`: structured dropout of square blocks of a feature map (Ghiasi et al., 2018).

As used in the few-shot ResNet-12 of MetaOptNet (Lee et al., 2019) and RFS
(Tian et al., 2020) on its last two blocks: the layer samples block "seeds" on
the positions where a whole `block_size x block_size` block fits, zeroes every
block, and rescales what is kept so that the mean is preserved. References:
`kjunelee/MetaOptNet` `models/dropblock.py` and `WangYueFt/rfs`
`models/resnet.py` (class `DropBlock`).

Randomness goes through a `keras.random.SeedGenerator`, whose state is a
non-trainable variable: under `Model.stateless_call` the state comes in with
the non-trainable values and the advanced state goes out with them (tfmeta's
inner loop carries it, the training loop assigns it back), so a seeded model
draws the same masks on every run. With `training=False` the layer is the
identity.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfmeta")
class DropBlock(keras.layers.Layer):
    """Drops square blocks of an NHWC feature map in training mode.

    In training mode, with `H x W` the spatial size and `b = min(block_size, H, W)`:

    ```
    gamma = rate / b**2 * (H * W) / ((H - b + 1) * (W - b + 1))   # seed probability
    seeds ~ Bernoulli(gamma), shape (n, H - b + 1, W - b + 1, channels)
    mask = 1 - max_pool(pad(seeds, b - 1), b, stride 1)   # seed (i, j) zeroes [i, i+b) x [j, j+b)
    outputs = inputs * mask * size(mask) / sum(mask)
    ```

    This is the rule of MetaOptNet's and RFS's `DropBlock` (seed grid, block
    placement, `gamma` and the normalisation by the kept fraction of the whole
    batch), at a fixed `rate`: those implementations also ramp the rate up
    linearly over the first 40,000 forward passes, which this layer does not
    do. `block_size` is clipped to the feature map (e.g. 28x28 inputs leave
    3x3 maps for a block size of 5).

    Args:
        rate: drop probability per activation, in `[0, 1)`.
        block_size: side of the dropped squares, a positive integer.
        seed: integer seed of the masks (None: Keras's global state).
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        ValueError: if `rate` is not in `[0, 1)` or `block_size` is not a
            positive integer.

    Example:

    ```python
    layer = tfmeta.models.DropBlock(rate=0.1, block_size=5, seed=0)
    y = layer(tf.ones([2, 10, 10, 8]), training=True)   # 5x5 zero blocks, the rest scaled up
    ```
    """

    def __init__(self, rate: float, block_size: int, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1). Received: rate={rate!r}")
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
            raise ValueError(f"`block_size` must be a positive integer. Received: block_size={block_size!r}")
        self.rate = float(rate)
        self.block_size = block_size
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        if len(inputs.shape) != 4 or None in inputs.shape[1:]:
            raise ValueError(
                f"`DropBlock` needs (n, H, W, C) inputs with known H, W and C. Received: shape={inputs.shape}"
            )
        height, width, channels = inputs.shape[1:]
        block = min(self.block_size, height, width)
        grid = (height - block + 1, width - block + 1)  # where a whole block fits
        gamma = self.rate / block**2 * (height * width) / (grid[0] * grid[1])
        noise = keras.random.uniform(
            (tf.shape(inputs)[0], *grid, channels), dtype=inputs.dtype, seed=self.seed_generator
        )
        seeds = tf.cast(noise < tf.constant(gamma, inputs.dtype), inputs.dtype)  # (n, H-b+1, W-b+1, C)
        padded = tf.pad(seeds, [[0, 0], [block - 1, block - 1], [block - 1, block - 1], [0, 0]])
        mask = 1.0 - tf.nn.max_pool2d(padded, block, strides=1, padding="VALID")  # (n, H, W, C)
        kept = tf.maximum(tf.reduce_sum(mask), 1.0)
        return inputs * mask * (tf.cast(tf.size(mask), inputs.dtype) / kept)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, block_size=self.block_size, seed=self.seed)
        return config
