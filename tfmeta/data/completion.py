"""Image completion tasks (Garnelo et al., 2018): each task is one image seen as a function.

A greyscale image of `H x W` pixels is a function from the pixel coordinates to the
intensities; a task observes a random subset of its pixels (the context) and predicts
the others (the targets):

```
x = (lo + (hi - lo) * row / (H - 1), lo + (hi - lo) * col / (W - 1))    # 2-d, in coordinate_range
y = image[row, col]                                                     # 1-d, the intensity
```

`x[..., 0]` is the row (top: `lo`), `x[..., 1]` the column (left: `lo`). The default
`coordinate_range=(0.0, 1.0)` puts the top-left pixel at `(0, 0)` and the bottom-right
one at `(1, 1)`; `(-1.0, 1.0)` centres them. Intensities are the images' own values
(Omniglot as `ClassDataset.from_omniglot` reads it: strokes 1, background 0).

Per task, `n_c ~ U{num_context}` distinct pixels, drawn without replacement, form the
context. The targets are, with `num_extra_targets=None`, every pixel in raster order
(`query_x[:, r * W + c]` is pixel `(r, c)`: the test layout, where the query is the
whole image), or else the context pixels followed by `n_t ~ U{num_extra_targets}`
other pixels (the Neural Processes reference's training layout, as `gp_tasks`).

**Static shapes.** As for the GP tasks (`tfmeta.data.gp`), the support is padded to
`num_context[1]` points and the query to `num_context[1] + num_extra_targets[1]` (or
`H * W`); `support_mask` / `query_mask` (float32 prefixes, `mask[j] = j < count`) mark
the real points and padded points are zeros. The counts are drawn per task.

**Which image.** The tasks of a stream visit the images in epochs: global task
`g = step * meta_batch_size + t` is image `perm_e[g mod N]` of the permutation `perm_e`
of epoch `e = g div N` (seeded by `(seed, e)`), so within an epoch no image repeats and
the first `ceil(N / meta_batch_size)` steps of a stream started at step 0 show every
image once. The pixels of a task are drawn from `(seed, step)`, row `t`. A task is a
pure function of `(seed, step, t, meta_batch_size)`; resuming at `start_step`
reproduces the stream, and with an `input_context` each pipeline yields its replicas'
slices of the same meta-batches (`tfmeta.data.sharding`).

Example:

```python
split = omniglot_sample_split(ClassDataset.from_omniglot("../shared/data/omniglot"))
train = image_completion_tasks(split.train.images, meta_batch_size=64, seed=0)
test = image_completion_tasks(split.test.images, 64, num_extra_targets=None)   # all 784 pixels
batch = next(iter(train)).task_episode()                                        # what learners take
```
"""

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode, TaskEpisode
from tfmeta.data.sharding import TaskShard

#: The most context points of a training or test task (capped at the image's pixels).
MAX_CONTEXT = 200
#: The most extra targets of a training task (after its context points).
MAX_EXTRA_TARGETS = 200
#: Default coordinate range: pixel coordinates scaled to [0, 1].
COORDINATE_RANGE = (0.0, 1.0)


def completion_settings(image_shape) -> tuple[dict, dict]:
    """`(training, test)` keyword arguments of `image_completion_tasks` for images of `image_shape`.

    Training: `n_c ~ U{1..min(200, P - 1)}` context pixels of the `P = H * W`, and the
    targets the context followed by `n_t ~ U{1..min(200, P - max n_c)}` other pixels.
    Test: the same context counts, every pixel a target.

    Args:
        image_shape: `(H, W)` or `(H, W, 1)`.

    Returns:
        Two dicts of keyword arguments.

    Raises:
        ValueError: if the image holds fewer than 2 pixels.
    """
    num_pixels = int(np.prod(tuple(image_shape)[:2]))
    if num_pixels < 2:
        raise ValueError(f"Images must hold at least 2 pixels. Received: image_shape={tuple(image_shape)}")
    context = (1, min(MAX_CONTEXT, num_pixels - 1))  # image_completion_tasks' default
    training = dict(num_context=context, num_extra_targets=(1, min(MAX_EXTRA_TARGETS, num_pixels - context[1])))
    return training, dict(num_context=context, num_extra_targets=None)


