"""The standard benchmarks (`tfmeta.data.standard`): shipped lists, loaders on generated
miniatures in each data set's published layout, errors, and the on-disk cache."""

import io
import itertools
import os
import pathlib
import pickle
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from tfmeta.data.splits import omniglot_characters
from tfmeta.data.standard import (
    build,
    cifar_fs_classes,
    cub_classes,
    fc100_classes,
    load_cifar_fs,
    load_cub,
    load_fc100,
    load_mini_imagenet,
    load_omniglot,
    load_standard_split,
    load_tiered_imagenet,
    mini_imagenet_classes,
    tiered_imagenet_classes,
)
from tfmeta.data.standard.cifar import cifar100_superclasses, fc100_superclasses
from tfmeta.data.standard.tiered_imagenet import tiered_imagenet_words

PARTS = ("train", "val", "test")


def _sizes(parts) -> tuple[int, ...]:
    return tuple(len(parts[p]) for p in PARTS)


def _assert_disjoint(parts) -> None:
    for a, b in itertools.combinations(PARTS, 2):
        assert not set(parts[a]) & set(parts[b]), (a, b)
    for p in PARTS:
        assert len(set(parts[p])) == len(parts[p]), p


def _color(k: int) -> tuple[int, int, int]:
    """A distinct RGB colour per image index `k` (< 144): channels 20 apart."""
    return 20 * (k % 12) + 10, 20 * (k // 12) + 10, 128


def _write_image(path: pathlib.Path, k: int, size=(10, 12), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), _color(k), np.uint8)).save(path, format=fmt, quality=95)


def _assert_colors(dataset, first_k: int) -> None:
    """Image i of `dataset` (in order) has colour `_color(first_k + i)` (JPEG: within 3)."""
    means = dataset.pixels.reshape(len(dataset.pixels), -1, 3).mean(axis=1)  # (n, 3)
    expected = np.array([_color(first_k + i) for i in range(len(means))])
    np.testing.assert_allclose(means, expected, atol=3)


def _subset(parts, n=2):
    return {p: tuple(parts[p][:n]) for p in PARTS}


# ------------------------------------------------------------------ shipped lists


def test_shipped_lists_have_the_published_sizes_and_are_disjoint():
    mini = mini_imagenet_classes()
    assert _sizes(mini) == (64, 16, 20)
    assert mini["train"][0] == "n01532829" and "n01930112" in mini["test"] and "n01855672" in mini["val"]
    tiered = tiered_imagenet_classes()
    assert _sizes(tiered) == (351, 97, 160)
    assert tuple(len({cat for _, cat in tiered[p]}) for p in PARTS) == (20, 6, 8)
    assert dict(tiered["train"])["n01530575"] == "n01524359"  # brambling: a passerine
    words = tiered_imagenet_words()
    assert words["n01524359"].startswith("passerine") and len(words) == 608 + 34
    assert set(words) >= {w for p in PARTS for w, _ in tiered[p]}
    cifar_fs = cifar_fs_classes()
    assert _sizes(cifar_fs) == (64, 16, 20)
    assert set(cifar_fs["test"]) >= {"baby", "bed", "bicycle", "worm"} and "otter" in cifar_fs["val"]
    fc100 = fc100_classes()
    assert _sizes(fc100) == (60, 20, 20)
    assert tuple(len(fc100_superclasses()[p]) for p in PARTS) == (12, 4, 4)
    assert set(fc100_superclasses()["test"]) == {"aquatic_mammals", "insects", "medium_mammals", "people"}
    superclass = cifar100_superclasses()
    assert len(superclass) == 100 and len(set(superclass.values())) == 20
    assert set(cifar_fs["train"] + cifar_fs["val"] + cifar_fs["test"]) == set(superclass)
    assert {superclass[c] for c in fc100["val"]} == set(fc100_superclasses()["val"])
    cub = cub_classes()
    assert _sizes(cub) == (100, 50, 50)
    every = sorted(cub["train"] + cub["val"] + cub["test"])
    assert [int(name[:3]) for name in every] == list(range(1, 201))
    # Chen et al.'s rule on the sorted class folders: even index train, 1 mod 4 val, 3 mod 4 test.
    assert list(cub["train"]) == every[0::2] and list(cub["val"]) == every[1::4] and list(cub["test"]) == every[3::4]
    assert cub["train"][0] == "001.Black_footed_Albatross" and cub["test"][0] == "004.Groove_billed_Ani"
    vinyals = omniglot_characters("vinyals")
    assert _sizes(vinyals) == (1028, 172, 423) and vinyals["test"][0] == "Gurmukhi/character42"
    lake = omniglot_characters("lake")
    assert _sizes(lake) == (883, 81, 659)
    assert tuple(len({c.split("/")[0] for c in lake[p]}) for p in PARTS) == (25, 5, 20)
    assert set(sum(vinyals.values(), ())) == set(sum(lake.values(), ()))  # the same 1,623 characters
    for parts in (mini, tiered, cifar_fs, fc100, cub, vinyals, lake):
        _assert_disjoint(parts)


