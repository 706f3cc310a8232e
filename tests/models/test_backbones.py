"""`build_backbone`, and `conv4` with and without its head."""

import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.models import BACKBONES, BatchNorm, build_backbone, conv4


def _conv4_as_before(ways, input_shape, filters, seed):
    """Conv-4 written out layer by layer as `conv4` built it before `ways=None`
    existed: what every existing call must keep getting (with the moving
    statistics' momentum 0.9 since the metric family, which evaluates on them)."""
    init = lambda i: keras.initializers.GlorotUniform(seed=seed + i)
    layers = [keras.Input(input_shape)]
    for b in range(4):
        layers += [
            keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=init(b), name=f"conv{b}"),
            BatchNorm(momentum=0.9, name=f"bn{b}"),
            keras.layers.ReLU(name=f"relu{b}"),
            keras.layers.MaxPooling2D(2, name=f"pool{b}"),
        ]
    layers += [keras.layers.Flatten(name="flatten"), keras.layers.Dense(ways, kernel_initializer=init(4), name="logits")]
    return keras.Sequential(layers, name="conv4")


def _assert_same_model(model, expected, x):
    assert [layer.name for layer in model.layers] == [layer.name for layer in expected.layers]
    assert [type(layer) for layer in model.layers] == [type(layer) for layer in expected.layers]
    for a, b in zip(model.variables, expected.variables, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for training in (True, False):
        np.testing.assert_array_equal(model(x, training=training).numpy(), expected(x, training=training).numpy())


@pytest.mark.parametrize("args", [dict(ways=5), dict(ways=3, input_shape=(32, 32, 3), filters=8)])
def test_conv4_with_a_head_is_unchanged(args):
    ways, input_shape, filters = args["ways"], args.get("input_shape", (28, 28, 1)), args.get("filters", 64)
    x = tf.random.stateless_uniform([4, *input_shape], [1, 2])
    _assert_same_model(conv4(**args, seed=7), _conv4_as_before(ways, input_shape, filters, seed=7), x)


def test_conv4_without_a_head_is_the_same_network_up_to_flatten():
    x = tf.random.stateless_uniform([4, 28, 28, 1], [3, 4])
    full = conv4(5, seed=2)
    embedding = conv4(None, seed=2)
    assert [layer.name for layer in embedding.layers] == [layer.name for layer in full.layers[:-1]]
    for a, b in zip(embedding.variables, full.variables[:-2], strict=True):  # all but the Dense kernel and bias
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    features = keras.Model(full.inputs, full.get_layer("flatten").output)
    np.testing.assert_array_equal(embedding(x, training=True).numpy(), features(x, training=True).numpy())
    assert conv4(None, input_shape=(84, 84, 3)).output_shape == (None, 1600)  # 5 * 5 * 64, ProtoNet's embedding
    with pytest.raises(ValueError, match="ways=0"):
        conv4(0)
    with pytest.raises(ValueError, match="filters=0"):
        conv4(None, filters=0)


@pytest.mark.parametrize("name, width", [("conv4", 64), ("conv4_32", 32), ("resnet12", 640)])
def test_builtin_backbones(name, width):
    x = tf.zeros([2, 28, 28, 1])
    embedding = build_backbone(name, seed=0)
    assert embedding(x).shape == (2, width)  # 28x28 -> 1x1 after four poolings
    learner = build_backbone(name, ways=5, input_shape=(28, 28, 1), seed=0)
    assert learner(x).shape == (2, 5)
    assert [l.name for l in learner.layers[:-1]] == [l.name for l in embedding.layers]
    for a, b in zip(learner.variables[:-2], embedding.variables, strict=True):  # the seed reached the builder
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert learner.layers[-2].output.shape[-1] == width  # the width, not only the head size
    assert set(BACKBONES) == {"conv4", "conv4_32", "resnet12", "conv4_relation"}


def test_conv4_relation_backbone_outputs_feature_maps():
    """Sung et al. (2018): unpadded convolutions and pooling in blocks 1-2, padded ones without pooling in 3-4."""
    x = tf.zeros([2, 28, 28, 1])
    embedding = build_backbone("conv4_relation", seed=0)
    assert embedding(x).shape == (2, 5, 5, 64)  # 28 -> 26 -> 13 -> 11 -> 5 -> 5 -> 5
    convs = [l for l in embedding.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.padding for c in convs] == ["valid", "valid", "same", "same"]
    assert [l.name for l in embedding.layers if isinstance(l, keras.layers.MaxPooling2D)] == ["pool0", "pool1"]
    assert all(isinstance(embedding.get_layer(f"bn{b}"), BatchNorm) and embedding.get_layer(f"bn{b}").momentum == 0.9
               for b in range(4))
    learner = build_backbone("conv4_relation", ways=5, seed=0)
    assert learner(x).shape == (2, 5)
    for a, b in zip(learner.variables[:-2], embedding.variables, strict=True):  # the seed reached the builder
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_float64_backbone():
    model = build_backbone("conv4_32", ways=2, input_shape=(16, 16, 1), dtype="float64")
    assert {v.dtype for v in model.variables} == {"float64"}


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A user package `user_backbones` with good and bad factories."""
    (tmp_path / "user_backbones.py").write_text(
        textwrap.dedent(
            """
            import keras

            calls = []

            def build(ways=None, input_shape=(28, 28, 1), seed=None, dtype=None):
                calls.append(dict(ways=ways, input_shape=input_shape, seed=seed, dtype=dtype))
                inputs = keras.Input(input_shape, dtype=dtype)
                x = keras.layers.Flatten(dtype=dtype)(inputs)
                units = 7 if ways is None else ways
                init = keras.initializers.GlorotUniform(seed=seed)
                return keras.Model(inputs, keras.layers.Dense(units, kernel_initializer=init, dtype=dtype)(x))

            class Builders:
                build = staticmethod(build)

            def not_a_model(**kwargs):
                return {"layers": 4}

            class Unbuilt(keras.Model):
                def call(self, x):
                    return x

            def unbuilt(**kwargs):
                return Unbuilt()

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield __import__("user_backbones")
    sys.modules.pop("user_backbones", None)


def test_dotted_path_factory_gets_the_arguments(factories):
    model = build_backbone("user_backbones:build", ways=4, input_shape=(6, 6, 2), seed=3, dtype="float64")
    assert factories.calls == [dict(ways=4, input_shape=(6, 6, 2), seed=3, dtype="float64")]
    assert model.output_shape == (None, 4) and model.variables[0].dtype == "float64"
    nested = build_backbone("user_backbones:Builders.build")
    assert nested.output_shape == (None, 7)


@pytest.mark.parametrize(
    "name, error, match",
    [
        ("resnet18", ValueError, r"'conv4', 'conv4_32', 'resnet12'.*Received: backbone='resnet18'"),
        ("user_backbones:", ValueError, r"Received: backbone='user_backbones:'"),
        ("a:b:c", ValueError, r"Received: backbone='a:b:c'"),
        (None, ValueError, r"Received: backbone=None"),
        ("no_such_module_xyz:build", ValueError, r"Cannot import module 'no_such_module_xyz'.*backbone="),
        ("user_backbones:missing", ValueError, r"no attribute 'missing'.*Received: backbone='user_backbones:missing'"),
        ("user_backbones:NOT_CALLABLE", TypeError, r"not callable: it is a int"),
        ("user_backbones:not_a_model", TypeError, r"'user_backbones:not_a_model' must return a built keras.Model; "
                                                  r"it returned dict \{'layers': 4\}"),
        ("user_backbones:unbuilt", TypeError, r"returned an unbuilt keras.Model"),
    ],
)
def test_bad_backbones_are_named(factories, name, error, match):
    with pytest.raises(error, match=match):
        build_backbone(name)