class CompletionEpisode(NamedTuple):
    """A meta-batch of image completion tasks, padded to static shapes.

    Attributes:
        support_x: `(tasks, S, 2)` float32 coordinates of the context pixels; zeros where padded.
        support_y: `(tasks, S, 1)` float32 their intensities; zeros where padded.
        query_x: `(tasks, Q, 2)` float32 coordinates of the targets.
        query_y: `(tasks, Q, 1)` float32 their intensities.
        support_mask: `(tasks, S)` float32, 1 for a real context pixel, 0 for padding.
        query_mask: `(tasks, Q)` float32, likewise for the targets.
        image_index: `(tasks,)` int64, the row of each task's image in the `images` given.

    Example:

    ```python
    batch = next(iter(image_completion_tasks(images, meta_batch_size=16)))
    batch.support_x.shape          # (16, 200, 2)
    batch.num_context              # (16,) real context pixels per task
    ```
    """

    support_x: tf.Tensor
    support_y: tf.Tensor
    query_x: tf.Tensor
    query_y: tf.Tensor
    support_mask: tf.Tensor
    query_mask: tf.Tensor
    image_index: tf.Tensor

    @property
    def episode(self) -> Episode:
        """The padded support and query sets as an `Episode` (masks dropped)."""
        return Episode(self.support_x, self.support_y, self.query_x, self.query_y)

    @property
    def num_context(self) -> tf.Tensor:
        """`(tasks,)` int32: real context pixels per task."""
        return tf.cast(tf.reduce_sum(self.support_mask, axis=-1), tf.int32)

    @property
    def num_targets(self) -> tf.Tensor:
        """`(tasks,)` int32: real targets per task (the context pixels included)."""
        return tf.cast(tf.reduce_sum(self.query_mask, axis=-1), tf.int32)

    def task_episode(self) -> TaskEpisode:
        """The batch as a `TaskEpisode` (no metadata: zero-width), what learners and the loop take."""
        metadata = tf.zeros(list(self.support_mask.shape[:-1]) + [0], tf.float32)
        return TaskEpisode(self.support_x, self.support_y, self.query_x, self.query_y, self.support_mask,
                           self.query_mask, metadata)


def pixel_coordinates(height: int, width: int, coordinate_range=COORDINATE_RANGE) -> np.ndarray:
    """The coordinates of every pixel in raster order: float32 `(H * W, 2)`, row then column.

    Row `r`, column `c` (entry `r * W + c`) is `lo + (hi - lo) * (r / (H - 1), c / (W - 1))`
    (a side of one pixel maps to `lo`).

    Example:

    ```python
    pixel_coordinates(28, 28)[29]        # [1/27, 1/27]: pixel (1, 1)
    ```
    """
    low, high = coordinate_range
    scale = lambda n: np.arange(n, dtype=np.float64) / max(n - 1, 1)
    rows, cols = np.meshgrid(scale(height), scale(width), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()], axis=-1)
    return (low + (high - low) * grid).astype(np.float32)


def _check_images(images) -> np.ndarray:
    """`(N, H, W)` or `(N, H, W, 1)` -> float32 `(N, H, W)`."""
    if hasattr(images, "numpy"):
        images = images.numpy()
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] * array.shape[2] < 2:
        raise ValueError(
            "`images` must be greyscale images (N, H, W) or (N, H, W, 1) with N >= 1 and at least 2 pixels. "
            f"Received: images.shape={np.shape(images)}"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"`images` must hold numbers. Received: images.dtype={array.dtype}")
    return array.astype(np.float32)