# ------------------------------------------------------------------ miniImageNet


def _mini_csv_layout(root: pathlib.Path, wanted) -> None:
    """Ravi & Larochelle's layout: `images/` and one CSV per part; 3 JPEGs a class, plus a stray file."""
    k = 0
    for part in PARTS:
        rows = ["filename,label"]
        for wnid in wanted[part]:
            for i in range(3):
                name = f"{wnid}{i + 1:08d}.jpg"
                _write_image(root / "images" / name, k)
                rows.append(f"{name},{wnid}")
                k += 1
        (root / f"{part}.csv").write_text("\n".join(rows) + "\n")
    _write_image(root / "images" / "n0000000000000001.jpg", 143)  # in no CSV: never read


def _mini_folder_layout(root: pathlib.Path, wanted, flat: bool) -> None:
    k = 0
    for part in PARTS:
        for wnid in wanted[part]:
            for i in range(3):
                _write_image(root / ("" if flat else part) / wnid / f"{wnid}_{i}.JPEG", k, fmt="JPEG")
                k += 1


@pytest.mark.parametrize("layout", ["csv", "split_folders", "flat_folders"])
def test_mini_imagenet_reads_each_published_layout(tmp_path, layout):
    wanted = _subset(mini_imagenet_classes())
    data = tmp_path / "mini"
    if layout == "csv":
        _mini_csv_layout(data, wanted)
    else:
        _mini_folder_layout(data, wanted, flat=layout == "flat_folders")
    split = load_mini_imagenet(data, image_size=(8, 8), cache_dir=tmp_path / "cache", classes=wanted,
                               images_per_class=3)
    first = 0
    for part, dataset in zip(PARTS, split):
        assert dataset.class_names == list(wanted[part])
        assert dataset.pixels.shape == (6, 8, 8, 3) and dataset.pixels.dtype == np.uint8
        _assert_colors(dataset, first)  # each wnid holds its own files, in file-name order, resized
        first += 6
    assert split.train.preprocessing.to_dict() == {"image_size": [8, 8], "channels": 3, "invert": False,
                                                   "scale": "pixel / 255"}
    assert split.has_own_validation


def test_mini_imagenet_missing_and_partial_data_are_named(tmp_path):
    wanted = _subset(mini_imagenet_classes())
    data = tmp_path / "mini"
    _mini_csv_layout(data, wanted)
    images, received = re.escape(str(data / "images")), re.escape(str(data))
    with pytest.raises(FileNotFoundError, match=rf"miniImageNet: 62 of the 64 training classes are missing in {images}"
                                                rf".*: n01704323, .* and 57 more\. Received: data_dir={received}$"):
        load_mini_imagenet(data, cache_dir=tmp_path / "cache")  # the published 64 / 16 / 20
    with pytest.raises(ValueError, match=r"class n01532829 has 3 images, not 600 as in the published data set"):
        load_mini_imagenet(data, cache_dir=tmp_path / "cache", classes=wanted)
    wnid = wanted["val"][1]
    (data / "images" / f"{wnid}00000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of the 3 images of class {wnid} listed in the CSVs are missing "
                                                rf"in {images}: {wnid}00000002\.jpg"):
        load_mini_imagenet(data, cache_dir=tmp_path / "cache", classes=wanted, images_per_class=3)
    with pytest.raises(FileNotFoundError, match=r"miniImageNet: the data folder does not exist. Received: data_dir="):
        load_mini_imagenet(tmp_path / "nowhere")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-written


