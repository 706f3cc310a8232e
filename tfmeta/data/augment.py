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
    `(seed, step, t)`, the augmentation and the images: not on the batch it is
    in, nor on the other tasks. The labels are returned unchanged.

    Args:
        episode: a classification `Episode` of images in `[0, 1]`, batched
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
    step_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, _STREAM], tf.int64), tf.cast(step, tf.int64), alg=_ALG
    )
    first_task = tf.cast(first_task, tf.int64)

    def one_task(support_x, query_x, task):
        task_seed = tf.random.experimental.stateless_fold_in(step_seed, task, alg=_ALG)
        set_seeds = tf.random.experimental.stateless_split(task_seed, 2, alg=_ALG)  # support, query
        return (_augment_images(support_x, augmentation, set_seeds[0]),
                _augment_images(query_x, augmentation, set_seeds[1]))

    if rank == 4:
        support_x, query_x = one_task(episode.support_x, episode.query_x, first_task)
    else:
        tasks = first_task + tf.range(tf.shape(episode.support_x, out_type=tf.int64)[0], dtype=tf.int64)
        support_x, query_x = tf.map_fn(
            lambda args: one_task(*args),
            (episode.support_x, episode.query_x, tasks),
            fn_output_signature=(
                tf.TensorSpec(episode.support_x.shape[1:], episode.support_x.dtype),
                tf.TensorSpec(episode.query_x.shape[1:], episode.query_x.dtype),
            ),
        )
    return Episode(support_x, episode.support_y, query_x, episode.query_y)


def _augment_images(images, augmentation: Augmentation, seed):
    """Crop, jitter and flip each image of `images` `(n, H, W, C)` with its own random draws."""
    crop_seed, jitter_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3, alg=_ALG))
    n = tf.shape(images)[0]
    height, width, channels = images.shape[-3:]
    x = images
    if augmentation.crop_padding:
        p = augmentation.crop_padding
        padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])  # (n, H+2p, W+2p, C), zeros
        offsets = tf.random.stateless_uniform([n, 2], crop_seed, 0, 2 * p + 1, tf.int32, alg=_ALG)  # (n, 2)
        rows = offsets[:, :1] + tf.range(height)[None]  # (n, H)
        cols = offsets[:, 1:] + tf.range(width)[None]  # (n, W)
        x = tf.gather(padded, rows, axis=1, batch_dims=1)  # (n, H, W+2p, C)
        x = tf.gather(x, cols, axis=2, batch_dims=1)  # (n, H, W, C)
    if augmentation.color_jitter:
        x = _color_jitter(x, augmentation.color_jitter, jitter_seed, channels)
    if augmentation.flip:
        flips = tf.random.stateless_uniform([n], flip_seed, alg=_ALG) < 0.5  # (n,)
        x = tf.where(flips[:, None, None, None], tf.reverse(x, axis=[2]), x)
    return x


def _gray(x, channels):
    """Per-pixel grayscale `(n, H, W, 1)` (ITU-R 601-2 luma for RGB, as torchvision)."""
    if channels != 3:
        return tf.reduce_mean(x, axis=-1, keepdims=True)
    return tf.tensordot(x, tf.constant([0.299, 0.587, 0.114], x.dtype), axes=1)[..., None]


def _color_jitter(x, strength: float, seed, channels):
    """Brightness, contrast and saturation in a random order per image (torchvision's ColorJitter)."""
    factor_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2, alg=_ALG))
    n = tf.shape(x)[0]
    factors = tf.random.stateless_uniform([n, 3], factor_seed, 1.0 - strength, 1.0 + strength, alg=_ALG)
    factors = tf.cast(factors, x.dtype)[:, None, None, None, :]  # (n, 1, 1, 1, 3)
    order = tf.argsort(tf.random.stateless_uniform([n, 3], order_seed, alg=_ALG), axis=1)  # (n, 3) a permutation

    def blend(image, factor, target):  # torchvision's _blend: clip(f * image + (1 - f) * target)
        return tf.clip_by_value(factor * image + (1.0 - factor) * target, 0.0, 1.0)

    for position in range(3):
        brightness = blend(x, factors[..., 0], 0.0)
        contrast = blend(x, factors[..., 1], tf.reduce_mean(_gray(x, channels), axis=[1, 2, 3], keepdims=True))
        saturation = blend(x, factors[..., 2], _gray(x, channels)) if channels == 3 else x
        op = order[:, position][:, None, None, None]  # (n, 1, 1, 1): which one comes at this position
        x = tf.where(op == 0, brightness, tf.where(op == 1, contrast, saturation))
    return x
