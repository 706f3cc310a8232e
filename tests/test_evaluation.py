"""tfmeta.evaluation: the confidence interval, batching, no retracing."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.learners import MAML
from tfmeta.data.regression import sinusoid_tasks
from tfmeta.evaluation import Evaluator, confidence_interval, evaluate, format_results
from tfmeta.models import mlp


def test_confidence_interval_hand_computed():
    # mean 2.5; population std sqrt(((1.5)^2+(0.5)^2)*2/4) = sqrt(1.25); n = 4
    mean, ci = confidence_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert ci == pytest.approx(1.96 * math.sqrt(1.25) / 2.0, rel=1e-12)  # 1.0957...
    assert confidence_interval([0.0, 1.0, 0.0, 1.0]) == pytest.approx((0.5, 0.49))
    assert confidence_interval([3.0]) == (3.0, 0.0)


def test_confidence_interval_rejects_empty():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        confidence_interval([])


@pytest.fixture(scope="module")
def maml():
    keras.utils.set_random_seed(0)
    return MAML(mlp(), task="regression", inner_steps=1, inner_lr=0.01)


def test_evaluate_matches_per_task_computation_and_truncates(maml):
    dataset = sinusoid_tasks(5, 10, meta_batch_size=4, seed=3).take(3)  # 12 tasks, keep 10
    results = evaluate(maml, dataset, num_episodes=10, steps=1)
    assert results["num_episodes"] == 10
    per_task = []
    for batch in dataset:
        for t in range(4):
            adapted = maml.adapt(batch.support_x[t], batch.support_y[t], steps=1)
            outputs = maml.predict(adapted, batch.query_x[t])
            per_task.append(float(tf.reduce_mean(tf.square(outputs - batch.query_y[t]))))
    mean, ci = results["mse"]
    expected = np.array(per_task[:10])
    assert mean == pytest.approx(expected.mean(), rel=1e-5)
    assert ci == pytest.approx(1.96 * expected.std() / math.sqrt(10), rel=1e-4)
    assert results["loss"][0] == pytest.approx(mean, rel=1e-6)
    assert "mse" in format_results(results, steps=1) and "10 episodes" in format_results(results)


def test_an_evaluator_does_not_retrace(maml):
    dataset = sinusoid_tasks(5, 10, meta_batch_size=5, seed=1).take(4)
    evaluator = Evaluator(maml)
    first = evaluator.evaluate(dataset, num_episodes=20, steps=2)
    second = evaluator.evaluate(dataset, num_episodes=20, steps=2)
    assert evaluator.trace_counts == {2: 1}
    assert first == second == evaluate(maml, dataset, num_episodes=20, steps=2)  # the same tasks, the same numbers
    zero = evaluator.evaluate(dataset, num_episodes=20, steps=0)
    assert zero["mse"][0] != first["mse"][0]  # adaptation changes the error
    assert evaluator.trace_counts == {2: 1, 0: 1}


def test_evaluate_errors(maml):
    dataset = sinusoid_tasks(5, 10, meta_batch_size=5).take(2)
    with pytest.raises(ValueError, match="ran out after 10 episodes. Received: num_episodes=600"):
        evaluate(maml, dataset, num_episodes=600)
    with pytest.raises(ValueError, match="Received: num_episodes=0"):
        evaluate(maml, dataset, num_episodes=0)
    with pytest.raises(ValueError, match="Received: steps=-1"):
        evaluate(maml, dataset, num_episodes=5, steps=-1)