# ------------------------------------------------------------------ tieredImageNet


def _png_bytes(k: int) -> np.ndarray:
    """One 84x84 PNG as `cv2.imencode` returns it: a `(n, 1)` uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((84, 84, 3), _color(k), np.uint8)).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), np.uint8).reshape(-1, 1)


def _tiered_pickles(root: pathlib.Path, wanted, names: dict[str, str]) -> None:
    """The published pickles for `wanted` classes, 2 images each, class indices in reverse order."""
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for part in PARTS:
        classes = list(reversed(wanted[part]))  # the pickles' label order is not the list's
        images, labels = [], []
        for wnid in wanted[part]:
            for _ in range(2):
                images.append(_png_bytes(k))
                labels.append(classes.index(wnid))
                k += 1
        with open(root / f"{part}_images_png.pkl", "wb") as handle:
            pickle.dump(images, handle, protocol=2)
        with open(root / f"{part}_labels.pkl", "wb") as handle:
            pickle.dump({"label_specific": np.array(labels), "label_general": np.zeros(len(labels), int),
                         "label_specific_str": [names[w] for w in classes], "label_general_str": ["x"]},
                        handle, protocol=2)


@pytest.mark.parametrize("names_from", ["shipped_words", "synset_files"])
def test_tiered_imagenet_reads_the_published_pickles(tmp_path, names_from):
    table = tiered_imagenet_classes()
    wanted = {p: tuple(w for w, _ in table[p][:2]) for p in PARTS}
    data = tmp_path / "tiered"
    if names_from == "synset_files":  # ImageNet's own names: mapped to wnids by synsets.txt / class_names.txt
        names = {w: f"class {w[::-1]}" for p in PARTS for w in wanted[p]}
        data.mkdir()
        (data / "synsets.txt").write_text("\n".join(names) + "\n")
        (data / "class_names.txt").write_text("\n".join(names.values()) + "\n")
    else:
        names = tiered_imagenet_words()
    _tiered_pickles(data, wanted, names)
    split = load_tiered_imagenet(data, cache_dir=tmp_path / "cache", classes=wanted)
    first = 0
    for part, dataset in zip(PARTS, split):
        assert dataset.class_names == list(wanted[part])
        assert dataset.groups == [dict(table[part])[w] for w in wanted[part]]  # category wnids
        expected = np.stack([np.full((84, 84, 3), _color(first + i), np.uint8) for i in range(4)])
        np.testing.assert_array_equal(dataset.pixels, expected)  # PNG: exact
        first += 4


def test_tiered_imagenet_class_folders_and_missing_classes(tmp_path):
    table = tiered_imagenet_classes()
    wanted = {p: tuple(w for w, _ in table[p][:2]) for p in PARTS}
    data = tmp_path / "tiered"
    _mini_folder_layout(data, wanted, flat=False)
    split = load_tiered_imagenet(data, image_size=(8, 8), cache_dir=tmp_path / "cache", classes=wanted)
    assert split.test.class_names == list(wanted["test"]) and split.test.groups[0] == table["test"][0][1]
    _assert_colors(split.val, 6)
    with pytest.raises(FileNotFoundError, match=r"tieredImageNet: 349 of the 351 training classes are missing in "
                                                rf"{re.escape(str(data / 'train'))} and {re.escape(str(data))}: "):
        load_tiered_imagenet(data, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"unknown class wnids \(not among the 608 published\): n99999999"):
        load_tiered_imagenet(data, cache_dir=tmp_path / "cache", classes={**wanted, "val": ("n99999999",)})
    pickled = tmp_path / "pickled"
    _tiered_pickles(pickled, {**wanted, "test": wanted["test"][:1]}, tiered_imagenet_words())
    labels, wnid = re.escape(str(pickled / "test_labels.pkl")), wanted["test"][1]
    with pytest.raises(FileNotFoundError, match=rf"1 of the 2 test classes are missing in {labels}: {wnid}\."):
        load_tiered_imagenet(pickled, cache_dir=tmp_path / "cache", classes=wanted)


# ------------------------------------------------------------------ CIFAR-FS and FC100


def _cifar100(root: pathlib.Path, classes, archive: bool, wrong_superclass: str | None = None) -> None:
    """CIFAR-100's python archive holding 2 training and 1 test image of each of `classes`."""
    superclass = cifar100_superclasses()
    fine_names, coarse_names = sorted(superclass), sorted(set(superclass.values()))  # CIFAR-100's own order
    k, files = 0, {}
    for name, per_class in (("train", 2), ("test", 1)):
        data, fine, coarse = [], [], []
        for c in classes:
            for _ in range(per_class):
                image = np.full((32, 32, 3), _color(k), np.uint8)
                image[0, 0] = (k, 0, 0)
                data.append(image.transpose(2, 0, 1).reshape(-1))  # rows: R plane, G plane, B plane
                fine.append(fine_names.index(c))
                group = "people" if c == wrong_superclass else superclass[c]
                coarse.append(coarse_names.index(group))
                k += 1
        files[name] = {b"batch_label": b"x", b"fine_labels": fine, b"coarse_labels": coarse,
                       b"data": np.stack(data), b"filenames": [b"f"] * len(fine)}
    files["meta"] = {b"fine_label_names": [n.encode() for n in fine_names],
                     b"coarse_label_names": [n.encode() for n in coarse_names]}
    blobs = {name: pickle.dumps(value, protocol=2) for name, value in files.items()}
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"cifar-100-python/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        (root / "cifar-100-python").mkdir()
        for name, blob in blobs.items():
            (root / "cifar-100-python" / name).write_bytes(blob)


