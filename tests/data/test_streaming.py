"""uint8 `ClassDataset`s and episodes streamed from a memory-mapped on-disk cache."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfmeta.data import ClassDataset, episode_dataset, read_image_files
from tfmeta.data.standard import load_mini_imagenet, mini_imagenet_classes


def _take(dataset, n):
    return [[t.numpy() for t in episode] for episode in dataset.take(n)]


def _assert_same_episodes(a, b):
    assert len(a) == len(b)
    for episode_a, episode_b in zip(a, b):
        for ta, tb in zip(episode_a, episode_b):
            assert ta.dtype == tb.dtype
            np.testing.assert_array_equal(ta, tb)


@pytest.fixture(scope="module")
def pixels_and_labels():
    """6 classes of 5 random uint8 3x3x2 images (labels sorted), alphabet groups for 3 pairs of classes."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (30, 3, 3, 2), dtype=np.uint8), np.repeat(np.arange(6), 5)


def test_uint8_storage_scales_exactly_as_float32_storage(pixels_and_labels):
    pixels, labels = pixels_and_labels
    names, groups = [f"a{c // 2}/c{c}" for c in range(6)], [f"a{c // 2}" for c in range(6)]
    as_uint8 = ClassDataset(pixels, np.arange(0, 31, 5), names, groups)
    as_float = ClassDataset.from_arrays(pixels, labels, names, {c: groups[c] for c in range(6)})  # x / 255 float32
    assert as_uint8.pixels.dtype == np.uint8 and as_uint8.pixels.nbytes == pixels.size  # 1 byte a pixel
    assert as_float.pixels.dtype == np.float32 and as_float.images is as_float.pixels  # float32: as before
    np.testing.assert_array_equal(as_uint8.images, as_float.images)  # bit for bit
    index = np.array([[3, 29], [0, 7]])
    assert as_uint8.gather(index).dtype == np.float32 and as_uint8.gather(index).shape == (2, 2, 3, 3, 2)
    np.testing.assert_array_equal(as_uint8.gather(index), as_float.images[index])
    np.testing.assert_array_equal(as_uint8.class_images(4), as_float.class_images(4))
    # Transforms keep 1 byte a pixel and the same values.
    for transform in (lambda d: d.select(["a1/c3", "a0/c0"]), lambda d: d.random_split([2, 3], seed=1)[1],
                      lambda d: d.split_by_alphabet(["a2"])[0], lambda d: d.with_rotations((90, 270))):
        kept, reference = transform(as_uint8), transform(as_float)
        assert kept.pixels.dtype == np.uint8 and kept.class_names == reference.class_names
        np.testing.assert_array_equal(kept.images, reference.images)
    # The same episodes, float32, from either storage.
    options = dict(ways=3, shots=2, queries=2, meta_batch_size=4, seed=5)
    episodes = [_take(episode_dataset(source, **options), 3) for source in (as_uint8, as_float)]
    _assert_same_episodes(*episodes)


def _write_classes(root: pathlib.Path, wnids, per_class: int, seed: int) -> dict[str, list[pathlib.Path]]:
    """`<root>/<wnid>/*.png`: random 8x8 RGB images (PNG: lossless, already the loader's size)."""
    rng, files = np.random.default_rng(seed), {}
    for wnid in wnids:
        files[wnid] = []
        for i in range(per_class):
            path = root / wnid / f"{wnid}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
            files[wnid].append(path)
    return files


def test_streamed_episodes_equal_in_memory_episodes(tmp_path):
    published = mini_imagenet_classes()
    wanted = {"train": published["train"][:6], "val": published["val"][:1], "test": published["test"][:1]}
    files = {}
    for part in wanted:
        files.update(_write_classes(tmp_path / "mini" / part, wanted[part], per_class=5, seed=len(files)))
    streamed = load_mini_imagenet(tmp_path / "mini", image_size=(8, 8), cache_dir=tmp_path / "cache",
                                  classes=wanted, images_per_class=5).train
    assert streamed.is_memory_mapped and streamed.pixels.dtype == np.uint8
    in_memory = streamed.in_memory()
    assert not in_memory.is_memory_mapped and in_memory.pixels.dtype == np.uint8
    # The float32 path of the library, straight from the image files (no cache, no uint8 storage).
    paths = [path for wnid in wanted["train"] for path in files[wnid]]
    from_files = ClassDataset.from_arrays(read_image_files(paths, channels=3), np.repeat(np.arange(6), 5),
                                          list(wanted["train"]))
    for options in (dict(seed=1), dict(seed=2, start_step=7),
                    dict(seed=3, input_context=tf.distribute.InputContext(1, 0, 2)),
                    dict(seed=3, input_context=tf.distribute.InputContext(2, 1, 2))):
        episodes = [_take(episode_dataset(source, ways=5, shots=1, queries=3, meta_batch_size=4, **options), 3)
                    for source in (streamed, in_memory, from_files)]
        _assert_same_episodes(episodes[0], episodes[1])
        _assert_same_episodes(episodes[0], episodes[2])


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def test_streaming_reads_only_what_episodes_gather(tmp_path):
    # A 847 MB cache (a sparse file: nothing on disk): loaded whole, even once, it would show in the memory used.
    path = tmp_path / "pixels.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(40_000, 84, 84, 3)).flush()
    before = _rss_bytes()
    source = ClassDataset(np.load(path, mmap_mode="r"), np.arange(0, 40_001, 100), [f"c{i}" for i in range(400)])
    assert source.is_memory_mapped and source.select([f"c{i}" for i in range(10, 20)]).is_memory_mapped
    episodes = _take(episode_dataset(source, ways=5, shots=1, queries=5, meta_batch_size=2, seed=0), 2)
    assert episodes[0][0].shape == (2, 5, 84, 84, 3) and episodes[0][0].dtype == np.float32
    assert _rss_bytes() - before < 400 * 2**20  # the episodes read < 2 MB of pixels; the whole cache is 847 MB
