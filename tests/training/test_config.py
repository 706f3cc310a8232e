"""MetaTrainConfig: defaults, validation messages, JSON and presets."""

import dataclasses

import pytest

from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.presets import PRESETS, preset


def test_defaults_are_finn_sinusoid_maml():
    config = MetaTrainConfig()
    # K=5 support and K=5 query points: the reference code draws 2K points per task.
    assert (config.dataset, config.variant, config.shots, config.queries) == ("sinusoid", "maml", 5, 5)
    assert (config.meta_batch_size, config.inner_steps, config.inner_lr, config.meta_lr) == (25, 1, 0.01, 1e-3)
    assert config.first_order is False and config.resume is True
    assert config.resolved().workdir == "runs/maml_sinusoid"
    assert config.resolved().export_name == "maml_sinusoid"
    assert config.export_dir == "saved_models"


def test_default_export_names():
    omniglot = MetaTrainConfig(dataset="omniglot", data_dir="/d", ways=20, shots=1, variant="maml++")
    assert omniglot.resolved().export_name == "mamlpp_omniglot_20way_1shot"
    assert MetaTrainConfig(dataset="cifar100:3.0.2").resolved().export_name == "maml_cifar100_3.0.2_5way_5shot"
    assert MetaTrainConfig(export_name="mine").resolved().export_name == "mine"


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MetaTrainConfig().ways = 3


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(ways=1), ValueError, "ways must be >= 2. Received: ways=1"),
        (dict(export_name="a/b"), ValueError, "`export_name` must be a plain directory name (no '/'). "
                                              "Received: export_name='a/b'"),
        (dict(shots=0), ValueError, "`shots` must be >= 1. Received: shots=0"),
        (dict(queries=0), ValueError, "`queries` must be >= 1. Received: queries=0"),
        (dict(msl_anneal_steps=0), ValueError, "`msl_anneal_steps` must be >= 1. Received: msl_anneal_steps=0"),
        (dict(variant="reptile", multi_step_loss=True), ValueError,
         "`multi_step_loss` applies to the MAML family; Reptile has no meta-loss. "
         "Received: variant='reptile', multi_step_loss=True"),
        (dict(meta_batch_size=0), ValueError, "`meta_batch_size` must be >= 1. Received: meta_batch_size=0"),
        (dict(inner_steps=-1), ValueError, "`inner_steps` must be >= 0. Received: inner_steps=-1"),
        (dict(inner_lr=0.0), ValueError, "`inner_lr` must be a finite number > 0. Received: inner_lr=0.0"),
        (dict(meta_lr=float("nan")), ValueError, "`meta_lr` must be a finite number > 0. Received: meta_lr=nan"),
        (dict(variant="mmal"), ValueError, "Received: variant='mmal'"),
        (dict(strategy="horovod"), ValueError, "Received: strategy='horovod'"),
        (dict(devices="GPU:0"), ValueError,
         "`devices` applies to strategy='mirrored' only. Received: strategy='default'"),
        (dict(mixed_precision="float16"), ValueError, "Received: mixed_precision='float16'"),
        (dict(num_iterations=0), ValueError, "`num_iterations` must be >= 1. Received: num_iterations=0"),
        (dict(eval_episodes=0), ValueError, "`eval_episodes` must be >= 1. Received: eval_episodes=0"),
        (dict(ways=2.5), TypeError, "`ways` must be an integer. Received: ways=2.5"),
        (dict(seed=-1), ValueError, "`seed` must be >= 0. Received: seed=-1"),
        (dict(dataset="folder"), ValueError, "needs `data_dir`"),
        (dict(dataset=""), ValueError, "Received: dataset=''"),
    ],
)
def test_validation_messages(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        MetaTrainConfig(**kwargs)


def test_json_round_trip_and_unknown_fields():
    config = MetaTrainConfig(dataset="omniglot", data_dir="/d", ways=20, first_order=True)
    assert MetaTrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown MetaTrainConfig field.*wayz"):
        MetaTrainConfig.from_dict({"wayz": 5})


def test_differences_ignore_resumable_fields():
    a = MetaTrainConfig(num_iterations=10, workdir="x")
    b = MetaTrainConfig(num_iterations=20, workdir="y", inner_lr=0.5)
    assert a.differences(b) == {"inner_lr": (0.01, 0.5)}


def test_presets():
    assert {"sinusoid", "omniglot_5w1s", "maml_omniglot_20w1s", "protonet_omniglot_5w1s"} <= set(PRESETS)
    for name, published in PRESETS.items():  # every preset is a valid config of its trainer
        config = preset(name, data_dir="/data")
        assert config.preset == name and published.paper
        assert config.variant == published.config.get("variant", published.trainer)
    proto = preset("protonet_omniglot_5w1s")
    assert (proto.variant, proto.train_ways, proto.train_queries, proto.queries, proto.split) == (
        "protonet", 60, 5, 15, "vinyals")
    with pytest.raises(ValueError, match="Received: preset='nope'"):
        MetaTrainConfig(preset="nope")
    five = preset("omniglot_5w1s", data_dir="/data")
    assert (five.ways, five.shots, five.inner_lr, five.meta_batch_size) == (5, 1, 0.4, 32)
    twenty = preset("omniglot_20w1s", data_dir="/data")
    assert (twenty.ways, twenty.inner_steps, twenty.inner_lr, twenty.meta_batch_size) == (20, 5, 0.1, 16)
    assert preset("sinusoid").num_iterations == 70000
    with pytest.raises(ValueError, match="Received: name='imagenet'"):
        preset("imagenet")


def test_augmentation_defaults_to_the_data_sets_and_each_field_overrides_alone():
    from tfmeta.data import AUGMENTATIONS, Augmentation

    mini = MetaTrainConfig(dataset="mini_imagenet", data_dir="unused")
    # A config that ignored the data set (always off) or always applied one setting fails here.
    assert mini.augmentation == AUGMENTATIONS["mini_imagenet"] == Augmentation(8, True, 0.4)
    assert MetaTrainConfig(dataset="cifar_fs", data_dir="unused").augmentation == Augmentation(4, True, 0.4)
    assert MetaTrainConfig(dataset="omniglot", data_dir="unused").augmentation.is_identity
    assert MetaTrainConfig(dataset="folder", data_dir="unused").augmentation.is_identity  # no known default
    # A field given replaces the default of that field only: --crop_padding=0 keeps the flips and jitter.
    assert dataclasses.replace(mini, crop_padding=0).augmentation == Augmentation(0, True, 0.4)
    assert dataclasses.replace(mini, flip=False, color_jitter=0.0).augmentation == Augmentation(8, False, 0.0)
    assert MetaTrainConfig(dataset="omniglot", data_dir="unused", crop_padding=2).augmentation == Augmentation(2)
    # Papers that trained without augmentation turn the data set's default off; RFS keeps it.
    assert MetaTrainConfig(**PRESETS["maml_mini_imagenet_5w1s"].config, data_dir="unused").augmentation.is_identity
    proto = MetaTrainConfig(**PRESETS["protonet_mini_imagenet_5w5s"].config, data_dir="unused", variant="protonet")
    assert proto.augmentation.is_identity
    rfs = MetaTrainConfig(**PRESETS["rfs_mini_imagenet_5w1s"].config, data_dir="unused", variant="finetune")
    assert rfs.augmentation == Augmentation(8, True, 0.4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(crop_padding=-1), "crop_padding"), (dict(flip="yes"), "flip"), (dict(color_jitter=1.5), "color_jitter")])
def test_bad_augmentation_fields_name_what_was_received(kwargs, message):
    with pytest.raises(ValueError, match=rf"`{message}` must be None.*Received: {message}="):
        MetaTrainConfig(dataset="omniglot", data_dir="unused", **kwargs)