def _check_count_range(name, bounds, low, high):
    if (
        not isinstance(bounds, (tuple, list))
        or len(bounds) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        or not low <= bounds[0] <= bounds[1] <= high
    ):
        raise ValueError(
            f"`{name}` must be a pair of integers (low, high) with {low} <= low <= high <= {high}. "
            f"Received: {name}={bounds!r}"
        )


def _check_arguments(meta_batch_size, seed, start_step, coordinate_range):
    if not isinstance(meta_batch_size, int) or isinstance(meta_batch_size, bool) or meta_batch_size < 1:
        raise ValueError(f"`meta_batch_size` must be a positive integer. Received: meta_batch_size={meta_batch_size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    if not isinstance(start_step, int) or isinstance(start_step, bool) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer. Received: start_step={start_step!r}")
    if (
        not isinstance(coordinate_range, (tuple, list))
        or len(coordinate_range) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in coordinate_range)
        or not coordinate_range[0] < coordinate_range[1]
    ):
        raise ValueError(f"`coordinate_range` must be a pair of finite numbers (low, high) with low < high. "
                         f"Received: coordinate_range={coordinate_range!r}")


def _uniform_counts(u, bounds):
    """Counts uniform on `{bounds[0], ..., bounds[1]}` from uniforms `u` in [0, 1), int32."""
    span = bounds[1] - bounds[0] + 1
    return bounds[0] + tf.minimum(tf.cast(tf.floor(u * span), tf.int32), span - 1)


def _mask(counts, size):
    return tf.cast(tf.range(size)[None, :] < counts[:, None], tf.float32)  # (tasks, size)


