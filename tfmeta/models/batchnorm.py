"""`BatchNorm`: batch normalisation whose batch moments are fully differentiable.

Why not `keras.layers.BatchNormalization`: on the TensorFlow backend it computes
the batch moments with `tf.nn.moments`, which stops the gradient through the
mean inside the variance (`var = mean(square(x - stop_gradient(mean)))`). First
derivatives are unaffected (the gradient of the variance with respect to the
mean is zero), but second derivatives are wrong, so second-order MAML
meta-gradients through Keras's layer are wrong (measured in float64 against
central finite differences on a small Conv-4: relative error 2.04 after 1 inner
step and 1.17 after 3, against 2e-10 and 5e-9 with this layer; see
`tests/algorithms/test_maml_gradients.py`).

BatchNorm policy of tfmeta's MAML family (as Finn et al., 2017):

* With `training=True` the layer normalises with the statistics of the current
  batch, in the inner loop (support set) *and* on the query set: evaluation is
  transductive over the query batch. Second-order meta-gradients are exact.
* The moving statistics are non-trainable variables, updated with `momentum`
  through the non-trainable state that `Model.stateless_call` returns (the
  inner loop carries that state; it never writes the variables itself).
* With `training=False` the moving statistics are used.

Speed: in training mode, float32 and 16-bit inputs go through TensorFlow's fused
kernel (`FusedBatchNormV3`; its gradient `FusedBatchNormGradV3` is one kernel too).
Its registered second derivative differentiates the analytic gradient formula, in
which only first derivatives of the variance are taken, so it is exact (its
`stop_gradient` on the mean inside the variance drops a term that is zero). That
path is checked to second order against the float64 path
(`tests/models/test_batchnorm.py`) and made a second-order MAML meta-step on Conv-4
about a fifth faster (`benchmarks/meta_step.py`). float64 inputs (the gradient
checks) and inference use the plain formula below.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfmeta")
class BatchNorm(keras.layers.Layer):
    """Batch normalisation over all axes but the last, with exact second derivatives.

    In training mode:

    ```
    mean = reduce_mean(x, axes)
    var = reduce_mean(square(x - mean), axes)          # no stop_gradient
    y = (x - mean) * (gamma / sqrt(var + epsilon)) + beta    # gamma folded per channel
    moving_mean = momentum * moving_mean + (1 - momentum) * mean
    moving_var = momentum * moving_var + (1 - momentum) * var
    ```

    In inference mode the moving statistics replace `mean` and `var`. In
    training mode float32 and 16-bit inputs use the fused kernel, with the same
    values and derivatives (see the module docstring).

    Args:
        momentum: decay of the moving statistics, in `[0, 1)`.
        epsilon: small float added to the variance.
        center: whether to learn the offset `beta`.
        scale: whether to learn the scale `gamma`.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
        ValueError: if `momentum` is not in `[0, 1)` or `epsilon` is not positive.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(64, 3, padding="same"),
        tfmeta.models.BatchNorm(),
        keras.layers.ReLU(),
    ])
    ```
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        if not epsilon > 0.0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"The last axis of the input must be known. Received: input_shape={input_shape}")
        shape = (channels,)
        self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma") if self.scale else None
        self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta") if self.center else None
        # autocast=False: under mixed precision the statistics stay float32 when read.
        self.moving_mean = self.add_weight(
            shape=shape, initializer="zeros", trainable=False, autocast=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=shape, initializer="ones", trainable=False, autocast=False, name="moving_variance"
        )

    def call(self, inputs, training=False):
        if training and inputs.dtype in (tf.float32, tf.float16, tf.bfloat16):
            return self._fused_training_call(inputs)
        axes = list(range(len(inputs.shape) - 1))
        # 16-bit inputs (mixed precision): moments in float32, like Keras's BatchNormalization.
        low_precision = inputs.dtype in (tf.float16, tf.bfloat16)
        x = tf.cast(inputs, tf.float32) if low_precision else inputs
        if training:
            mean = tf.reduce_mean(x, axis=axes)  # (channels,)
            centered = x - mean
            variance = tf.reduce_mean(tf.square(centered), axis=axes)  # differentiable through mean
            self._update_moving_statistics(mean, variance)
        else:
            centered = x - tf.cast(self.moving_mean, x.dtype)
            variance = tf.cast(self.moving_variance, x.dtype)
        # gamma folded into the per-channel factor: one multiply of the full tensor
        # instead of two, forward and in every (second) derivative. This is the
        # cost that dominates a second-order MAML step on Conv-4 (measured -14%).
        scale = tf.math.rsqrt(variance + tf.constant(self.epsilon, x.dtype))  # (channels,)
        if self.gamma is not None:
            scale = scale * tf.cast(self.gamma, x.dtype)
        outputs = tf.cast(centered * scale, inputs.dtype)
        if self.beta is not None:
            outputs = outputs + tf.cast(self.beta, inputs.dtype)
        return outputs

    def _update_moving_statistics(self, mean, variance):
        """`moving = momentum * moving + (1 - momentum) * batch` (no gradient)."""
        stats_dtype = self.moving_mean.dtype
        decay = tf.constant(self.momentum, stats_dtype)
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            moving.assign(decay * moving + (1.0 - decay) * tf.cast(tf.stop_gradient(batch), stats_dtype))

    def _fused_training_call(self, inputs):
        """Training mode through `FusedBatchNormV3` (NHWC; other ranks reshaped to it)."""
        channels = inputs.shape[-1]
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        # The fused kernel takes float32 scale and offset, also for 16-bit inputs.
        gamma = tf.cast(self.gamma, tf.float32) if self.gamma is not None else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.beta is not None else tf.zeros([channels], tf.float32)
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        # The kernel returns the Bessel-corrected variance; the moving statistics use the
        # batch variance, as the plain formula does.
        count = tf.cast(tf.size(x) // channels, tf.float32)
        self._update_moving_statistics(mean, unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0))
        return tf.reshape(outputs, tf.shape(inputs)) if len(inputs.shape) != 4 else outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon, center=self.center, scale=self.scale)
        return config


def batch_norm_layers(model: keras.Model) -> list:
    """The batch-normalisation layers of `model` (`BatchNorm` and Keras's
    `BatchNormalization`), in nested models too, in the model's order.

    Walks `Model.layers` (public API) recursively through nested models
    (Sequential, functional or subclassed). A BatchNorm held inside a custom
    `keras.layers.Layer` that is not a `keras.Model` is not found: build such
    blocks as functional models (as `tfmeta.models` does).

    Args:
        model: a `keras.Model`.

    Returns:
        A list of layers, empty if there are none.

    Example:

    ```python
    len(batch_norm_layers(tfmeta.models.conv4(ways=5)))   # 4
    ```
    """
    kinds = (BatchNorm, keras.layers.BatchNormalization)
    found = []

    def walk(layers):
        for layer in layers:
            if isinstance(layer, kinds):
                found.append(layer)
            if isinstance(layer, keras.Model):
                walk(layer.layers)

    walk(model.layers)
    return found
