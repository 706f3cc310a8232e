"""ResNet-12 (MetaOptNet / RFS) and DropBlock: shapes, wiring against a hand-written
forward pass, parameter count, second-order meta-gradients, dropout determinism."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners import MAML
from tfmeta.testing import finite_difference_error
from tfmeta.models import BatchNorm, DropBlock, batch_norm_layers, resnet12

TINY = (4, 8, 8, 8)  # channels of the small networks the tests build


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3), (84, 84, 3)])
@pytest.mark.parametrize("ways", [None, 5])
def test_output_shapes(input_shape, ways):
    model = resnet12(ways, input_shape=input_shape, channels=TINY, seed=0)
    outputs = model(tf.random.uniform([2, *input_shape]), training=True)
    assert outputs.shape == (2, 8 if ways is None else ways)
    assert model.output_shape == (None, 8 if ways is None else ways)
    assert (model.layers[-1].name == "logits") == (ways is not None)


def test_layers_are_flat_and_use_tfmeta_batchnorm():
    model = resnet12(5, input_shape=(32, 32, 3), channels=TINY, seed=0)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # one functional graph
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 16 and not any(c.use_bias for c in convs)  # 3 + 1 shortcut per block
    assert sorted(c.kernel_size for c in convs) == [(1, 1)] * 4 + [(3, 3)] * 12
    norms = batch_norm_layers(model)
    assert len(norms) == 16 and all(type(n) is BatchNorm for n in norms)
    assert {(n.momentum, n.epsilon) for n in norms} == {(0.9, 1e-5)}  # PyTorch's defaults
    leaky = [layer for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)]
    assert len(leaky) == 12 and {layer.negative_slope for layer in leaky} == {0.1}


def _reference_forward(model, x):
    """ResNet-12 written out from the papers' description, on `model`'s weights
    (training-mode BatchNorm: batch statistics)."""
    weights = {layer.name: layer.get_weights() for layer in model.layers}

    def bn(name, t):
        gamma, beta = weights[name][:2]
        mean, var = tf.reduce_mean(t, [0, 1, 2]), tf.math.reduce_variance(t, [0, 1, 2])
        return (t - mean) / tf.sqrt(var + 1e-5) * gamma + beta

    conv = lambda name, t: tf.nn.conv2d(t, weights[name][0], 1, "SAME")
    slope = float(np.float32(0.1))  # TensorFlow's LeakyRelu op holds its slope as a 32-bit float
    leaky = lambda t: tf.where(t > 0, t, slope * t)
    for b in range(4):
        y = leaky(bn(f"block{b}_bn0", conv(f"block{b}_conv0", x)))
        y = leaky(bn(f"block{b}_bn1", conv(f"block{b}_conv1", y)))
        y = bn(f"block{b}_bn2", conv(f"block{b}_conv2", y))  # no activation before the add
        shortcut = bn(f"block{b}_shortcut_bn", conv(f"block{b}_shortcut_conv", x))
        x = tf.nn.max_pool2d(leaky(y + shortcut), 2, 2, "VALID")
    features = tf.reduce_mean(x, [1, 2])
    kernel, bias = weights["logits"]
    return features @ kernel + bias


def test_forward_matches_the_papers_block():
    model = resnet12(3, input_shape=(20, 20, 2), channels=TINY, dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    for norm in batch_norm_layers(model):  # non-trivial scale and offset
        norm.gamma.assign(rng.uniform(0.5, 1.5, norm.gamma.shape))
        norm.beta.assign(rng.normal(0.0, 0.5, norm.beta.shape))
    x = tf.constant(rng.uniform(size=(6, 20, 20, 2)))
    np.testing.assert_allclose(model(x, training=True).numpy(), _reference_forward(model, x).numpy(), rtol=1e-9)


def test_parameter_count_of_the_standard_network():
    """12,424,320 trainable parameters for 64-160-320-640 on RGB, the ~12.4M reported for
    ResNet-12 in the few-shot literature: per block with c_in -> c channels,
    9*c_in*c + 2 * 9*c*c (3x3 convs, no bias) + c_in*c (1x1 shortcut) + 4 * 2c (BatchNorm
    scale and offset); the same layers as MetaOptNet's/RFS's PyTorch module."""
    model = resnet12(input_shape=(84, 84, 3))
    expected, c_in = 0, 3
    for c in (64, 160, 320, 640):
        expected += 9 * c_in * c + 2 * 9 * c * c + c_in * c + 4 * 2 * c
        c_in = c
    count = lambda variables: sum(int(np.prod(v.shape)) for v in variables)
    assert expected == 12_424_320 and round(expected / 1e6, 1) == 12.4
    assert count(model.trainable_variables) == expected
    assert count(model.non_trainable_variables) == 4 * 2 * (64 + 160 + 320 + 640)  # moving mean, variance
    assert model(tf.zeros([1, 84, 84, 3])).shape == (1, 640)


def test_initialisation_is_he_normal_fan_out_and_seeded():
    a = resnet12(5, input_shape=(32, 32, 3), channels=(16, 16, 32, 32), seed=3)
    b = resnet12(5, input_shape=(32, 32, 3), channels=(16, 16, 32, 32), seed=3, drop_rate=0.1)
    for x, y in zip(a.trainable_variables, b.trainable_variables):  # dropout layers do not shift the seeds
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    kernel = a.get_layer("block3_conv1").kernel.numpy()  # (3, 3, 32, 32): fan_out = 9 * 32
    assert np.std(kernel) == pytest.approx(np.sqrt(2.0 / (9 * 32)), rel=0.1)
    other = resnet12(5, input_shape=(32, 32, 3), channels=(16, 16, 32, 32), seed=4)
    assert not np.array_equal(kernel, other.get_layer("block3_conv1").kernel.numpy())


def test_second_order_meta_gradient_matches_finite_differences():
    """Second-order MAML through `stateless_call` on a tiny float64 ResNet-12 (4-8-8-8,
    16x16). One inner step already differentiates every layer twice (a Hessian-vector
    product through the whole network); more steps test the algorithm, which
    tests/learners/gradient does on Conv-4 (two steps here cost 5x more time).

    Step h = 1e-8, not the 1e-6 of the Conv-4 checks: the meta-loss jumps wherever a
    support-set pre-activation changes sign (the LeakyReLU slope in the inner gradient
    goes from 0.1 to 1), and with ~30,000 LeakyReLU inputs a 1e-6 step crosses such a
    point in most directions (relative error ~1: the difference quotient sees a jump).
    At 1e-8 none is crossed and float64 rounding stays ~1e-8."""
    model = resnet12(3, input_shape=(16, 16, 1), channels=TINY, dtype="float64", seed=0)
    algo = MAML(model, inner_steps=1, inner_lr=0.3)
    rng = np.random.default_rng(5)
    images = lambda n: tf.constant(rng.uniform(size=(n, 16, 16, 1)), tf.float64)
    labels = tf.constant(np.repeat(np.arange(3), 2).astype(np.int32))
    episode = Episode(images(6), labels, images(6), labels)
    assert finite_difference_error(algo, episode, directions=2, h=1e-8) < 1e-6


def test_stateless_call_with_dropblock_is_seeded_and_carries_the_seed_state():
    model = resnet12(5, input_shape=(32, 32, 3), channels=TINY, drop_rate=0.2, dropblock_size=2, seed=0)
    x = tf.random.stateless_uniform([4, 32, 32, 3], [0, 1])
    trainable = [v.value for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]
    seeds = [i for i, v in enumerate(model.non_trainable_variables) if not v.dtype.startswith("float")]
    assert len(seeds) == 4  # two Dropout and two DropBlock seed generators
    first, new_state = model.stateless_call(trainable, state, x, training=True)
    again, _ = model.stateless_call(trainable, state, x, training=True)
    np.testing.assert_array_equal(first.numpy(), again.numpy())  # same state in, same masks
    assert all(not np.array_equal(state[i].numpy(), new_state[i].numpy()) for i in seeds)
    second, _ = model.stateless_call(trainable, new_state, x, training=True)
    assert not np.allclose(first.numpy(), second.numpy())  # the carried state draws new masks
    without = resnet12(5, input_shape=(32, 32, 3), channels=TINY, seed=0)
    inference = lambda m: m(x, training=False).numpy()
    np.testing.assert_allclose(inference(model), inference(without), rtol=1e-6)  # identity at inference


def test_dropblock_drops_whole_blocks_and_rescales():
    layer = DropBlock(rate=0.2, block_size=3, seed=0)
    x = tf.ones([4, 12, 12, 8])
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    y = layer(x, training=True).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], y.size / kept.sum())  # rescaled by size / kept
    dropped = 1.0 - kept.mean()
    assert 0.12 < dropped < 0.25, dropped  # expected 0.18 here: blocks overlap, border positions fewer
    # Dropped positions are exactly the union of fully dropped 3x3 windows inside the map.
    dropped = tf.constant(~kept, tf.float32)
    full = -tf.nn.max_pool2d(-dropped, 3, 1, "VALID")  # (4, 10, 10, 8): window entirely dropped
    union = tf.nn.max_pool2d(tf.pad(full, [[0, 0], [2, 2], [2, 2], [0, 0]]), 3, 1, "VALID")  # (4, 12, 12, 8)
    np.testing.assert_array_equal(union.numpy() > 0, ~kept)
    assert not np.array_equal(y, layer(x, training=True).numpy())  # the seed generator advances
    np.testing.assert_array_equal(y, DropBlock(rate=0.2, block_size=3, seed=0)(x, training=True).numpy())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ways=0), "ways=0"),
        (dict(channels=(64, 160, 320)), r"channels=\(64, 160, 320\)"),
        (dict(input_shape=(8, 8, 3)), r"input_shape=\(8, 8, 3\)"),
        (dict(drop_rate=1.0), "drop_rate=1.0"),
        (dict(dropblock_size=0), "dropblock_size=0"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet12(**kwargs)
    with pytest.raises(ValueError, match="block_size=0"):
        DropBlock(0.1, 0)
