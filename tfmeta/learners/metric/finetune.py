"""`FineTuneBaseline`: pre-train a classifier on all training classes, fit a new head per task.

The fine-tuning baselines of Chen et al. (2019), "A Closer Look at Few-shot
Classification" (Baseline, Baseline++), and Tian et al. (2020), "Rethinking
Few-Shot Image Classification: a Good Embedding Is All You Need?" (logistic
regression on the pre-trained embedding). They are not meta-trained: the
backbone is trained as an ordinary classifier of all training classes, then
frozen; each test task fits a new head on its support set (`heads.py`).

Pre-training runs through the same loop as every learner (`MetaTrainer`:
checkpoints, resuming, `tf.distribute`, mixed precision, export): a training
"meta-batch" is a batched `Episode` whose query sets hold mini-batches of images
with their global labels and whose support sets are empty
(`tfmeta.data.class_batch_dataset`); `task_loss` is the cross-entropy of a
pre-training head of `num_classes` outputs on each mini-batch, and the loop
averages over the tasks of a step, replicas splitting them.
"""

import keras
import numpy as np
import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import TaskLoss, check_positive, check_steps
from tfmeta.learners.metric.embedding import EmbeddingLearner
from tfmeta.learners.metric.embedding import num_classes as count_classes
from tfmeta.learners.metric.heads import (
    COSINE_EPSILON,
    HEADS,
    LOGREG_C,
    LOGREG_STEPS,
    Head,
    cosine_scale,
    fit_cosine_head,
    fit_linear_head,
    fit_logistic_regression,
    head_logits,
    normalize,
)


# The head fits, compiled for eager callers (an eager `tf.while_loop` runs its hundreds of steps one op at a
# time: ~0.5 s a task instead of ~10 ms); inside a graph (evaluator, loop, export) the plain functions are used.
_COMPILED_FITS = {
    fit: tf.function(fit, reduce_retracing=True, autograph=False)
    for fit in (fit_linear_head, fit_cosine_head, fit_logistic_regression)
}


def _compiled_if_eager(fit):
    return _COMPILED_FITS[fit] if tf.executing_eagerly() else fit


def _feature_size(model: keras.Model) -> int:
    """The size E of a network's flat `(n, E)` output."""
    if model.outputs:
        shape = tuple(model.outputs[0].shape)
    elif model.inputs:
        shape = tuple(model(tf.zeros((1,) + tuple(model.inputs[0].shape[1:]))).shape)
    else:
        raise ValueError(f"The embedding must have a defined input shape. Received: embedding={model.name!r}")
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            "The embedding must map examples to flat features (n, E) (e.g. tfmeta.models.conv4(ways=None), "
            f"which ends in Flatten). Received: output shape {shape}"
        )
    return int(shape[-1])