@pytest.mark.parametrize("archive", [True, False])
def test_cifar_fs_and_fc100_from_cifar100s_archive(tmp_path, archive):
    cifar_fs, fc100 = _subset(cifar_fs_classes()), _subset(fc100_classes())
    present = sorted({c for parts in (cifar_fs, fc100) for p in PARTS for c in parts[p]})
    data = tmp_path / "cifar"
    _cifar100(data, present, archive)
    for load, wanted in ((load_cifar_fs, cifar_fs), (load_fc100, fc100)):
        split = load(data, cache_dir=tmp_path / "cache", classes=wanted)
        for part, dataset in zip(PARTS, split):
            assert dataset.class_names == list(wanted[part])
            assert dataset.groups == [cifar100_superclasses()[c] for c in wanted[part]]
            assert dataset.image_shape == (32, 32, 3) and dataset.preprocessing.image_size == (32, 32)
            for c, name in enumerate(wanted[part]):
                i = present.index(name)  # the archive holds this class's images k = 2i, 2i+1 (train), 2n+i (test)
                ks = [2 * i, 2 * i + 1, 2 * len(present) + i]
                expected = np.stack([np.full((32, 32, 3), _color(k), np.uint8) for k in ks])
                expected[:, 0, 0] = [(k, 0, 0) for k in ks]
                np.testing.assert_array_equal(dataset.class_images(c), expected / np.float32(255))
    assert set(split.test.groups) <= set(fc100_superclasses()["test"])


