"""Class splits: no test class is ever a training class."""

import numpy as np
import pytest

from tfmeta.data.sources import ClassDataset, Preprocessing
from tfmeta.data.splits import load_class_split, omniglot_sample_split


def test_class_split_tfds_classes_for_testing_are_never_trained_on():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=300):
        cifar = load_class_split("cifar100", ways=5, seed=3)
        omniglot = load_class_split("omniglot", ways=5)  # no data_dir: TFDS
    # cifar100's test split holds the training classes: the train split's classes are split instead.
    assert not set(cifar.train.class_names) & set(cifar.test.class_names)
    total = cifar.train.num_classes + cifar.test.num_classes
    assert cifar.test.num_classes == max(5, total // 5) and cifar.train.image_shape == (32, 32, 3)
    assert cifar.train.preprocessing == Preprocessing((32, 32), 3, False)
    # TFDS omniglot: train (background) split with rotations, test (evaluation) split as is, 28x28x1.
    assert omniglot.train.image_shape == omniglot.test.image_shape == (28, 28, 1)
    assert any(name.endswith("@rot90") for name in omniglot.train.class_names)
    assert not any("@rot" in name for name in omniglot.test.class_names)


def test_class_split_refuse_too_few_classes_to_split(tmp_path):
    from PIL import Image

    for k in range(7):
        (tmp_path / f"c{k}").mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"c{k}" / "0.png")
    with pytest.raises(ValueError, match=r"at least 10 classes .* Received: 7 classes"):
        load_class_split("folder", str(tmp_path), ways=5)


@pytest.mark.data
def test_omniglot_split_of_the_sample(omniglot_data_dir):
    split = omniglot_sample_split(ClassDataset.from_omniglot(omniglot_data_dir))
    train, val, test = split
    assert set(test.alphabets) == {"Sanskrit", "Tagalog"} and test.num_classes == 59
    assert val.alphabets == ["Early_Aramaic"] and val.num_classes == 22 and split.has_own_validation
    assert train.num_classes == 4 * 161 and not {"Sanskrit", "Tagalog", "Early_Aramaic"} & set(train.alphabets)
    characters = {name.split("@")[0] for name in train.class_names}
    assert len(characters) == 161 and not characters & (set(test.class_names) | set(val.class_names))
    # The preprocessing travels with the classes through every transform.
    assert train.preprocessing == test.preprocessing == Preprocessing((28, 28), 1, True)
    assert Preprocessing.from_dict(train.preprocessing.to_dict()) == train.preprocessing
