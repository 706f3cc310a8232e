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