class FineTuneBaseline(EmbeddingLearner):
    """Fine-tuning baselines: a pre-trained, frozen embedding and a head fitted per task.

    ```
    pre-training   loss = CE(head_pre(f(x)), y_global)        y_global in [0, num_classes): all training classes
    adapt          head = fit(f(support_x), support_y)         the task state: Head(kernel, bias)
    predict        logits = head(f(x))
    ```

    Heads (`heads.py` gives the references' settings and their TensorFlow versions):

    * `"linear"` (Baseline, Chen et al. 2019): pre-trained with a linear softmax
      head; at test time a linear softmax classifier on the raw features, fitted by
      SGD (lr 0.01, momentum 0.9, dampening 0.9, weight decay 1e-3) for 100
      epochs of the support set in batches of 4, here as many full-batch updates.
    * `"cosine"` (Baseline++): pre-trained and fitted with a cosine classifier
      (weight norm per class, scale 2 up to 200 classes, else 10), same SGD.
    * `"logreg"` (Tian et al. 2020): pre-trained with a linear softmax head; at
      test time multinomial logistic regression (scikit-learn's objective, `C=1`)
      on L2-normalised features.

    Any number of classes and of shots per task. The embedding runs with
    BatchNorm's moving statistics at test time (`training_at_test = False`), as
    the baselines are evaluated (`model.eval()`). The pre-training head's
    variables are meta-learned (`extra_variables`) and checkpointed with the
    embedding; served models do not use them.

    Args:
        embedding: the backbone without its head, a built `keras.Model` with flat
            `(n, E)` outputs (e.g. `tfmeta.models.conv4(ways=None)`).
        num_classes: the number of training classes (the pre-training head's size).
        head: `"linear"`, `"cosine"` or `"logreg"`.
        head_steps: optimisation steps of the head fitted per task (None: the
            references': `100 * ceil(S / 4)` for linear and cosine heads, 300 for
            logistic regression).
        logreg_c: the logistic regression's `C` (scikit-learn's default 1.0).
        cosine_scale: the scale of the cosine heads (None: Chen et al.'s, 2 up to
            200 classes, else 10, for the pre-training and the test heads alike).
        seed: seed of the pre-training head's initialisation (None: Keras's global state).
        name: the registry name.

    Raises:
        ValueError: on an unknown `head`, a bad `num_classes`, `head_steps`,
            `logreg_c` or `cosine_scale`, or an embedding without flat outputs.

    Example:

    ```python
    learner = FineTuneBaseline(tfmeta.models.conv4(ways=None), num_classes=732, head="logreg")
    # pre-train: MetaTrainer(config, lambda: learner, lambda s, ctx: class_batch_dataset(train, 16, ...))
    head = learner.adapt(support_x, support_y)           # Head(kernel (64, ways), bias (ways,))
    logits = learner.predict(head, query_x)              # (queries, ways)
    ```
    """

    def __init__(self, embedding: keras.Model, num_classes: int, head: str = "logreg", head_steps: int | None = None,
                 logreg_c: float = LOGREG_C, cosine_scale: float | None = None, seed: int | None = None,
                 name: str = "finetune"):
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {HEADS}. Received: head={head!r}")
        if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(
                "`num_classes` must be the number of training classes, an integer >= 2. "
                f"Received: num_classes={num_classes!r}"
            )
        super().__init__(embedding, name=name)
        self.head = head
        self.num_classes = int(num_classes)
        self.head_steps = None if head_steps is None else check_steps("head_steps", head_steps)
        self.logreg_c = check_positive("logreg_c", logreg_c)
        self.cosine_scale = None if cosine_scale is None else check_positive("cosine_scale", cosine_scale)
        self.feature_size = _feature_size(embedding)
        dtype = embedding.dtype_policy.variable_dtype
        init = keras.initializers.GlorotUniform(seed=seed)
        kernel = init((self.feature_size, self.num_classes), dtype=dtype)
        if head == "cosine":  # weight norm: a direction and a norm per class (g starts at |v|, as PyTorch's)
            self._pretrain = [keras.Variable(kernel, dtype=dtype, name="pretrain_direction"),
                              keras.Variable(tf.norm(kernel, axis=0), dtype=dtype, name="pretrain_norm")]
        else:  # a linear softmax classifier, bias 0 (as Chen et al.'s)
            self._pretrain = [keras.Variable(kernel, dtype=dtype, name="pretrain_kernel"),
                              keras.Variable(np.zeros(self.num_classes), dtype=dtype, name="pretrain_bias")]

    # ---------------------------------------------------------- pre-training

    @property
    def extra_variables(self) -> list:
        """The pre-training head: kernel and bias, or (cosine) direction and norm per class."""
        return list(self._pretrain)

    def scale_for(self, num_outputs: int) -> float:
        """The cosine scale of a head with `num_outputs` classes (`cosine_scale`, or Chen et al.'s rule)."""
        return cosine_scale(num_outputs) if self.cosine_scale is None else self.cosine_scale

    def pretrain_logits(self, features) -> tf.Tensor:
        """Logits `(n, num_classes)` of the pre-training head on features `(n, E)` (float32)."""
        first, second = (tf.cast(v.value, features.dtype) for v in self._pretrain)
        if self.head == "cosine":
            kernel = first * (second / tf.norm(first, axis=0))
            return self.scale_for(self.num_classes) * tf.matmul(normalize(features, COSINE_EPSILON), kernel)
        return tf.matmul(features, first) + second

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        """The pre-training loss of one mini-batch: cross-entropy over all `num_classes` classes.

        Args:
            episode: one pre-training "task" (`tfmeta.data.class_batch_dataset`):
                an empty support set and, as the query set, images with their
                global labels in `[0, num_classes)`.
            step: unused (no schedule).
            training: passed to the embedding (BatchNorm on the batch's statistics).

        Returns:
            A `TaskLoss`: the mean cross-entropy, the accuracy over all classes,
            and the embedding's new BatchNorm statistics.

        Raises:
            ValueError: if the episode has a support set (an ordinary few-shot
                episode, whose labels are not global).
        """
        support_size = episode.support_y.shape[0]
        if support_size != 0:
            raise ValueError(
                f"{type(self).__name__} pre-trains as a classifier of all {self.num_classes} training classes: its "
                "training batches hold images with their global labels as the query set and an empty support set "
                "(tfmeta.data.class_batch_dataset), not few-shot episodes. "
                f"Received: a support set of {support_size} examples"
            )
        features, state = self.embed_with_state(episode.query_x, training)
        loss, metrics = self.loss_and_metrics(self.pretrain_logits(features), episode.query_y)
        return TaskLoss(loss, metrics, state)

    # ------------------------------------------------------------ test time

    def task_state(self, support_embeddings, support_y) -> Head:
        """The head fitted to the support embeddings (`heads.fit_*`), for any number of classes."""
        ways = count_classes(support_y)
        if self.head == "linear":
            return _compiled_if_eager(fit_linear_head)(support_embeddings, support_y, ways, steps=self.head_steps)
        if self.head == "cosine":
            return _compiled_if_eager(fit_cosine_head)(support_embeddings, support_y, ways, self._test_scale(),
                                                       steps=self.head_steps)
        steps = LOGREG_STEPS if self.head_steps is None else self.head_steps
        return _compiled_if_eager(fit_logistic_regression)(support_embeddings, support_y, ways, C=self.logreg_c,
                                                           steps=steps)

    def predict_embedded(self, task_state: Head, query_embeddings):
        scale = self._test_scale() if self.head == "cosine" else None
        return head_logits(self.head, Head(*task_state), query_embeddings, scale)

    def _test_scale(self) -> float:
        """The test heads' scale: Chen et al.'s for up to 200 classes (2), where few-shot tasks are, or `cosine_scale`."""
        return self.scale_for(2)

    # ----------------------------------------------------------- description

    def config(self) -> dict:
        return {**super().config(), "head": self.head, "num_classes": self.num_classes, "head_steps": self.head_steps,
                "logreg_c": self.logreg_c, "cosine_scale": self.cosine_scale}
