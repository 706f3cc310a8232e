"""Ensemble: the mean of the members' probabilities by hand, members' own settings, not trainable, export, workdirs."""

import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfmeta import learners
from tfmeta.data.episode import Episode
from tfmeta.export import export_few_shot_classifier, read_model_card
from tfmeta.learners import MAML, Ensemble, EnsembleNotTrainableError, Learner, PrototypicalNetwork, TaskLoss
from tfmeta.models import conv4, mlp
from tfmeta.training import MetaTrainConfig, MetaTrainer, checkpoints, runner


class Fixed(Learner):
    """A stub member: the same class probabilities for every query (its task state), one table per `training`."""

    any_ways = True

    def __init__(self, test_table, train_table=None, training_at_test=False):
        super().__init__(mlp(input_dim=2, hidden=(2,), outputs=2, seed=0))
        self.tables = {False: np.log(test_table), True: np.log(train_table if train_table is not None else test_table)}
        self.training_at_test = training_at_test
        self.seen = []  # the `training` values adapt and predict were called with

    def adapt(self, support_x, support_y, steps=None, training=True):
        self.seen.append(("adapt", training))
        return tf.constant(self.tables[bool(training)], tf.float32)

    def predict(self, task_state, x, training=True):
        self.seen.append(("predict", training))
        return tf.tile(task_state[None], [tf.shape(x)[0], 1]) + 7.0  # logits: any shift gives the same softmax

    def task_loss(self, episode, step=None, training=True):
        return TaskLoss(tf.constant(0.0), {"accuracy": tf.constant(0.0)}, [])


SUPPORT = (np.zeros((3, 2), np.float32), np.arange(3, dtype=np.int32))
QUERY = np.zeros((2, 2), np.float32)


def test_the_mean_of_the_members_probabilities_by_hand():
    a = Fixed(np.array([0.5, 0.3, 0.2]))
    b = Fixed(np.array([0.1, 0.6, 0.3]))
    ensemble = Ensemble([a, b])
    logits = ensemble.predict(ensemble.adapt(*SUPPORT), QUERY).numpy()
    # mean: (0.5 + 0.1) / 2, (0.3 + 0.6) / 2, (0.2 + 0.3) / 2 = 0.3, 0.45, 0.25
    np.testing.assert_allclose(np.exp(logits), [[0.3, 0.45, 0.25]] * 2, rtol=1e-6)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), [[0.3, 0.45, 0.25]] * 2, rtol=1e-6)
    assert list(logits.argmax(1)) == [1, 1]  # a's answer alone would be class 0
    # Three members, one of them twice: the mean weighs it twice.
    three = Ensemble([a, b, b])
    np.testing.assert_allclose(np.exp(three.predict(three.adapt(*SUPPORT), QUERY).numpy()),
                               [[0.7 / 3, 1.5 / 3, 0.8 / 3]] * 2, rtol=1e-6)


def test_each_member_runs_with_its_own_training_at_test_unless_told():
    transductive = Fixed(np.array([0.9, 0.1]), train_table=np.array([0.2, 0.8]), training_at_test=True)  # as MAML
    moving = Fixed(np.array([0.6, 0.4]), train_table=np.array([0.0001, 0.9999]), training_at_test=False)  # as ProtoNet
    ensemble = Ensemble([transductive, moving])
    assert ensemble.training_at_test is None
    own = np.exp(ensemble.predict(ensemble.adapt(*SUPPORT), QUERY).numpy())  # training=None: each its own
    np.testing.assert_allclose(own[0], [(0.2 + 0.6) / 2, (0.8 + 0.4) / 2], rtol=1e-6)
    assert transductive.seen == [("adapt", True), ("predict", True)] and moving.seen == [("adapt", False), ("predict", False)]
    forced = np.exp(ensemble.predict(ensemble.adapt(*SUPPORT, training=False), QUERY, training=False).numpy())
    np.testing.assert_allclose(forced[0], [(0.9 + 0.6) / 2, (0.1 + 0.4) / 2], rtol=1e-6)


def test_two_identical_members_equal_one_member():
    rng = np.random.default_rng(0)
    support = rng.random((6, 16, 16, 1), np.float32)
    labels = np.repeat(np.arange(3), 2).astype(np.int32)
    query = rng.random((5, 16, 16, 1), np.float32)
    keras.utils.set_random_seed(0)
    maml = MAML(conv4(3, input_shape=(16, 16, 1), filters=4, seed=0), inner_lr=0.3, eval_inner_steps=2)
    protonet = PrototypicalNetwork(conv4(None, input_shape=(16, 16, 1), filters=4, seed=1))
    for member, steps in ((maml, 2), (protonet, None)):
        training = member.training_at_test
        alone = member.predict(member.adapt(support, labels, steps=steps, training=training), query, training=training)
        twice = Ensemble([member, member])
        got = twice.predict(twice.adapt(support, labels), query)
        # The ensemble's logits are log-probabilities: the member's log-softmax (MAML after its eval_inner_steps).
        np.testing.assert_allclose(got.numpy(), tf.nn.log_softmax(alone).numpy(), rtol=1e-5, atol=1e-5)
        assert twice.evaluate_task(Episode(support, labels, query, labels[:5] % 3))[1]["accuracy"] == \
            member.evaluate_task(Episode(support, labels, query, labels[:5] % 3), steps=steps, training=training)[1]["accuracy"]


