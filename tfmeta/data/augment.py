"""Training-time image augmentation of episodes, seeded per `(seed, step, task)`.

`augment_episode` is a pure function of the episode and of `(seed, step, task)`,
built on stateless random ops: the same task of the same step is augmented the
same way on any run, worker or replica, so resuming at `start_step` reproduces
the stream. It is meant as a `tf.data` map after `episode_dataset`, on the
training stream only (evaluation streams are simply not mapped):

```python
tasks = episode_dataset(train, ways=5, shots=1, queries=15, meta_batch_size=4, seed=0, start_step=s)
tasks = tasks.enumerate(start=s).map(
    lambda step, episode: augment_episode(episode, AUGMENTATIONS["mini_imagenet"], seed=0, step=step))
```

Under `input_context` sharding, element `i` holds the tasks `first_task..` of
step `s + steps` with `steps, first_task = TaskShard.locate(i)`; pass both.

What one image goes through, in the order of the references (RandomCrop ->
ColorJitter -> RandomHorizontalFlip, as `torchvision` in MetaOptNet's
`data/mini_imagenet.py` / `data/CIFAR_FS.py` and RFS's
`dataset/transform_cfg.py`):

* crop: zero-pad `crop_padding` pixels on every side, crop back to the
  original size at a uniformly random offset (`RandomCrop(size, padding=p)`);
* colour jitter of strength `j`: brightness, contrast and saturation, each
  with a factor uniform in `[1 - j, 1 + j]`, in a random order per image, each
  clipped to `[0, 1]`, as `torchvision.transforms.ColorJitter(j, j, j)`:
  brightness `f * x`; contrast `f * x + (1 - f) * mean(gray(x))`; saturation
  `f * x + (1 - f) * gray(x)` (grayscale `0.299 R + 0.587 G + 0.114 B`;
  single-channel images: the mean of the image, and no saturation change);
* flip: left-right with probability 1/2.

Images are expected in `[0, 1]` and stay there. Labels are never touched.
"""

import dataclasses

import tensorflow as tf

from tfmeta.data.episode import Episode