def image_completion_tasks(
    images,
    meta_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    num_context: tuple[int, int] | None = None,
    num_extra_targets: tuple[int, int] | None = None,
    coordinate_range: tuple[float, float] = COORDINATE_RANGE,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """An infinite stream of meta-batches of image completion tasks (see the module docstring).

    Args:
        images: greyscale images, `(N, H, W)` or `(N, H, W, 1)` (numpy or a tensor;
            e.g. `ClassDataset.images`), one task each. Held in memory as float32.
        meta_batch_size: tasks per element, `B`.
        seed: non-negative integer seed; the same seed gives the same stream.
        start_step: step number of the first element (to resume a run).
        num_context: `(low, high)`, inclusive, of the uniform number of context pixels
            per task (`1 <= low <= high <= H * W`); None: `(1, min(200, H * W - 1))`.
        num_extra_targets: None: every pixel is a target, in raster order (test tasks).
            `(low, high)`: the targets are the context pixels followed by a uniform
            number in `low..high` of other pixels (`num_context[1] + high <= H * W`).
        coordinate_range: `(low, high)`: the first row and column are at `low`, the last
            at `high`.
        input_context: a `tf.distribute.InputContext`: each element is then one
            replica's slice of the global meta-batch (see `tfmeta.data.sharding`).

    Returns:
        A `tf.data.Dataset` of `CompletionEpisode`s (`.task_episode()` gives the
        `TaskEpisode`): support `(B, S, 2)` and `(B, S, 1)` with `S = num_context[1]`,
        query `(B, Q, 2)` and `(B, Q, 1)` with `Q = H * W` (`num_extra_targets=None`) or
        `S + num_extra_targets[1]`, masks `(B, S)` and `(B, Q)`, image indices `(B,)`.
        Element `i` is step `start_step + i`.

    Raises:
        ValueError: if an argument is out of range or `images` are not greyscale
            images; the message names the argument and what was received.

    Example:

    ```python
    tasks = image_completion_tasks(split.train.images, 64, seed=1, num_extra_targets=(1, 200))
    batch = next(iter(tasks))
    batch.query_x.shape            # (64, 400, 2): up to 200 context and 200 extra pixels
    ```
    """
    pixels = _check_images(images)
    _check_arguments(meta_batch_size, seed, start_step, coordinate_range)
    num_images, height, width = pixels.shape
    num_pixels = height * width
    if num_context is None:
        num_context = (1, min(MAX_CONTEXT, num_pixels - 1))
    _check_count_range("num_context", num_context, 1, num_pixels)
    if num_extra_targets is not None:
        _check_count_range("num_extra_targets", num_extra_targets, 0, num_pixels - num_context[1])
    support_size = num_context[1]
    query_size = num_pixels if num_extra_targets is None else support_size + num_extra_targets[1]
    shard = TaskShard.from_context(meta_batch_size, input_context)
    intensities = tf.constant(pixels.reshape(num_images, num_pixels, 1))  # (N, P, 1)
    coordinates = tf.constant(pixel_coordinates(height, width, tuple(coordinate_range)))  # (P, 2)
    # The epochs one meta-batch can span: its first task's and the next ones.
    spanned = meta_batch_size // num_images + 2
    base = tf.constant([seed, 0], tf.int64)
    fold_in = tf.random.experimental.stateless_fold_in

    def image_indices(step):
        """`(B,)` int64: the image of each task of `step` (epoch permutations, see the module docstring)."""
        task = step * meta_batch_size + tf.range(meta_batch_size, dtype=tf.int64)  # global task numbers
        epoch, position = task // num_images, task % num_images
        first = epoch[0]

        def permutation(e):
            key = fold_in(fold_in(base, 1), e)
            return tf.argsort(tf.random.stateless_uniform([num_images], seed=key), stable=True)

        permutations = tf.map_fn(permutation, first + tf.range(spanned, dtype=tf.int64),
                                 fn_output_signature=tf.int32)  # (spanned, N)
        return tf.cast(tf.gather_nd(permutations, tf.stack([epoch - first, position], axis=-1)), tf.int64)

    def make_batch(step):
        keys = tf.random.experimental.stateless_split(fold_in(fold_in(base, 2), step), 3)
        index = image_indices(step)  # (B,)
        image = tf.gather(intensities, index)  # (B, P, 1)
        u = tf.random.stateless_uniform([meta_batch_size, 2], seed=keys[0], dtype=tf.float64)
        contexts = _uniform_counts(u[:, 0], num_context)  # (B,)
        order = tf.argsort(tf.random.stateless_uniform([meta_batch_size, num_pixels], seed=keys[1]), axis=-1,
                           stable=True)  # (B, P): each task's pixels in a random order
        support_mask = _mask(contexts, support_size)
        chosen = order[:, :support_size]  # the context pixels first
        support_x = tf.gather(coordinates, chosen) * support_mask[..., None]
        support_y = tf.gather(image, chosen, batch_dims=1) * support_mask[..., None]
        if num_extra_targets is None:  # every pixel, in raster order
            query_x = tf.broadcast_to(coordinates, [meta_batch_size, num_pixels, 2])
            query_y = image
            query_mask = tf.ones([meta_batch_size, num_pixels], tf.float32)
        else:  # the context pixels, then other pixels
            extras = _uniform_counts(u[:, 1], num_extra_targets)
            query_mask = _mask(contexts + extras, query_size)
            targets = order[:, :query_size]
            query_x = tf.gather(coordinates, targets) * query_mask[..., None]
            query_y = tf.gather(image, targets, batch_dims=1) * query_mask[..., None]
        return CompletionEpisode(support_x, support_y, query_x, query_y, support_mask, query_mask, index)

    def make_element(element):
        steps, first_task = shard.locate(element)
        batch = make_batch(start_step + steps)  # the whole meta-batch, then this pipeline's slice
        return CompletionEpisode(
            *(tf.ensure_shape(t[first_task:first_task + shard.tasks], [shard.tasks] + t.shape[1:]) for t in batch)
        )

    elements = tf.data.Dataset.counter(dtype=tf.int64)
    return elements.map(make_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )
