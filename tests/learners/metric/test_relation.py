"""Relation Networks: class maps as sums of shots, a hand-set relation module, the MSE loss, both networks'
BatchNorm state, the paper's module sizes, export for any N."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.export import export_few_shot_classifier, read_model_card
from tfmeta.learners import RelationNetwork
from tfmeta.learners.metric import relation_module
from tfmeta.models import conv4_relation


def _identity_embedding(dim=2):
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(dim, use_bias=False)])
    model.layers[-1].kernel.assign(np.eye(dim, dtype=np.float32))
    return model


def _hand_set_relation():
    """score(c, q) = sigmoid(c_x + 0.5 c_y - q_x - 1) on the pair [c, q] (class first)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.layers[-1].kernel.assign(np.array([[1.0], [0.5], [-1.0], [0.0]], np.float32))
    model.layers[-1].bias.assign(np.array([-1.0], np.float32))
    return model


SUPPORT_X = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]], np.float32)  # class 0: two shots
SUPPORT_Y = np.array([0, 0, 1], np.int32)
QUERY_X = np.array([[1.0, 1.0], [2.0, 0.0]], np.float32)


def _sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def test_class_maps_are_sums_of_shots_and_scores_come_from_the_relation_module():
    relation = RelationNetwork(_identity_embedding(), relation=_hand_set_relation())
    class_maps = relation.adapt(SUPPORT_X, SUPPORT_Y)
    np.testing.assert_allclose(class_maps.numpy(), [[4.0, 0.0], [0.0, 2.0]])  # (1,0) + (3,0); (0,2)
    scores = relation.predict(class_maps, QUERY_X).numpy()
    # query (1,1): c0 4 + 0 - 1 - 1 = 2, c1 0 + 1 - 1 - 1 = -1; query (2,0): c0 1, c1 -2.
    np.testing.assert_allclose(scores, _sigmoid([[2.0, -1.0], [1.0, -2.0]]), rtol=1e-6)
    mean = RelationNetwork(_identity_embedding(), relation=_hand_set_relation(), shot_pooling="mean")
    np.testing.assert_allclose(mean.adapt(SUPPORT_X, SUPPORT_Y).numpy(), [[2.0, 0.0], [0.0, 2.0]])


def test_the_loss_is_the_mse_of_the_scores_to_one_hot_targets():
    relation = RelationNetwork(_identity_embedding(), relation=_hand_set_relation())
    result = relation.task_loss(Episode(SUPPORT_X, SUPPORT_Y, QUERY_X, np.array([0, 1], np.int32)))
    scores = _sigmoid([[2.0, -1.0], [1.0, -2.0]])
    expected = np.mean((scores - np.eye(2)) ** 2)  # over 2 queries x 2 classes
    np.testing.assert_allclose(float(result.loss), expected, rtol=1e-6)
    assert float(result.metrics["accuracy"]) == 0.5  # both queries score class 0 highest
    assert result.state == []  # neither network has state


def test_feature_maps_summed_over_unequal_shots():
    identity = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Identity()])
    relation = RelationNetwork(identity, filters=4)
    maps = np.arange(5 * 4, dtype=np.float32).reshape(5, 2, 2, 1)
    labels = np.array([1, 0, 1, 1, 2], np.int32)  # 1, 3 and 1 shots
    np.testing.assert_allclose(relation.adapt(maps, labels).numpy(),
                               [maps[1], maps[0] + maps[2] + maps[3], maps[4]])
    assert relation.predict(relation.adapt(maps, labels), maps[:3]).shape == (3, 3)
    np.testing.assert_allclose(relation.embed(maps).numpy(), maps.reshape(5, 4))  # flattened maps


