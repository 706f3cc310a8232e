"""Classifier heads fitted to a task's support features, in TensorFlow (the fine-tuning baselines).

Each fit is a pure function of `(features, labels, ways)` that runs a fixed
number of full-batch optimisation steps in a `tf.while_loop` (no Python
control flow on tensors), so it runs the same eagerly, inside the evaluator's
compiled step and inside a served SavedModel, for any number of classes and of
shots, and gives the same head for the same support set (deterministic
initialisation, no sampling). The fitted head is a `Head(kernel, bias)`:

```
"linear"  logits = x W + b                                      (Baseline, Chen et al. 2019)
"cosine"  logits = s * (x / (|x| + 1e-5)) W,  W_k = g_k v_k / |v_k|    (Baseline++: cosine, learned norms)
"logreg"  logits = (x / |x|) W + b                               (Tian et al. 2020: logistic regression)
```

Settings of the references, and how they are approximated here:

* Baseline / Baseline++ (`wyharveychen/CloserLookFewShot`,
  `methods/baselinefinetune.py`): a new `nn.Linear` (or `distLinear`, weight
  norm per class, scale 2 for at most 200 classes, else 10: `backbone.py`)
  trained for 100 epochs over the support set in random mini-batches of 4 by
  `SGD(lr=0.01, momentum=0.9, dampening=0.9, weight_decay=0.001)`, on the mean
  cross-entropy. Here: the same optimiser and the same number of updates,
  `100 * ceil(S / 4)`, each on the full support set (the mean gradient those
  random batches estimate), from a deterministic start: zeros for the linear
  head (PyTorch draws a random one), and for the cosine head the class means of
  the normalised support features as directions `v_k` with norms
  `g_k = |v_k|` (PyTorch's weight norm starts at `g = |v|` from a random `v`).
* Logistic regression (`WangYueFt/rfs`, `eval/meta_eval.py`): scikit-learn's
  `LogisticRegression(random_state=0, solver='lbfgs', max_iter=1000,
  multi_class='multinomial')` (defaults `C=1.0`, `penalty='l2'`, `tol=1e-4`,
  intercept fitted) on L2-normalised features, i.e. the minimum of scikit-learn's
  multinomial objective (`_multinomial_loss` in `sklearn/linear_model/_logistic.py`)

  ```
  sum_i CE(W^T x_i + b, y_i) + ||W||^2 / (2 C)              (the intercept is not penalised)
  ```

  Here: the same objective, minimised by Nesterov's accelerated gradient with
  step `1/L` (`L = (|X|_F^2 + S) / 2 + 1/C` bounds its curvature: the softmax
  Hessian is at most `I/2`, Böhning 1992) and adaptive restart (O'Donoghue and
  Candès 2015), from zeros, for a fixed number of steps (300 by default): on
  20-way 5-shot problems this reaches the optimum to ~1e-7 in the probabilities
  (tests/learners/metric/test_finetune.py compares it with a float64 Newton
  solve of the same objective).
"""

from typing import NamedTuple

import tensorflow as tf

HEADS = ("linear", "cosine", "logreg")

# Chen et al. (2019), methods/baselinefinetune.py: the fine-tuning of Baseline and Baseline++.
FINETUNE_EPOCHS = 100
FINETUNE_BATCH = 4
FINETUNE_SGD = dict(lr=0.01, momentum=0.9, dampening=0.9, weight_decay=0.001)
# Tian et al. (2020), eval/meta_eval.py: scikit-learn's LogisticRegression with its default C.
LOGREG_C = 1.0
LOGREG_STEPS = 300
# Chen et al.'s distLinear normalises features by |x| + 1e-5.
COSINE_EPSILON = 1e-5


class Head(NamedTuple):
    """A classifier head fitted to one task: the task state of `FineTuneBaseline`.

    Attributes:
        kernel: `(E, N)` weights (for `"cosine"`, `g_k v_k / |v_k|`: direction and learned norm).
        bias: `(N,)` (zeros for `"cosine"`, which has none).
    """

    kernel: tf.Tensor
    bias: tf.Tensor


def cosine_scale(num_outputs: int) -> float:
    """Chen et al.'s scale of a cosine classifier: 2 up to 200 classes, else 10 (`backbone.distLinear`)."""
    return 2.0 if num_outputs <= 200 else 10.0


def normalize(features, epsilon=0.0):
    """`x / |x|` per row (`x / (|x| + epsilon)` with an `epsilon`, as Chen et al.'s cosine classifier)."""
    if epsilon:
        return features / (tf.norm(features, axis=-1, keepdims=True) + epsilon)
    return tf.math.l2_normalize(features, axis=-1)


