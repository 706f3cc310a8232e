"""A new learner is one class on the contract: the worked example of the README.

`NearestMean` (a ProtoNet in a dozen lines: the task state is the mean
embedding of each class) is trained by the same loop, evaluated by the same
evaluator and exported by the same exporter as MAML, with no change to any of
them, and it passes the contract test every registered learner passes.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.evaluation import Evaluator
from tfmeta.export import export_few_shot_classifier, read_model_card
from tfmeta.learners import Learner, TaskLoss
from tfmeta.models import mlp
from tfmeta.training import MetaTrainConfig, MetaTrainer

from test_contract import DIM, _tasks, check_contract


class NearestMean(Learner):
    """Classifies by the nearest class mean of learned embeddings, for any number of classes."""

    any_ways = True

    def adapt(self, support_x, support_y, steps=None, training=True):
        self.check_adapt_steps(steps)  # adapts in one pass: no step count
        embeddings, _ = self.call_network(self.initial_weights(), support_x, training)  # (S, E)
        ways = tf.reduce_max(support_y) + 1
        return tf.math.unsorted_segment_mean(embeddings, support_y, ways)  # (ways, E): the task state

    def predict(self, task_state, x, training=True):
        embeddings, _ = self.call_network(self.initial_weights(), x, training)  # (Q, E)
        return -tf.reduce_sum(tf.square(embeddings[:, None, :] - task_state[None]), axis=-1)  # (Q, ways)

    def task_loss(self, episode, step=None, training=True):
        outputs = self.predict(self.adapt(episode.support_x, episode.support_y), episode.query_x, training)
        loss, metrics = self.loss_and_metrics(outputs, episode.query_y)
        return TaskLoss(loss, metrics, self.current_state())


def _learner():
    return NearestMean(mlp(input_dim=DIM, hidden=(32,), outputs=16, seed=0), name="nearest_mean")


def test_the_tiny_learner_passes_the_contract_test():
    check_contract(_learner())


def test_loop_evaluator_and_exporter_take_it_unchanged(tmp_path):
    config = MetaTrainConfig(dataset="contract", ways=3, shots=2, queries=5, meta_batch_size=8, num_iterations=40,
                             eval_every=20, eval_episodes=16, workdir=str(tmp_path / "run"), meta_lr=3e-3)
    stream = lambda start, ctx: tf.data.Dataset.range(start, 10**6).map(
        lambda s: tf.numpy_function(lambda s: tuple(_tasks(8, seed=int(s))), [s], [tf.float32, tf.int32] * 2))
    validation = lambda: [_tasks(8, seed=10**7 + i) for i in range(2)]
    trainer = MetaTrainer(config, _learner, stream, eval_dataset=validation, verbose=False)
    history = trainer.train()
    assert trainer.trace_count == 1 and history[-1]["val/accuracy"] > 0.8  # one-pass learners: no before/after

    evaluator = Evaluator(trainer.learner)
    results = evaluator.evaluate([_tasks(20, seed=5)], num_episodes=20)
    assert results["accuracy"][0] > 0.8
    with pytest.raises(ValueError, match="adapts in one pass.*Received: steps=3"):
        evaluator.evaluate([_tasks(20, seed=5)], num_episodes=20, steps=3)

    # Served for any number of classes up to max_ways: 2-way and 5-way requests against the library.
    path = export_few_shot_classifier(trainer.learner, tmp_path / "exports", "nearest_mean", max_ways=5)
    card = read_model_card(path)
    assert card["any_ways"] and card["ways"] == 5 and card["algorithm"]["learner"] == "nearest_mean"
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    rng = np.random.default_rng(0)
    for ways in (2, 5):
        support = rng.normal(size=(3 * ways, DIM)).astype(np.float32)
        labels = np.repeat(np.arange(ways, dtype=np.int32), 3)
        query = rng.normal(size=(4, DIM)).astype(np.float32)
        got = serve(support_images=support, support_labels=labels, query_images=query)["logits"].numpy()
        expected = trainer.learner.predict(trainer.learner.adapt(support, labels), query).numpy()
        assert got.shape == (4, ways)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Received no example of classes"):
        serve(support_images=support[:6], support_labels=np.array([0, 0, 2, 2, 3, 3], np.int32), query_images=query)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must lie in \[0, 5\) \(this model serves up to 5"):
        serve(support_images=support[:2], support_labels=np.array([0, 5], np.int32), query_images=query)