def test_an_ensemble_is_not_meta_trained(tmp_path):
    ensemble = Ensemble([Fixed(np.array([0.5, 0.5])), Fixed(np.array([0.4, 0.6]))])
    assert ensemble.meta_variables == [] and ensemble.state_variables == []
    assert len(ensemble.variables) == 2 * len(ensemble.members[0].variables)  # the members' (what exports hold)
    episodes = Episode(*(t[None] for t in (*SUPPORT, QUERY, np.arange(2, dtype=np.int32))))
    with pytest.raises(EnsembleNotTrainableError, match="not meta-trained.*Received: a call to meta_gradients"):
        ensemble.meta_gradients(episodes, step=0)
    with pytest.raises(EnsembleNotTrainableError, match="Received: a call to task_loss"):
        ensemble.task_loss(Episode(*(t[0] for t in episodes)))
    config = MetaTrainConfig(dataset="x", num_iterations=2, eval_every=2, meta_batch_size=1, workdir=str(tmp_path))
    trainer = MetaTrainer(config, lambda: ensemble, lambda start, ctx: tf.data.Dataset.from_tensors(tuple(episodes)).repeat(),
                          verbose=False)
    with pytest.raises(EnsembleNotTrainableError):
        trainer.train()
    assert checkpoints.latest_checkpoint(tmp_path) is None


def test_bad_members():
    with pytest.raises(ValueError, match=r"Received: members=\[\]"):
        Ensemble([])
    with pytest.raises(TypeError, match=r"Received: members\[1\]=str"):
        Ensemble([Fixed(np.array([0.5, 0.5])), "maml"])
    regressor = MAML(mlp(), task="regression")
    with pytest.raises(ValueError, match=r"classifier.*members\[1\] \(maml\) with task='regression'"):
        Ensemble([Fixed(np.array([0.5, 0.5])), regressor])
    with pytest.raises(ValueError, match=r"same shape.*\(16, 16, 1\), \(8, 8, 1\)"):
        Ensemble([PrototypicalNetwork(conv4(None, input_shape=(16, 16, 1), filters=2)),
                  PrototypicalNetwork(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()]))])
    with pytest.raises(ValueError, match="agree on it. Received: maml: 3, maml: 5"):
        Ensemble([MAML(mlp(input_dim=2, outputs=3)), MAML(mlp(input_dim=2, outputs=5))])


# ------------------------------------------------------------------- export


def _members(seed=0):
    keras.utils.set_random_seed(seed)
    make = lambda s: conv4(None, input_shape=(16, 16, 1), filters=4, seed=s)
    a, b = PrototypicalNetwork(make(seed)), learners.build("finetune", make(seed + 1), num_classes=5, seed=seed)
    maml = MAML(conv4(3, input_shape=(16, 16, 1), filters=4, seed=seed + 2), inner_lr=0.3, eval_inner_steps=1)
    for member in (a, b):  # moving statistics away from their initial values
        for v in member.model.non_trainable_variables:
            v.assign(v.numpy() * 0.5 + 0.1)
    return a, b, maml


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    protonet, finetune, maml = _members()
    root = tmp_path_factory.mktemp("ensembles")
    any_ways = Ensemble([protonet, finetune])
    fixed = Ensemble([maml, protonet])  # MAML's fixed 3 classes; it adapts on batch statistics, ProtoNet not
    return {"any": (any_ways, export_few_shot_classifier(any_ways, root, "any", max_ways=10)),
            "fixed": (fixed, export_few_shot_classifier(fixed, root, "fixed"))}


@pytest.mark.parametrize("kind, ways", [("any", 2), ("any", 5), ("fixed", 3)])
def test_the_export_serves_the_ensemble(exports, kind, ways):
    ensemble, path = exports[kind]
    rng = np.random.default_rng(ways)
    labels = np.repeat(np.arange(ways), 2).astype(np.int32)
    support = rng.random((len(labels), 16, 16, 1), np.float32)
    query = rng.random((4, 16, 16, 1), np.float32)
    expected = tf.function(lambda s, l, q: ensemble.predict(ensemble.adapt(s, l), q))(support, labels, query)
    out = tf.saved_model.load(str(path)).signatures["serving_default"](
        support_images=support, support_labels=labels, query_images=query)
    np.testing.assert_allclose(out["logits"].numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, rtol=1e-5)
    card = read_model_card(path)
    assert card["any_ways"] is (kind == "any") and card["ways"] == (10 if kind == "any" else 3)
    assert card["batch_norm_batch_statistics"] is None  # each member its own:
    assert [m["batch_norm_batch_statistics"] for m in card["members"]] == (
        [False, False] if kind == "any" else [True, False])


