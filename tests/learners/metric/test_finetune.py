"""Fine-tuning baselines: heads against references computed here, pre-training, transfer, export for any N."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta import learners
from tfmeta.data import ClassDataset, Episode, class_batch_dataset, episode_dataset
from tfmeta.evaluation import Evaluator
from tfmeta.export import export_few_shot_classifier, read_model_card
from tfmeta.learners import FineTuneBaseline
from tfmeta.learners.metric import heads
from tfmeta.models import conv4
from tfmeta.training import MetaTrainConfig, MetaTrainer


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _newton_logistic_regression(x, y, ways, C=1.0):
    """scikit-learn's multinomial objective, sum_i CE + |W|^2 / (2C) (intercept free), by damped Newton in float64."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    xt = np.hstack([x, np.ones((len(x), 1))])  # (S, E+1)
    targets = np.eye(ways)[y]
    penalty = np.r_[np.full(x.shape[1], 1.0 / C), 0.0]  # no penalty on the intercept
    theta = np.zeros((xt.shape[1], ways))

    def objective(t):
        z = xt @ t
        return -(targets * (z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True))).sum() \
            + 0.5 * (penalty[:, None] * t ** 2).sum()

    for _ in range(50):
        p = _softmax(xt @ theta)
        grad = xt.T @ (p - targets) + penalty[:, None] * theta  # (E+1, N)
        if np.abs(grad).max() < 1e-12:
            break
        curvature = p[:, :, None] * np.eye(ways)[None] - p[:, :, None] * p[:, None, :]  # (S, N, N)
        hessian = np.einsum("skl,si,sj->kilj", curvature, xt, xt, optimize=True).reshape(ways * xt.shape[1], -1)
        hessian += np.diag(np.tile(penalty, ways)) + 1e-12 * np.eye(len(hessian))
        step = np.linalg.lstsq(hessian, grad.T.reshape(-1), rcond=None)[0].reshape(ways, -1).T
        size = 1.0
        while objective(theta - size * step) > objective(theta) and size > 1e-8:
            size /= 2
        theta = theta - size * step
    grad = xt.T @ (_softmax(xt @ theta) - targets) + penalty[:, None] * theta
    assert np.abs(grad).max() < 1e-10  # the reference is the optimum
    return theta[:-1], theta[-1]


def _identity_embedding(dim):
    """f(x) = x, so features are the inputs."""
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(dim, use_bias=False)])
    model.layers[-1].kernel.assign(np.eye(dim, dtype=np.float32))
    return model


# ------------------------------------------------------------------------ heads


@pytest.mark.parametrize("ways, shots, dim", [(3, 4, 2), (20, 5, 16)])
def test_logistic_regression_is_sklearns_optimum(ways, shots, dim):
    """Separable 2-D points (3 classes), and a 20-way 5-shot problem: the TF fit equals a float64 Newton solve."""
    rng = np.random.default_rng(ways)
    centres = rng.normal(size=(ways, dim)) * 3.0
    x = np.repeat(centres, shots, axis=0) + 0.3 * rng.normal(size=(ways * shots, dim)) + 4.0
    y = np.repeat(np.arange(ways), shots)
    kernel, bias = _newton_logistic_regression(x, y, ways)
    fit = tf.function(heads.fit_logistic_regression)
    head = fit(tf.constant(x), tf.constant(y, tf.int32), ways)  # default: 300 steps
    queries = rng.normal(size=(50, dim)) * 3.0 + 4.0
    expected = _softmax(queries / np.linalg.norm(queries, axis=1, keepdims=True) @ kernel + bias)
    got = tf.nn.softmax(heads.head_logits("logreg", head, tf.constant(queries))).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(head.kernel.numpy(), kernel, atol=1e-5)
    # The intercept is determined up to a constant shared by the classes.
    np.testing.assert_allclose(head.bias.numpy() - head.bias.numpy().mean(), bias - bias.mean(), atol=1e-5)
    # C weighs the data against the penalty: C=1 is not C=10 (a fit that ignored C would pass the rest).
    strong = fit(tf.constant(x), tf.constant(y, tf.int32), ways, C=10.0)
    assert np.abs(strong.kernel.numpy() - kernel).max() > 0.1


def _torch_sgd_reference(params, grad_fn, steps, lr=0.01, momentum=0.9, dampening=0.9, weight_decay=0.001):
    """torch.optim.SGD, written out in numpy (first step: the buffer is the gradient itself)."""
    buffers = None
    for _ in range(steps):
        grads = [g + weight_decay * p for g, p in zip(grad_fn(params), params)]
        buffers = grads if buffers is None else [momentum * b + (1 - dampening) * g for b, g in zip(buffers, grads)]
        params = [p - lr * b for p, b in zip(params, buffers)]
    return params