def test_cifar_missing_classes_archive_and_wrong_superclass(tmp_path):
    wanted = _subset(cifar_fs_classes())
    data = tmp_path / "cifar"
    _cifar100(data, sorted({c for p in PARTS for c in wanted[p]}), archive=True, wrong_superclass=wanted["val"][0])
    archive = re.escape(str(data / "cifar-100-python.tar.gz"))
    with pytest.raises(FileNotFoundError, match=rf"CIFAR-FS: 62 of the 64 training classes are missing in {archive}"):
        load_cifar_fs(data, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=rf"class {wanted['val'][0]} belongs to superclass people, not "):
        load_cifar_fs(data, cache_dir=tmp_path / "cache", classes=wanted)
    with pytest.raises(FileNotFoundError, match=r"FC100: CIFAR-100's python archive was not found: looked for "):
        load_fc100(tmp_path, cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------ CUB-200-2011


def test_cub_reads_its_release_layout_and_names_missing_images(tmp_path):
    wanted = _subset(cub_classes())
    images = tmp_path / "CUB_200_2011" / "images"
    listed, k = [], 0
    for part in PARTS:
        for name in wanted[part]:
            for i in range(2):
                _write_image(images / name / f"{name[4:]}_{i}.jpg", k, size=(30, 20))  # any size: resized
                listed.append(f"{len(listed) + 1} {name}/{name[4:]}_{i}.jpg")
                k += 1
    (tmp_path / "CUB_200_2011" / "images.txt").write_text("\n".join(listed) + "\n")
    split = load_cub(tmp_path, image_size=(6, 6), cache_dir=tmp_path / "cache", classes=wanted)
    for part, dataset, first in zip(PARTS, split, (0, 4, 8)):
        assert dataset.class_names == list(wanted[part]) and dataset.image_shape == (6, 6, 3)
        _assert_colors(dataset, first)
    with pytest.raises(FileNotFoundError, match=rf"CUB-200-2011: 98 of the 100 training classes are missing in "
                                                rf"{re.escape(str(images))}: 005\.Crested_Auklet"):
        load_cub(tmp_path, cache_dir=tmp_path / "cache")
    corrupt = images / wanted["val"][0] / "truncated.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")
    with pytest.raises(ValueError, match=rf"Could not decode image file {re.escape(str(corrupt))}"):
        load_cub(tmp_path, image_size=(6, 6), cache_dir=tmp_path / "cache", classes=wanted)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the earlier cache only: nothing half-written
    corrupt.unlink()
    (images / wanted["test"][0] / f"{wanted['test'][0][4:]}_1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of the 2 images of class {wanted['test'][0]} listed in "
                                                rf".*images.txt are missing"):
        load_cub(tmp_path, cache_dir=tmp_path / "cache", classes=wanted)


# ------------------------------------------------------------------ Omniglot


@pytest.fixture(scope="module")
def omniglot_tree(tmp_path_factory) -> pathlib.Path:
    """Every one of the 1,623 characters as an unpacked `<alphabet>/<character>/*.png` tree, 2 tiny images each."""
    root = tmp_path_factory.mktemp("omniglot")
    for k, character in enumerate(sorted(sum(omniglot_characters("vinyals").values(), ()))):
        for i in range(2):
            path = root / character / f"{k:04d}_{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.full((4, 4), 255, np.uint8)
            pixels.flat[k % 16] = 0  # one stroke pixel, in a place depending on the character
            Image.fromarray(pixels).save(path)
    return root


def test_omniglot_vinyals_and_lake_splits(omniglot_tree, tmp_path):
    vinyals = load_omniglot(omniglot_tree, "vinyals", image_size=(4, 4), cache_dir=tmp_path)
    assert (vinyals.train.num_classes, vinyals.val.num_classes, vinyals.test.num_classes) == (4112, 688, 1692)
    assert vinyals.test.class_names[:2] == ["Gurmukhi/character42", "Gurmukhi/character43"]
    assert "Gurmukhi/character42@rot270" in vinyals.test.class_names  # rotations in every part, as published
    assert vinyals.train.preprocessing.to_dict()["invert"] and vinyals.train.image_shape == (4, 4, 1)
    c = vinyals.test.class_names.index("Gurmukhi/character42@rot90")
    np.testing.assert_array_equal(vinyals.test.class_images(c), np.rot90(vinyals.test.class_images(0), 1, axes=(1, 2)))
    lake = load_standard_split("omniglot", omniglot_tree, split="lake", image_size=(4, 4), cache_dir=tmp_path)
    assert (lake.train.num_classes, lake.val.num_classes, lake.test.num_classes) == (883 * 4, 81, 659)
    assert lake.val.alphabets == ["Alphabet_of_the_Magi", "Blackfoot_(Canadian_Aboriginal_Syllabics)",
                                  "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Ojibwe_(Canadian_Aboriginal_Syllabics)",
                                  "Tagalog"]
    assert len(lake.test.alphabets) == 20 and not set(lake.test.alphabets) & set(lake.train.alphabets)
    assert len(list(tmp_path.iterdir())) == 1  # one cache of every character serves every split