def test_task_loss_returns_both_networks_batchnorm_state_in_order():
    keras.utils.set_random_seed(0)
    relation = RelationNetwork(conv4_relation(input_shape=(16, 16, 1), filters=4, seed=0), filters=8, seed=0)
    embedding_state, relation_state = relation.model.non_trainable_variables, relation.relation.non_trainable_variables
    assert [id(v) for v in relation.state_variables] == [id(v) for v in embedding_state + relation_state]
    assert [id(v) for v in relation.extra_variables] == [id(v) for v in relation.relation.trainable_variables]
    assert {id(v) for v in relation.relation.variables} <= {id(v) for v in relation.variables}
    rng = np.random.default_rng(0)
    episode = Episode(rng.random((6, 16, 16, 1), np.float32), np.repeat(np.arange(3), 2).astype(np.int32),
                      rng.random((9, 16, 16, 1), np.float32), np.repeat(np.arange(3), 3).astype(np.int32))
    result = relation.task_loss(episode)
    assert [s.shape for s in result.state] == [v.shape for v in relation.state_variables]
    # The relation module's first moving mean: 0.1 x the mean of its first convolution over the 9 x 3 pairs.
    both, _ = relation.embed_with_state(np.concatenate([episode.support_x, episode.query_x]), training=True)
    support, query = both.numpy()[:6], both.numpy()[6:]
    class_maps = support.reshape(3, 2, *support.shape[1:]).sum(axis=1)  # (3, 2, 2, 4)
    pairs = np.concatenate([np.broadcast_to(class_maps[None], (9, *class_maps.shape)),
                            np.broadcast_to(query[:, None], (9, *class_maps.shape))], axis=-1).reshape(27, 2, 2, 8)
    conv = relation.relation.get_layer("conv0")(pairs).numpy()
    relation_mean = result.state[len(embedding_state)].numpy()
    np.testing.assert_allclose(relation_mean, 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    # The embedding's first moving mean comes from the support and query images in one batch.
    first = relation.model.get_layer("conv0")(np.concatenate([episode.support_x, episode.query_x])).numpy()
    np.testing.assert_allclose(result.state[0].numpy(), 0.1 * first.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_the_papers_module_sizes():
    """Omniglot: 28x28 -> 5x5x64 maps, relation padding 'same', 64 features before FC 8; miniImageNet: 84x84 ->
    19x19x64, padding 'valid', 3x3x64 = 576 (Sung et al. 2018, section 3.4, and the authors' code)."""
    assert conv4_relation().output_shape == (None, 5, 5, 64)
    assert conv4_relation(input_shape=(84, 84, 3)).output_shape == (None, 19, 19, 64)
    assert conv4_relation(5).output_shape == (None, 5)
    for feature_shape, padding, features in (((5, 5, 64), "same", 64), ((19, 19, 64), "valid", 576)):
        module = relation_module(feature_shape)
        assert module.input_shape == (None, *feature_shape[:2], 128)
        assert module.get_layer("conv0").padding == padding
        assert module.get_layer("flatten").output.shape == (None, features)
        assert [layer.units for layer in module.layers if isinstance(layer, keras.layers.Dense)] == [8, 1]
        assert module.output_shape == (None, 1)
    vectors = relation_module((16,), filters=32)
    assert vectors.input_shape == (None, 32) and vectors.get_layer("dense0").units == 32


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: shot_pooling='max'"):
        RelationNetwork(_identity_embedding(), shot_pooling="max")
    with pytest.raises(ValueError, match="Received: padding='full'"):
        relation_module((5, 5, 4), padding="full")
    with pytest.raises(ValueError, match="use padding='same'. Received: feature_shape=(.2, 2, 4.)"):
        relation_module((2, 2, 4), padding="valid")
    misfit = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"pairs \(None, 4\).*Received: relation with inputs \(3,\)"):
        RelationNetwork(_identity_embedding(), relation=misfit)
    matrix = keras.Sequential([keras.Input((4,)), keras.layers.Reshape((2, 2))])
    with pytest.raises(ValueError, match=r"Received: embedding output shape \(n, 2, 2\)"):
        RelationNetwork(matrix)
    with pytest.raises(ValueError, match="Received: input_shape=.8, 8, 1."):
        conv4_relation(input_shape=(8, 8, 1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(1)
    relation = RelationNetwork(conv4_relation(input_shape=(16, 16, 1), filters=4, seed=1), filters=8, seed=1)
    for v in relation.state_variables:  # both networks' moving statistics away from their initial values
        v.assign(v.numpy() * 0.5 + 0.1)
    path = export_few_shot_classifier(relation, tmp_path_factory.mktemp("relation"), "relation", max_ways=50,
                                      max_shots=4)
    return relation, path


@pytest.mark.parametrize("ways", [2, 5, 20, 50])
def test_one_export_answers_any_number_of_classes(exported, ways, serve_any_ways):
    got, expected = serve_any_ways(*exported, ways, atol=1e-5)
    assert expected.min() >= 0.0 and expected.max() <= 1.0  # the scores
    np.testing.assert_allclose(got["probabilities"].numpy(), tf.nn.softmax(expected).numpy(), rtol=1e-4, atol=1e-6)


def test_embed_signature_model_card_and_bad_requests(exported):
    relation, path = exported
    loaded = tf.saved_model.load(str(path))
    images = np.random.default_rng(3).random((4, 16, 16, 1), np.float32)
    out = loaded.signatures["embed"](images=images)["embeddings"].numpy()
    assert out.shape == (4, 2 * 2 * 4)  # flattened 2x2x4 maps
    np.testing.assert_allclose(out, relation.embed(images).numpy(), rtol=1e-5, atol=1e-5)
    card = read_model_card(path)
    assert card["any_ways"] and card["ways"] == 50 and card["algorithm"]["learner"] == "relation"
    assert card["signatures"]["embed"]["outputs"]["embeddings"]["shape"] == [None, 16]
    serve = loaded.signatures["serving_default"]
    images = np.zeros((6, 16, 16, 1), np.float32)
    for labels, message in [(np.array([0, 0, 1, 1, 3, 3], np.int32), "Received no example of classes"),
                            (np.array([0, 1, 2, 3, 4, 50], np.int32), r"must lie in \[0, 50\)"),
                            (np.array([0, 0, 0, 0, 0, 1], np.int32), "at most 4 examples of a class")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(support_images=images, support_labels=labels, query_images=images[:2])