def test_a_fixed_size_ensemble_refuses_other_ways(exports):
    _, path = exports["fixed"]
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    images = np.zeros((4, 16, 16, 1), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must lie in \[0, 3\)"):
        serve(support_images=images, support_labels=np.array([0, 1, 2, 3], np.int32), query_images=images)


# ----------------------------------------------------------------- workdirs


def _png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)


@pytest.fixture(autouse=True)
def _checkout_importable(monkeypatch):
    """The workdirs' `--backbone=tests.learners.test_ensemble:tiny_conv` is imported by its dotted path,
    from the checkout (pytest puts only the test's own folder on `sys.path`)."""
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[2]))


def _workdir(tmp_path, name, variant, data, **fields):
    """A run directory (config.json with the data spec, a checkpoint) of an untrained learner; changed weights."""
    config = MetaTrainConfig(dataset="folder", data_dir=str(data), ways=3, shots=1, queries=2, meta_batch_size=2,
                             num_iterations=1, eval_every=1, eval_episodes=4, backbone="tests.learners.test_ensemble:tiny_conv",
                             variant=variant, workdir=str(tmp_path / name), seed=len(name), **fields).resolved()
    trainer, _ = runner.build_trainer(config, verbose=False)
    checkpoints.prepare_workdir(config, trainer.data_spec)
    for v in trainer.learner.meta_variables:  # not the initialisation: restoring must matter
        v.assign(v * 1.1 + 0.01)
    trainer.step.assign(5)
    trainer.save()
    return trainer.learner


def tiny_conv(ways=None, input_shape=(16, 16, 1), seed=None, dtype=None):
    """A 4-filter Conv-4 (a `--backbone=module:factory`)."""
    return conv4(ways, input_shape=input_shape, filters=4, seed=seed, dtype=dtype)


def test_from_workdirs_and_evaluate_ensemble(tmp_path, capsys):
    from tfmeta.workdir import evaluate_ensemble  # noqa: PLC0415

    data = tmp_path / "data"  # 15 classes of 4 images: 12 train, 3 test (a seeded random split)
    rng = np.random.default_rng(0)
    for k in range(15):
        for i in range(4):
            _png(data / f"c{k:02d}" / f"{i}.png", np.clip(rng.normal(40 + 12 * k, 30, (16, 16)), 0, 255))
    members = [_workdir(tmp_path, "proto", "protonet", data), _workdir(tmp_path, "finetuned", "finetune", data),
               _workdir(tmp_path, "maml", "maml", data, inner_lr=0.3, eval_inner_steps=2)]
    workdirs = [tmp_path / name for name in ("proto", "finetuned", "maml")]
    restored = Ensemble.from_workdirs(workdirs)
    assert [m.name for m in restored.members] == ["protonet", "finetune", "maml"] and restored.ways == 3
    assert restored.members[1].num_classes == 12  # from the data spec in config.json
    assert restored.members[2].eval_steps == 2
    support, labels = rng.random((6, 16, 16, 1)).astype(np.float32), np.repeat(np.arange(3), 2).astype(np.int32)
    query = rng.random((4, 16, 16, 1)).astype(np.float32)
    expected = Ensemble(members)
    np.testing.assert_allclose(restored.predict(restored.adapt(support, labels), query).numpy(),
                               expected.predict(expected.adapt(support, labels), query).numpy(), rtol=1e-5, atol=1e-5)

    results = evaluate_ensemble(workdirs, eval_episodes=8)
    printed = capsys.readouterr().out
    assert len(results["members"]) == 3 and "ensemble - best member" in printed and printed.count("member ") >= 3
    best = results["best_member"]
    gain = results["gain_over_best"]["accuracy"][0]
    assert abs(results["ensemble"]["accuracy"][0] - results["members"][best]["accuracy"][0] - gain) < 1e-9  # paired
    with pytest.raises(ValueError, match="at least two workdirs"):
        evaluate_ensemble(workdirs[:1])

    # Two copies of one run: the ensemble is that run, on the same tasks (what `trainers.evaluate
    # --workdir=A --workdir=B` prints).
    shutil.copytree(workdirs[0], tmp_path / "copy")
    same = evaluate_ensemble([workdirs[0], tmp_path / "copy"], eval_episodes=8, verbose=False)
    assert same["ensemble"]["accuracy"] == same["members"][0]["accuracy"] == same["members"][1]["accuracy"]
    assert same["gain_over_best"]["accuracy"] == (0.0, 0.0)