def test_omniglot_split_names_missing_characters(omniglot_tree, tmp_path):
    partial = tmp_path / "partial"
    for path in omniglot_tree.rglob("*.png"):
        if "Kannada" not in path.parts and not (path.parts[-2] == "character42" and "Gurmukhi" in path.parts):
            target = partial / path.relative_to(omniglot_tree)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    where = re.escape(str(partial))
    with pytest.raises(ValueError, match=rf"Omniglot 'vinyals' split: 42 of the 423 test characters are missing in "
                                         rf"{where}: Gurmukhi/character42, Kannada/character01, .* and 37 more "
                                         rf"\(whole alphabets absent: Kannada\)\. Received: data_dir={where}$"):
        load_omniglot(partial, "vinyals", image_size=(4, 4), cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------ the single entry point and the cache


def test_load_standard_split_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"`name` must be one of \('omniglot', 'mini_imagenet', .*Received: "
                                         r"name='imagenet'"):
        load_standard_split("imagenet", tmp_path)
    with pytest.raises(ValueError, match=r"mini_imagenet has the split\(s\) \('ravi',\). Received: split='vinyals'"):
        load_standard_split("mini_imagenet", tmp_path, split="vinyals")
    with pytest.raises(ValueError, match=r"miniImageNet: `image_size` must be \(height, width\). Received: "
                                         r"image_size=\(84,\)"):
        load_standard_split("mini_imagenet", tmp_path, image_size=(84,))


def test_cache_is_reused_then_rebuilt_when_a_source_file_changes(tmp_path, monkeypatch):
    wanted = _subset(mini_imagenet_classes(), 1)
    data, cache_dir = tmp_path / "mini", tmp_path / "cache"
    _mini_folder_layout(data, wanted, flat=False)

    def load(image_size=(8, 8)):
        return load_standard_split("mini_imagenet", data, image_size=image_size, cache_dir=cache_dir, classes=wanted,
                                   images_per_class=3)

    first = load()
    assert first.train.is_memory_mapped and len(list(cache_dir.iterdir())) == 1
    reads = []
    real_read = build.read_image_file
    monkeypatch.setattr(build, "read_image_file", lambda path: reads.append(path) or real_read(path))
    second = load()
    assert reads == []  # read from the cache, no image decoded
    np.testing.assert_array_equal(second.val.pixels, first.val.pixels)
    changed = data / "val" / wanted["val"][0] / f"{wanted['val'][0]}_1.JPEG"
    _write_image(changed, 100, fmt="JPEG")  # new content: the size and modification time change
    os.utime(changed, ns=(0, 10**18))
    third = load()
    assert len(reads) == 9  # every image decoded again
    np.testing.assert_allclose(third.val.pixels[1].reshape(-1, 3).mean(0), _color(100), atol=3)
    assert len(list(cache_dir.iterdir())) == 1  # the outdated cache is gone
    load(image_size=(6, 6))
    assert len(list(cache_dir.iterdir())) == 2  # another image size: another cache, both kept


def test_a_failed_build_leaves_no_cache_behind(tmp_path, monkeypatch):
    wanted = _subset(mini_imagenet_classes(), 1)
    data, cache_dir = tmp_path / "mini", tmp_path / "cache"
    _mini_folder_layout(data, wanted, flat=False)
    calls = []

    def failing_read(path):
        calls.append(path)
        if len(calls) > 4:
            raise OSError("disk gone")
        return np.zeros((8, 8, 3), np.uint8)

    monkeypatch.setattr(build, "read_image_file", failing_read)
    with pytest.raises(OSError, match="disk gone"):
        load_mini_imagenet(data, image_size=(8, 8), cache_dir=cache_dir, classes=wanted, images_per_class=3)
    assert list(cache_dir.iterdir()) == []  # no partial cache, no temporary folder
    monkeypatch.undo()
    split = load_mini_imagenet(data, image_size=(8, 8), cache_dir=cache_dir, classes=wanted, images_per_class=3)
    _assert_colors(split.test, 6)  # built afresh from the files
