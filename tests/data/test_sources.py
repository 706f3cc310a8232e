"""Tests for `tfmeta.data.sources.ClassDataset`: Omniglot, folders, TFDS, arrays, transforms."""

import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tfmeta.data.sources import ClassDataset, read_image_files

TRAIN_ALPHABETS = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin", "Japanese_(katakana)"]
TEST_ALPHABETS = ["Sanskrit", "Tagalog"]


def write_png(path: pathlib.Path, value: int, size=(8, 8)) -> None:
    """Writes a greyscale PNG filled with `value`, with one pixel of 255 - value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size, value, np.uint8)
    pixels[0, 0] = 255 - value
    Image.fromarray(pixels).save(path)


def make_folder(root: pathlib.Path, classes: dict[str, int]) -> pathlib.Path:
    """Creates `root/<class>/<i>.png` with `classes[class]` images each; value = 10 * i."""
    for name, count in classes.items():
        for i in range(count):
            write_png(root / name / f"{i}.png", 10 * i)
    return root


# ------------------------------------------------------------------ real Omniglot


@pytest.mark.data
def test_omniglot_is_deduplicated_to_242_characters_of_8_alphabets(omniglot):
    assert omniglot.num_classes == 242
    assert omniglot.alphabets == sorted(TRAIN_ALPHABETS + TEST_ALPHABETS)
    assert len(omniglot.images) == 4840
    assert all(omniglot.num_images(c) == 20 for c in range(242))
    assert omniglot.class_names[0] == "Balinese/character01"
    assert omniglot.groups[0] == "Balinese"
    assert len(set(omniglot.class_names)) == 242


@pytest.mark.data
def test_omniglot_images_are_28x28_inverted_in_unit_range(omniglot):
    images = omniglot.images
    assert omniglot.image_shape == (28, 28, 1)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.mean() < 0.2  # background is 0 after inversion
    assert images.max(axis=(1, 2, 3)).min() > 0.5  # every image has strokes (thin ones blur at 28x28)
    assert np.mean(images < 0.05) > 0.6  # most pixels are background


@pytest.mark.data
def test_omniglot_zip_matches_unpacked_folder(omniglot, omniglot_data_dir, tmp_path):
    with zipfile.ZipFile(omniglot_data_dir / "images_background_small1.zip") as archive:
        members = [m for m in archive.namelist() if "/Latin/character0" in m and m.endswith(".png")]
        archive.extractall(tmp_path / "unpacked", members)
    unpacked = ClassDataset.from_omniglot(tmp_path / "unpacked")
    assert unpacked.class_names == [f"Latin/character0{i}" for i in range(1, 10)]
    latin1 = omniglot.class_names.index("Latin/character01")
    np.testing.assert_array_equal(unpacked.class_images(0), omniglot.class_images(latin1))
    full_size = ClassDataset.from_omniglot(tmp_path / "unpacked", image_size=None)
    assert full_size.image_shape == (105, 105, 1)
    assert set(np.unique(full_size.images)) == {0.0, 1.0}  # 1-bit PNGs: strokes exactly 1
    assert 0.0 < full_size.images.mean() < 0.2  # strokes are the minority after inversion


@pytest.mark.data
def test_split_by_alphabet_gives_183_and_59_disjoint_characters(omniglot):
    train, test = omniglot.split_by_alphabet(TRAIN_ALPHABETS, TEST_ALPHABETS)
    assert (train.num_classes, test.num_classes) == (183, 59)
    assert not set(train.class_names) & set(test.class_names)
    assert set(train.alphabets) == set(TRAIN_ALPHABETS) and set(test.alphabets) == set(TEST_ALPHABETS)
    c = test.class_names.index("Tagalog/character05")
    np.testing.assert_array_equal(test.class_images(c), omniglot.class_images(omniglot.class_names.index("Tagalog/character05")))


@pytest.mark.data
def test_rotations_add_rotated_classes(omniglot):
    (train,) = omniglot.split_by_alphabet(TRAIN_ALPHABETS)
    rotated = train.with_rotations((90, 180, 270))
    assert rotated.num_classes == 4 * 183
    name = train.class_names[7]
    for angle in (90, 180, 270):
        r = rotated.class_names.index(f"{name}@rot{angle}")
        np.testing.assert_array_equal(rotated.class_images(r), np.rot90(train.class_images(7), angle // 90, axes=(1, 2)))
        assert rotated.groups[r] == train.groups[7]
    np.testing.assert_array_equal(rotated.class_images(7), train.class_images(7))


# ------------------------------------------------------------------ folders, arrays, TFDS


def test_from_folder_flat_and_nested(tmp_path):
    flat = ClassDataset.from_folder(make_folder(tmp_path / "flat", {"b": 3, "a": 2}))
    assert flat.class_names == ["a", "b"] and flat.groups == ["", ""]
    assert [flat.num_images(0), flat.num_images(1)] == [2, 3]
    assert flat.image_shape == (8, 8, 1)
    np.testing.assert_allclose(flat.class_images(1)[2, 1, 1, 0], 20 / 255)
    nested = ClassDataset.from_folder(make_folder(tmp_path / "nested", {"x/c1": 2, "x/c2": 2, "y/c1": 2}), invert=True)
    assert nested.class_names == ["x/c1", "x/c2", "y/c1"] and nested.alphabets == ["x", "y"]
    np.testing.assert_allclose(nested.class_images(0)[1, 1, 1, 0], 1 - 10 / 255, rtol=1e-6)
    assert nested.preprocessing.invert and not flat.preprocessing.invert
    assert nested.select(["x/c2"]).preprocessing == nested.preprocessing  # kept by transforms


def test_from_folder_resizes_and_converts_channels(tmp_path):
    root = make_folder(tmp_path, {"a": 2, "b": 2})
    write_png(root / "b" / "big.png", 200, size=(16, 12))
    dataset = ClassDataset.from_folder(root, image_size=(4, 4), channels=3)
    assert dataset.images.shape == (5, 4, 4, 3)
    assert dataset.images.min() >= 0.0 and dataset.images.max() <= 1.0
    np.testing.assert_allclose(dataset.images[..., 0], dataset.images[..., 2])  # grey -> RGB
    assert dataset.preprocessing.to_dict() == {"image_size": [4, 4], "channels": 3, "invert": False,
                                               "scale": "pixel / 255"}


def test_from_arrays_groups_by_label():
    images = np.arange(6 * 2 * 2, dtype=np.uint8).reshape(6, 2, 2)
    dataset = ClassDataset.from_arrays(images, [2, 0, 2, 1, 0, 2], class_names=["zero", "one", "two"])
    assert dataset.class_names == ["zero", "one", "two"]
    assert [dataset.num_images(c) for c in range(3)] == [2, 1, 3]
    np.testing.assert_allclose(dataset.class_images(2)[:, 0, 0, 0], np.array([0, 8, 20]) / 255)


def test_from_tfds_mock_omniglot_and_cifar100():
    with tfds.testing.mock_data(num_examples=24):
        omni = ClassDataset.from_tfds("omniglot", "train", image_size=(28, 28), invert=True, channels=1, group_key="alphabet")
        cifar = ClassDataset.from_tfds("cifar100", "train")
    assert omni.image_shape == (28, 28, 1) and len(omni.images) == 24
    assert sum(omni.num_images(c) for c in range(omni.num_classes)) == 24
    assert omni.images.min() >= 0.0 and omni.images.max() <= 1.0
    assert all(g != "" for g in omni.groups)
    assert cifar.image_shape == (32, 32, 3) and len(cifar.images) == 24


def test_select_and_random_split():
    dataset = ClassDataset.from_arrays(np.zeros((20, 2, 2), np.uint8), np.repeat(np.arange(10), 2))
    assert dataset.select(["3", "1"]).class_names == ["1", "3"]
    assert dataset.select(lambda name: int(name) > 7).class_names == ["8", "9"]
    a, b = dataset.random_split([6, 4], seed=3)
    assert (a.num_classes, b.num_classes) == (6, 4)
    assert sorted(a.class_names + b.class_names) == sorted(dataset.class_names)
    again, _ = dataset.random_split([6, 4], seed=3)
    other, _ = dataset.random_split([6, 4], seed=4)
    assert again.class_names == a.class_names and other.class_names != a.class_names


# ------------------------------------------------------------------ bad inputs


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: .*nowhere"):
        ClassDataset.from_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="Omniglot data not found: .*nowhere"):
        ClassDataset.from_omniglot(tmp_path / "nowhere")


def test_empty_class_folder(tmp_path):
    root = make_folder(tmp_path, {"a": 2})
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="Class folder .*empty holds no image files"):
        ClassDataset.from_folder(root)


def test_no_class_folders(tmp_path):
    write_png(tmp_path / "loose.png", 0)
    with pytest.raises(ValueError, match="No class folders with images found in"):
        ClassDataset.from_folder(tmp_path)
    with pytest.raises(ValueError, match="No Omniglot images found"):
        ClassDataset.from_omniglot(tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    root = make_folder(tmp_path, {"a": 2})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"Could not decode image file .*a/broken\.png"):
        ClassDataset.from_folder(root)


def test_mixed_sizes_without_image_size(tmp_path):
    root = make_folder(tmp_path, {"a": 1})
    write_png(root / "a" / "z.png", 0, size=(5, 5))
    with pytest.raises(ValueError, match=r"different shapes.*\(8, 8, 1\).*z\.png is \(5, 5, 1\)"):
        ClassDataset.from_folder(root)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(channels=2), "channels=2"), (dict(image_size=(28,)), r"image_size=\(28,\)")],
)
def test_bad_folder_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassDataset.from_folder(make_folder(tmp_path, {"a": 1}), **kwargs)


def test_bad_transform_arguments():
    dataset = ClassDataset.from_arrays(np.zeros((4, 2, 3), np.uint8), [0, 0, 1, 1], groups={0: "A", 1: "B"})
    with pytest.raises(ValueError, match=r"Unknown alphabet\(s\) \['Klingon'\]; known: \['A', 'B'\]"):
        dataset.split_by_alphabet(["A"], ["Klingon"])
    with pytest.raises(ValueError, match=r"\['A'\] appear in more than one split"):
        dataset.split_by_alphabet(["A"], ["A", "B"])
    with pytest.raises(ValueError, match=r"Unknown class names: \['7'\]"):
        dataset.select(["0", "7"])
    with pytest.raises(ValueError, match=r"sizes=\[2, 1\]"):
        dataset.random_split([2, 1])
    with pytest.raises(ValueError, match=r"angles=\(45,\)"):
        dataset.with_rotations((45,))
    with pytest.raises(ValueError, match=r"square images. Received: image_shape=\(2, 3, 1\)"):
        dataset.with_rotations()
    with pytest.raises(ValueError, match="Float images must be in"):
        ClassDataset.from_arrays(np.full((2, 2, 2), 3.0), [0, 1])


def test_read_image_files(tmp_path):
    root = make_folder(tmp_path, {"a": 2})
    images = read_image_files([root / "a" / "1.png", root / "a" / "0.png"], image_size=(4, 4), invert=True)
    assert images.shape == (2, 4, 4, 1) and images.dtype == np.float32
    assert abs(images[0].mean() - (1 - 10 / 255)) < 0.05 and images[1].mean() > 0.9
    with pytest.raises(ValueError, match=r"Received: paths=\[\]"):
        read_image_files([])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image_files([root / "a" / "missing.png"])


def test_from_tfds_of_a_real_builder_offline_names_the_data_set(tmp_path, monkeypatch):
    """The TFDS download path of a real builder (`omniglot`), driven up to the network, with the network
    made unavailable: a download error naming the data set, never an ImportError (tfds.testing.mock_data
    skips this path)."""
    import socket
    import time

    def offline(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the HTTP client's retry back-off (minutes)
    with pytest.raises(ConnectionError, match=r"could not download or prepare the data set 'omniglot' into .*"
                                              r"network disabled by the test.*Received: name='omniglot'"):
        ClassDataset.from_tfds("omniglot", "train", data_dir=str(tmp_path))
