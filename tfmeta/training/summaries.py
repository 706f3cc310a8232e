"""TensorBoard scalars without depending on the `tensorboard` package.

`tf.summary.scalar` lives in the `tensorboard` pip package, which tfmeta does not
require; this writes the same event records (the `scalars` plugin's metadata,
a float32 scalar tensor) with TensorFlow's core `tf.summary.write`, so
TensorBoard shows them as usual.
"""

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


def scalar(name: str, value, step: int) -> bool:
    """Writes one scalar to the default summary writer (see `tf.summary.create_file_writer`).

    Args:
        name: tag, e.g. `"train/loss"`.
        value: a real number.
        step: the global step.

    Returns:
        Whether a summary was written (False without a default writer).
    """
    return tf.summary.write(
        name, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA.SerializeToString()
    )


def write_scalars(writer, scalars: dict, step: int) -> None:
    """Writes `{tag: value}` at `step` with `writer`."""
    with writer.as_default():
        for name, value in scalars.items():
            scalar(name, value, step)


_IMAGE_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
    data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
)


def png_image(name: str, png: bytes, step: int) -> bool:
    """Writes one PNG image to the default summary writer, as `tf.summary.image` would.

    The `images` plugin's record: a string tensor `[width, height, png bytes]`.

    Args:
        name: tag, e.g. `"images/predictions"`.
        png: the encoded PNG.
        step: the global step.

    Returns:
        Whether a summary was written (False without a default writer).
    """
    shape = tf.shape(tf.image.decode_png(png))
    tensor = tf.stack([tf.strings.as_string(shape[1]), tf.strings.as_string(shape[0]), tf.constant(png)])
    return tf.summary.write(name, tensor, step=step, metadata=_IMAGE_METADATA.SerializeToString())