_ALG = "philox"  # explicit, so the stream does not depend on the device
_STREAM = 0x41554721  # tells the augmentation stream apart from others seeded by the same integer


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Which training-time augmentations to apply to episode images.

    Attributes:
        crop_padding: zero padding on each side before cropping back to the
            original size, in pixels; 0: no crop.
        flip: random left-right flips (probability 1/2).
        color_jitter: strength `j` of brightness, contrast and saturation
            jitter (factors uniform in `[1 - j, 1 + j]`), in `[0, 1]`; 0: none.

    Raises:
        ValueError: if a field is out of range.

    Example:

    ```python
    Augmentation(crop_padding=8, flip=True, color_jitter=0.4)   # = AUGMENTATIONS["mini_imagenet"]
    Augmentation().is_identity                                   # True
    ```
    """

    crop_padding: int = 0
    flip: bool = False
    color_jitter: float = 0.0

    def __post_init__(self):
        p = self.crop_padding
        if not isinstance(p, int) or isinstance(p, bool) or p < 0:
            raise ValueError(f"`crop_padding` must be a non-negative integer. Received: crop_padding={p!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"`flip` must be a bool. Received: flip={self.flip!r}")
        j = self.color_jitter
        if isinstance(j, bool) or not isinstance(j, (int, float)) or not 0.0 <= j <= 1.0:
            raise ValueError(f"`color_jitter` must be a number in [0, 1]. Received: color_jitter={j!r}")

    @property
    def is_identity(self) -> bool:
        """Whether nothing is applied."""
        return self.crop_padding == 0 and not self.flip and self.color_jitter == 0


# Per-data-set training augmentation, as the few-shot papers train (data, not branches).
# miniImageNet/tieredImageNet (84x84): RandomCrop(84, padding=8), ColorJitter(0.4, 0.4, 0.4), flip;
# CIFAR-FS/FC100 (32x32): RandomCrop(32, padding=4), same jitter and flip (MetaOptNet, Lee et al. 2019;
# RFS, Tian et al. 2020). Omniglot: none (Finn et al. 2017 add rotated classes instead, see
# `ClassDataset.with_rotations`).
AUGMENTATIONS = {
    "omniglot": Augmentation(),
    "mini_imagenet": Augmentation(crop_padding=8, flip=True, color_jitter=0.4),
    "tiered_imagenet": Augmentation(crop_padding=8, flip=True, color_jitter=0.4),
    "cifar_fs": Augmentation(crop_padding=4, flip=True, color_jitter=0.4),
    "fc100": Augmentation(crop_padding=4, flip=True, color_jitter=0.4),
}


def augment_episode(episode: Episode, augmentation: Augmentation, seed: int, step, first_task=0) -> Episode:
    """Augments every support and query image of an episode, independently per image.

    Task `t` of step `step` (support and query) depends only on
    `(seed, step, t)`, the augmentation, the episode's shape and its own
    images: not on the batch it is in, nor on the other tasks. The labels are
    returned unchanged.

    Args:
        episode: a classification `Episode` (or `TaskEpisode`, whose masks and
            metadata are kept) of images in `[0, 1]`, batched
            (`support_x` `(tasks, n, H, W, C)`) or a single task
            (`(n, H, W, C)`).
        augmentation: an `Augmentation`; if it does nothing, `episode` is
            returned as is.
        seed: non-negative integer seed of the augmentation stream.
        step: the training step (an int or an int tensor, e.g. from
            `Dataset.enumerate(start=start_step)`).
        first_task: index of the episode's first task in its step's
            meta-batch (non-zero for a replica's slice, see `TaskShard.locate`);
            a single task is task `first_task`.

    Returns:
        An `Episode` with augmented `support_x` and `query_x` (same shapes and
        dtypes) and the same labels.

    Raises:
        ValueError: if `augmentation` is not an `Augmentation`, `seed` is not a
            non-negative integer, or the episode does not hold images.

    Example:

    ```python
    augmented = augment_episode(episode, AUGMENTATIONS["cifar_fs"], seed=0, step=12)
    ```
    """
    if not isinstance(augmentation, Augmentation):
        raise ValueError(
            f"`augmentation` must be an `Augmentation`. Received: augmentation={augmentation!r}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    rank = episode.support_x.shape.rank
    if rank not in (4, 5) or episode.query_x.shape.rank != rank or None in episode.support_x.shape[-3:]:
        raise ValueError(
            "`augment_episode` needs image episodes: support_x and query_x of shape (tasks, n, H, W, C) or "
            f"(n, H, W, C) with known H, W, C. Received: support_x.shape={episode.support_x.shape}, "
            f"query_x.shape={episode.query_x.shape}"
        )
    if augmentation.is_identity:
        return episode
    batched = rank == 5
    support, query = episode.support_x, episode.query_x
    if not batched:
        support, query = support[None], query[None]  # one task
    n_support = support.shape[1] if support.shape[1] is not None else tf.shape(support)[1]
    images = tf.concat([support, query], axis=1)  # (tasks, n_support + n_query, H, W, C)
    shape = tf.shape(images)
    draws = _uniforms(seed, step, first_task, shape[0], shape[1])  # (tasks, n_support + n_query, _DRAWS)
    flat = lambda t: tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], axis=0))  # (tasks * n, ...)
    images = tf.reshape(_augment_images(flat(images), augmentation, flat(draws)), shape)
    support, query = images[:, :n_support], images[:, n_support:]
    if not batched:
        support, query = support[0], query[0]
    support.set_shape(episode.support_x.shape)  # keep the static shapes (support_size, ...)
    query.set_shape(episode.query_x.shape)
    return episode._replace(support_x=support, query_x=query)  # a TaskEpisode keeps its masks and metadata


# Uniforms drawn per image: crop row and column offsets, flip, three jitter factors, three
# jitter-order keys.
_DRAWS = 9


def _uniforms(seed: int, step, first_task, tasks, images_per_task):
    """`(tasks, images_per_task, _DRAWS)` uniforms in [0, 1); task `i` is task `first_task + i`
    of step `step` and its draws depend only on `(seed, step, first_task + i)` and the shape."""
    step_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, _STREAM], tf.int64), tf.cast(step, tf.int64), alg=_ALG
    )
    task_ids = tf.cast(first_task, tf.int64) + tf.range(tf.cast(tasks, tf.int64))  # (tasks,)
    # A per-task seed, as `stateless_fold_in(step_seed, task)` builds it: [hash of step_seed, task].
    key = tf.random.stateless_uniform([], step_seed, minval=None, maxval=None, dtype=tf.int64, alg=_ALG)
    task_seeds = tf.stack([tf.fill(tf.shape(task_ids), key), task_ids], axis=1)  # (tasks, 2)
    return tf.map_fn(
        lambda task_seed: tf.random.stateless_uniform([images_per_task, _DRAWS], task_seed, alg=_ALG),
        task_seeds,
        fn_output_signature=tf.TensorSpec([None, _DRAWS], tf.float32),
    )


def _augment_images(images, augmentation: Augmentation, draws):
    """Crop, jitter and flip each image of `images` `(n, H, W, C)` with its uniforms `draws` `(n, _DRAWS)`."""
    height, width, channels = images.shape[-3:]
    x = images
    if augmentation.crop_padding:
        p = augmentation.crop_padding
        padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])  # (n, H+2p, W+2p, C), zeros
        offsets = tf.minimum(tf.cast(draws[:, :2] * (2 * p + 1), tf.int32), 2 * p)  # (n, 2) uniform in 0..2p
        rows = offsets[:, :1] + tf.range(height)[None]  # (n, H)
        cols = offsets[:, 1:] + tf.range(width)[None]  # (n, W)
        x = tf.gather(padded, rows, axis=1, batch_dims=1)  # (n, H, W+2p, C)
        x = tf.gather(x, cols, axis=2, batch_dims=1)  # (n, H, W, C)
    if augmentation.color_jitter:
        x = _color_jitter(x, augmentation.color_jitter, draws[:, 3:6], draws[:, 6:9], channels)
    if augmentation.flip:
        flips = draws[:, 2] < 0.5  # (n,)
        x = tf.where(flips[:, None, None, None], tf.reverse(x, axis=[2]), x)
    return x


def _gray(x, channels):
    """Per-pixel grayscale `(n, H, W, 1)` (ITU-R 601-2 luma for RGB, as torchvision)."""
    if channels != 3:
        return tf.reduce_mean(x, axis=-1, keepdims=True)
    return tf.tensordot(x, tf.constant([0.299, 0.587, 0.114], x.dtype), axes=1)[..., None]


def _color_jitter(x, strength: float, factor_draws, order_draws, channels):
    """Brightness, contrast and saturation in a random order per image (torchvision's ColorJitter).

    Each op is `clip(f * x + (1 - f) * target, 0, 1)` with its own factor `f` and a
    target of 0 (brightness), the image's mean grey (contrast) or each pixel's grey
    (saturation): one blend per position, with the op chosen per image.
    """
    factors = 1.0 - strength + 2.0 * strength * factor_draws  # (n, 3) uniform in [1 - j, 1 + j)
    if channels != 3:  # saturation leaves non-RGB images alone
        factors = tf.concat([factors[:, :2], tf.ones_like(factors[:, 2:])], axis=1)
    factors = tf.cast(factors, x.dtype)  # (n, 3): brightness, contrast, saturation
    order = tf.argsort(order_draws, axis=1)  # (n, 3): a random permutation per image
    for position in range(3):
        op = order[:, position]  # (n,): the op applied at this position
        factor = tf.gather(factors, op, batch_dims=1)[:, None, None, None]  # (n, 1, 1, 1)
        gray = _gray(x, channels)  # (n, H, W, 1)
        mean = tf.reduce_mean(gray, axis=[1, 2, 3], keepdims=True)  # (n, 1, 1, 1)
        op = op[:, None, None, None]
        target = tf.where(op == 0, tf.zeros_like(gray), tf.where(op == 1, mean, gray))  # (n, H, W, 1)
        x = tf.clip_by_value(factor * x + (1.0 - factor) * target, 0.0, 1.0)
    return x