# A hand-made 3-way task: 2-D features, unequal shots (S = 6: 100 * ceil(6 / 4) = 200 updates).
X = np.array([[2.0, 0.5], [3.0, 1.0], [0.2, 2.5], [0.5, 3.0], [-2.0, -1.0], [-3.0, -0.5]])
Y = np.array([0, 0, 1, 1, 2, 2, ])


def test_linear_head_is_chens_sgd_on_the_full_support_set():
    targets = np.eye(3)[Y]

    def grads(params):
        kernel, bias = params
        residual = (_softmax(X @ kernel + bias) - targets) / len(X)  # mean cross-entropy
        return [X.T @ residual, residual.sum(0)]

    assert int(heads.sgd_steps(6)) == 200 and int(heads.sgd_steps(5)) == 200 and int(heads.sgd_steps(25)) == 700
    kernel, bias = _torch_sgd_reference([np.zeros((2, 3)), np.zeros(3)], grads, 200)
    head = tf.function(heads.fit_linear_head)(tf.constant(X), tf.constant(Y, tf.int32), 3)
    np.testing.assert_allclose(head.kernel.numpy(), kernel, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(head.bias.numpy(), bias, rtol=1e-6, atol=1e-9)
    assert np.abs(kernel).max() > 0.1  # it moved
    logits = heads.head_logits("linear", head, tf.constant(X)).numpy()
    np.testing.assert_allclose(logits, X @ kernel + bias, rtol=1e-6)
    assert list(logits.argmax(1)) == list(Y)


def test_cosine_head_is_chens_weight_normalised_sgd():
    scale, eps = 2.0, heads.COSINE_EPSILON
    unit = X / (np.linalg.norm(X, axis=1, keepdims=True) + eps)
    targets = np.eye(3)[Y]

    def grads(params):  # logits_ik = s g_k (u_i . v_k) / |v_k|, by hand
        v, g = params
        norm = np.linalg.norm(v, axis=0)
        cos = unit @ v / norm  # (S, N)
        residual = (_softmax(scale * g * cos) - targets) / len(X)  # d loss / d logits
        grad_g = (residual * scale * cos).sum(0)
        grad_v = (unit.T @ (residual * scale * g)) / norm - v * ((residual * scale * g * cos).sum(0) / norm ** 2)
        return [grad_v, grad_g]

    start_v = np.stack([unit[Y == k].mean(0) for k in range(3)], axis=1)  # imprinted: class means of unit features
    v, g = _torch_sgd_reference([start_v, np.linalg.norm(start_v, axis=0)], grads, 200)
    head = tf.function(heads.fit_cosine_head)(tf.constant(X), tf.constant(Y, tf.int32), 3, scale)
    np.testing.assert_allclose(head.kernel.numpy(), v * g / np.linalg.norm(v, axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(head.bias.numpy(), 0.0)
    assert np.abs(g - np.linalg.norm(start_v, axis=0)).max() > 0.05  # the norms were learned
    # Logits: scale * |W_k| * cos(x, W_k).
    query = np.array([[0.0, 2.0]])
    w = head.kernel.numpy()
    expected = scale * np.linalg.norm(w, axis=0) * (query @ w) / (np.linalg.norm(w, axis=0) * (2.0 + eps))
    np.testing.assert_allclose(heads.head_logits("cosine", head, tf.constant(query), scale).numpy(), expected,
                               rtol=1e-6)


def test_chens_cosine_scale():
    assert heads.cosine_scale(5) == 2.0 and heads.cosine_scale(200) == 2.0 and heads.cosine_scale(732) == 10.0


# -------------------------------------------------------------------- learner


def test_pretraining_loss_is_the_cross_entropy_over_all_training_classes():
    rng = np.random.default_rng(0)
    for head in ("linear", "cosine"):
        learner = FineTuneBaseline(_identity_embedding(3), num_classes=6, head=head, seed=0)
        first, second = learner.extra_variables
        first.assign(rng.normal(size=(3, 6)).astype(np.float32))
        second.assign(rng.uniform(0.5, 2.0, size=6).astype(np.float32))
        x = rng.normal(size=(8, 3)).astype(np.float32)
        y = rng.integers(0, 6, size=8).astype(np.int32)
        batch = Episode(np.zeros((0, 3), np.float32), np.zeros((0,), np.int32), x, y)
        result = learner.task_loss(batch)
        w, b = first.numpy(), second.numpy()
        if head == "linear":
            logits = x @ w + b
        else:  # 6 <= 200 classes: scale 2; W_k = g_k v_k / |v_k|
            logits = 2.0 * (x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)) @ (w * b / np.linalg.norm(w, axis=0))
        expected = -np.mean(np.log(_softmax(logits.astype(np.float64))[np.arange(8), y]))
        np.testing.assert_allclose(float(result.loss), expected, rtol=1e-5)
        assert float(result.metrics["accuracy"]) == np.mean(logits.argmax(1) == y)
        grads, _, _ = learner.meta_gradients(Episode(*(t[None] for t in batch)), step=0)
        assert len(grads) == 3 and all(np.abs(g.numpy()).max() > 0 for g in grads[1:])  # the head is trained


def test_pretraining_refuses_few_shot_episodes():
    learner = FineTuneBaseline(_identity_embedding(2), num_classes=4)
    episode = Episode(X.astype(np.float32), Y.astype(np.int32), X.astype(np.float32), Y.astype(np.int32))
    with pytest.raises(ValueError, match="class_batch_dataset.*Received: a support set of 6 examples"):
        learner.task_loss(episode)


def test_adapt_fits_the_head_on_the_frozen_embedding_for_any_ways():
    learner = FineTuneBaseline(_identity_embedding(2), num_classes=4, head="linear")
    head = tf.function(learner.adapt)(X.astype(np.float32), Y.astype(np.int32))
    expected = tf.function(heads.fit_linear_head)(tf.constant(X, tf.float32), tf.constant(Y, tf.int32), 3)
    np.testing.assert_allclose(head.kernel.numpy(), expected.kernel.numpy(), rtol=1e-6)
    assert learner.predict(head, X[:2].astype(np.float32)).shape == (2, 3)
    assert learner.training_at_test is False and learner.any_ways and learner.eval_steps is None


@pytest.fixture(scope="module")
def small_conv():
    def make(head, seed=0):
        keras.utils.set_random_seed(seed)
        learner = FineTuneBaseline(conv4(ways=None, input_shape=(16, 16, 1), filters=4, seed=seed), num_classes=10,
                                   head=head, seed=seed)
        for v in learner.model.non_trainable_variables:  # moving statistics away from their initial values
            v.assign(v.numpy() * 0.5 + 0.1)
        return learner

    return make


def test_deterministic_and_each_task_alone(small_conv):
    learner = small_conv("logreg")
    rng = np.random.default_rng(1)
    episodes = Episode(rng.random((3, 6, 16, 16, 1), np.float32), np.tile(np.repeat(np.arange(3), 2), (3, 1)).astype(np.int32),
                       rng.random((3, 9, 16, 16, 1), np.float32), np.tile(np.repeat(np.arange(3), 3), (3, 1)).astype(np.int32))
    adapt = tf.function(learner.adapt)
    first = adapt(episodes.support_x[0], episodes.support_y[0])
    again = adapt(episodes.support_x[0], episodes.support_y[0])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    evaluate = tf.function(lambda e: learner.evaluate_tasks(e, training=False))
    batched = evaluate(episodes)
    for t in range(3):
        alone = evaluate(Episode(*(x[t:t + 1] for x in episodes)))
        np.testing.assert_allclose(alone["loss"].numpy()[0], batched["loss"].numpy()[t], rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(head="svm"), "Received: head='svm'"),
        (dict(num_classes=1), "Received: num_classes=1"),
        (dict(head_steps=0), "Received: head_steps=0"),
        (dict(logreg_c=0.0), "Received: logreg_c=0.0"),
        (dict(cosine_scale=-1.0), "Received: cosine_scale=-1.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FineTuneBaseline(_identity_embedding(2), **(dict(num_classes=4) | kwargs))


def test_the_embedding_must_give_flat_features():
    unflattened = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"flat features.*Received: output shape \(None, 6, 6, 2\)"):
        FineTuneBaseline(unflattened, num_classes=4)


# -------------------------------------------------- pre-training transfers


def _nuisance_classes(num_classes=60, per_class=20, seed=0) -> ClassDataset:
    """Classes that differ in 4 of 32 input dimensions; the other 28 hold large noise.

    A random network mixes the noise into every feature (near chance on new
    classes); a classifier pre-trained on other classes learns to ignore it.
    """
    rng = np.random.default_rng(seed)
    means = np.zeros((num_classes, 32))
    means[:, :4] = 2.0 * rng.normal(size=(num_classes, 4))
    noise = np.r_[np.full(4, 0.3), np.full(28, 2.0)]
    x = np.repeat(means, per_class, axis=0) + noise * rng.normal(size=(num_classes * per_class, 32))
    x = (x - x.min()) / (x.max() - x.min())
    return ClassDataset.from_arrays(x.reshape(-1, 4, 8, 1).astype(np.float32), np.repeat(np.arange(num_classes), per_class))


def _mlp_embedding(seed):
    init = lambda i: keras.initializers.GlorotUniform(seed + i)
    return keras.Sequential([keras.Input((4, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(64, activation="relu", kernel_initializer=init(0)),
                             keras.layers.Dense(16, kernel_initializer=init(1))])


def test_pretraining_through_the_loop_transfers_to_unseen_classes(tmp_path):
    train, test = _nuisance_classes().random_split([40, 20], seed=0)
    build = lambda: FineTuneBaseline(_mlp_embedding(0), num_classes=train.num_classes, head="logreg", seed=0)
    config = MetaTrainConfig(dataset="synthetic", ways=5, shots=1, queries=5, meta_batch_size=1, num_iterations=300,
                             eval_every=300, eval_episodes=10, meta_lr=3e-3, workdir=str(tmp_path), variant="finetune")
    stream = lambda start, context: class_batch_dataset(train, 32, 1, seed=0, start_step=start, input_context=context)
    trainer = MetaTrainer(config, build, stream, verbose=False)
    trainer.train()
    tasks = lambda: episode_dataset(test, 5, 1, 5, 60, seed=1, num_steps=1)  # 5-way 1-shot, 20 unseen classes
    pretrained = Evaluator(trainer.learner).evaluate(tasks(), 60)["accuracy"][0]
    random_backbone = Evaluator(build()).evaluate(tasks(), 60)["accuracy"][0]
    # Measured: 0.82 against 0.27 (chance 0.2).
    assert pretrained > 0.7 and random_backbone < 0.4, (pretrained, random_backbone)


def test_resuming_pretraining_reproduces_the_uninterrupted_run(tmp_path):
    """The pre-training head is checkpointed with the embedding, and the class batches resume at the step."""
    train = _nuisance_classes(num_classes=10, per_class=6)
    build = lambda: FineTuneBaseline(_mlp_embedding(0), num_classes=10, head="cosine", seed=0)
    stream = lambda start, context: class_batch_dataset(train, 8, 2, seed=0, start_step=start, input_context=context)

    def trainer(workdir):
        config = MetaTrainConfig(dataset="synthetic", meta_batch_size=2, num_iterations=6, eval_every=3,
                                 eval_episodes=2, workdir=str(workdir), variant="finetune", meta_lr=1e-2)
        return MetaTrainer(config, build, stream, verbose=False)

    whole = trainer(tmp_path / "whole")
    whole.train()
    trainer(tmp_path / "parts").train(until_step=3)
    resumed = trainer(tmp_path / "parts")
    resumed.train()
    assert int(resumed.step.numpy()) == 6
    for a, b in zip(whole.learner.variables, resumed.learner.variables):  # the head's direction and norms too
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
    assert np.abs(whole.learner.extra_variables[1].numpy() - build().extra_variables[1].numpy()).max() > 1e-3


# ------------------------------------------------------------------- export


@pytest.fixture(scope="module", params=heads.HEADS)
def exported(request, small_conv, tmp_path_factory):
    learner = small_conv(request.param)
    path = export_few_shot_classifier(learner, tmp_path_factory.mktemp("finetune"), "finetune", max_ways=20,
                                      max_shots=3)
    library = tf.function(lambda s, l, q: learner.predict(learner.adapt(s, l), q))
    return learner, path, tf.saved_model.load(str(path)).signatures["serving_default"], library


@pytest.mark.parametrize("ways", [2, 5, 20])
def test_the_served_graph_fits_the_same_head(exported, ways):
    learner, path, serve, library = exported
    rng = np.random.default_rng(ways)
    shots = rng.integers(1, 4, size=ways)  # unequal shots, up to max_shots
    labels = rng.permutation(np.repeat(np.arange(ways), shots)).astype(np.int32)
    support = rng.random((len(labels), 16, 16, 1), np.float32)
    query = rng.random((7, 16, 16, 1), np.float32)
    expected = library(support, labels, query).numpy()
    got = serve(support_images=support, support_labels=labels, query_images=query)
    assert got["logits"].shape == (7, ways)
    np.testing.assert_allclose(got["logits"].numpy(), expected, rtol=1e-4, atol=1e-4)
    card = read_model_card(path)
    assert card["any_ways"] and card["ways"] == 20 and card["batch_norm_batch_statistics"] is False
    assert card["algorithm"]["head"] == learner.head and card["algorithm"]["num_classes"] == 10