def head_logits(kind: str, head: Head, features, scale=None) -> tf.Tensor:
    """Logits `(n, N)` of a fitted head on features `(n, E)`.

    Args:
        kind: `"linear"`, `"cosine"` or `"logreg"`.
        head: the fitted `Head`.
        features: the embeddings to classify.
        scale: the cosine head's scale `s` (required for `"cosine"`, e.g. `cosine_scale(N)`).

    Returns:
        The logits, in the dtype of `features`.

    Raises:
        ValueError: on an unknown `kind`, or a cosine head without `scale`.

    Example:

    ```python
    head = fit_cosine_head(support_features, support_labels, ways=5, scale=2.0)
    logits = head_logits("cosine", head, query_features, scale=2.0)
    ```
    """
    if kind == "linear":
        return tf.matmul(features, head.kernel) + head.bias
    if kind == "logreg":
        return tf.matmul(normalize(features), head.kernel) + head.bias
    if kind == "cosine":
        if scale is None:
            raise ValueError("A cosine head needs its `scale`. Received: scale=None")
        return scale * tf.matmul(normalize(features, COSINE_EPSILON), head.kernel)
    raise ValueError(f"`kind` must be one of {HEADS}. Received: kind={kind!r}")


def sgd_steps(support_size, epochs: int = FINETUNE_EPOCHS, batch: int = FINETUNE_BATCH) -> tf.Tensor:
    """The number of updates of Chen et al.'s fine-tuning: `epochs * ceil(S / batch)` (an int32 scalar)."""
    support_size = tf.cast(support_size, tf.int32)
    return epochs * ((support_size + batch - 1) // batch)


def _sgd(loss_fn, params, steps, lr, momentum, dampening, weight_decay):
    """PyTorch's `torch.optim.SGD` for `steps` full-batch steps, in a `tf.while_loop`.

    ```
    d = grad + weight_decay * p
    buf = d (first step);  buf = momentum * buf + (1 - dampening) * d (after)
    p = p - lr * buf
    ```
    """

    def body(i, params, buffers):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = loss_fn(params)
        grads = tape.gradient(loss, params)
        first = tf.equal(i, 0)
        new_params, new_buffers = [], []
        for p, g, buf in zip(params, grads, buffers):
            d = g + weight_decay * p
            buf = tf.where(first, d, momentum * buf + (1.0 - dampening) * d)
            new_params.append(p - lr * buf)
            new_buffers.append(buf)
        return i + 1, new_params, new_buffers

    _, params, _ = tf.while_loop(lambda i, p, b: i < steps, body,
                                 (tf.constant(0, tf.int32), list(params), [tf.zeros_like(p) for p in params]))
    return params


def _one_hot(labels, ways, dtype):
    return tf.one_hot(tf.cast(labels, tf.int32), ways, dtype=dtype)


def _mean_cross_entropy(logits, targets):
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits))


def fit_linear_head(features, labels, ways, steps=None, sgd: dict | None = None) -> Head:
    """Baseline's head: a softmax linear classifier fitted by SGD on the support features.

    Args:
        features: support embeddings `(S, E)`.
        labels: int labels `(S,)` in `[0, ways)`.
        ways: the number of classes N (a scalar, may be a tensor).
        steps: full-batch updates (None: `sgd_steps(S)`, Chen et al.'s 100 epochs of batches of 4).
        sgd: `lr`, `momentum`, `dampening`, `weight_decay` (default `FINETUNE_SGD`).

    Returns:
        The fitted `Head` (`(E, N)` kernel, `(N,)` bias), from zeros.

    Example:

    ```python
    head = fit_linear_head(support_features, support_labels, ways=5)
    logits = head_logits("linear", head, query_features)
    ```
    """
    sgd = {**FINETUNE_SGD, **(sgd or {})}
    steps = sgd_steps(tf.shape(features)[0]) if steps is None else steps
    targets = _one_hot(labels, ways, features.dtype)
    dim = tf.shape(features)[-1]
    init = [tf.zeros(tf.stack([dim, ways]), features.dtype), tf.zeros(tf.reshape(ways, [1]), features.dtype)]
    init[0] = tf.ensure_shape(init[0], [features.shape[-1], None])
    loss = lambda p: _mean_cross_entropy(tf.matmul(features, p[0]) + p[1], targets)
    kernel, bias = _sgd(loss, init, steps, **sgd)
    return Head(kernel, bias)


def fit_cosine_head(features, labels, ways, scale, steps=None, sgd: dict | None = None) -> Head:
    """Baseline++'s head: a cosine classifier with a learned norm per class, fitted by SGD.

    ```
    logits_ik = scale * g_k * cos(x_i, v_k)           (weight norm: W_k = g_k v_k / |v_k|)
    ```

    Args:
        features: support embeddings `(S, E)`.
        labels: int labels `(S,)` in `[0, ways)`.
        ways: the number of classes N.
        scale: the scale `s` (Chen et al.: `cosine_scale(N)`, 2 up to 200 classes).
        steps: full-batch updates (None: `sgd_steps(S)`).
        sgd: as in `fit_linear_head`.

    Returns:
        The fitted `Head`: kernel `g_k v_k / |v_k|` `(E, N)`, bias zeros. The
        directions start at the class means of the normalised features, the
        norms at their lengths.

    Example:

    ```python
    head = fit_cosine_head(support_features, support_labels, ways=5, scale=cosine_scale(5))
    ```
    """
    sgd = {**FINETUNE_SGD, **(sgd or {})}
    steps = sgd_steps(tf.shape(features)[0]) if steps is None else steps
    targets = _one_hot(labels, ways, features.dtype)
    unit = normalize(features, COSINE_EPSILON)
    direction = tf.transpose(tf.math.unsorted_segment_mean(unit, tf.cast(labels, tf.int32), ways))  # (E, N)
    norm = tf.norm(direction, axis=0)  # (N,)

    def weights(v, g):
        return v * (g / tf.norm(v, axis=0))

    loss = lambda p: _mean_cross_entropy(scale * tf.matmul(unit, weights(*p)), targets)
    direction, norm = _sgd(loss, [direction, norm], steps, **sgd)
    return Head(weights(direction, norm), tf.zeros_like(norm))


def fit_logistic_regression(features, labels, ways, C: float = LOGREG_C, steps: int = LOGREG_STEPS) -> Head:
    """Multinomial logistic regression on L2-normalised features (scikit-learn's objective, in TensorFlow).

    Minimises `sum_i CE(W^T x_i + b, y_i) + |W|^2 / (2 C)` over `W` `(E, N)`
    and `b` `(N,)` (intercept not penalised), with `x_i` normalised to unit
    length, by Nesterov's accelerated gradient with step `1/L`, `L = (|X|_F^2 +
    S) / 2 + 1/C`, and gradient-based adaptive restart (the momentum restarts
    when a step goes against it), from zeros, for `steps` steps.

    Args:
        features: support embeddings `(S, E)`.
        labels: int labels `(S,)` in `[0, ways)`.
        ways: the number of classes N.
        C: inverse regularisation strength (scikit-learn's `C`, default 1.0).
        steps: optimisation steps.

    Returns:
        The fitted `Head` (on normalised features: use `head_logits("logreg", ...)`).

    Example:

    ```python
    head = fit_logistic_regression(support_features, support_labels, ways=5)
    probabilities = tf.nn.softmax(head_logits("logreg", head, query_features))
    ```
    """
    x = normalize(features)  # (S, E)
    targets = _one_hot(labels, ways, x.dtype)  # (S, N)
    dtype = x.dtype
    inverse_c = tf.constant(1.0 / C, dtype)
    support_size = tf.cast(tf.shape(x)[0], dtype)
    lipschitz = 0.5 * (tf.reduce_sum(tf.square(x)) + support_size) + inverse_c
    step_size = 1.0 / lipschitz

    def gradient(kernel, bias):
        residual = tf.nn.softmax(tf.matmul(x, kernel) + bias) - targets  # (S, N)
        return tf.matmul(x, residual, transpose_a=True) + inverse_c * kernel, tf.reduce_sum(residual, axis=0)

    def body(i, k, kernel, bias, previous_kernel, previous_bias):
        momentum = tf.cast(k - 1, dtype) / tf.cast(k + 2, dtype)
        look_kernel = kernel + momentum * (kernel - previous_kernel)
        look_bias = bias + momentum * (bias - previous_bias)
        grad_kernel, grad_bias = gradient(look_kernel, look_bias)
        new_kernel = look_kernel - step_size * grad_kernel
        new_bias = look_bias - step_size * grad_bias
        # Restart the momentum when the step goes uphill along the gradient (O'Donoghue and Candès 2015).
        uphill = (tf.reduce_sum(grad_kernel * (new_kernel - kernel)) + tf.reduce_sum(grad_bias * (new_bias - bias))) > 0
        k = tf.where(uphill, tf.ones_like(k), k + 1)
        return i + 1, k, new_kernel, new_bias, kernel, bias

    kernel = tf.ensure_shape(tf.zeros(tf.stack([tf.shape(x)[-1], ways]), dtype), [x.shape[-1], None])
    bias = tf.zeros(tf.reshape(ways, [1]), dtype)
    one = tf.constant(1, tf.int32)
    loop = (tf.constant(0, tf.int32), one, kernel, bias, kernel, bias)
    _, _, kernel, bias, _, _ = tf.while_loop(lambda i, *rest: i < steps, body, loop)
    return Head(kernel, bias)
