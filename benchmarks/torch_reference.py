"""An idiomatic PyTorch `torch.func` MAML meta-step, the reference of `benchmarks.meta_step`.

Not part of tfmeta (PyTorch is not a dependency): when `torch` is importable,
`benchmarks.meta_step` starts this module as a child process (`--serve`) and asks it
for one timed step at a time, interleaved with its own TensorFlow steps. A separate
process because TensorFlow's and PyTorch's thread pools in one process slow PyTorch
down several times (measured: ~0.12 s per task alone, 0.7-2 s per task next to TF).

    python -m benchmarks.torch_reference --inner_steps=1 --repeats=5   # standalone
    python -m benchmarks.torch_reference --check   # same meta-gradient as tfmeta?

The step, as in learn2learn / the torch.func MAML tutorial:

* Conv-4 (`[Conv2d(64, 3x3, padding 1) -> BatchNorm2d -> ReLU -> MaxPool2d(2)] x 4
  -> Flatten -> Linear(ways)`), NCHW, float32, BatchNorm in training mode (batch
  statistics on the support and on the query set, like tfmeta's `BatchNorm`);
* inner loop: `torch.func.grad` of the support cross-entropy through
  `torch.func.functional_call`, `phi <- phi - inner_lr * grad`; second order
  because the outer `torch.func.grad` differentiates through the inner one
  (first order: the inner gradients are detached);
* `torch.func.vmap` over the tasks of the meta-batch (BatchNorm's running
  statistics are not tracked, `torch.func.replace_all_batch_norm_modules_`,
  which vmap needs); `vmap=False` loops over the tasks instead;
* the mean of the per-task meta-gradients is applied by `torch.optim.Adam`.

`--check` verifies that this step and tfmeta's compute the same meta-gradient
(so that `benchmarks.meta_step` compares the same work): tfmeta's Conv-4 and
this one with identical weights, the same synthetic meta-batch, second- and
first-order MAML with 1 and 5 inner steps; one line per configuration,
`check=<name> max_rel_diff=<largest over the gradient tensors>`, exit status 1
if one exceeds `--check_tolerance` (see `CHECK_TOLERANCE`).

Example:

```python
step = TorchMetaStep(ways=5, inner_steps=1, first_order=False)
episode = step.random_episode(meta_batch_size=32, shots=1, queries=15)
step(*episode)   # one meta-update; returns the mean query loss
```
"""

import statistics
import sys
import time

import torch
from absl import app, flags
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from benchmarks.common import peak_rss_mb, rss_mb


def conv4(ways: int | None, channels: int = 1, filters: int = 64) -> nn.Module:
    """The standard Conv-4 learner (28x28 input -> 1x1xfilters features -> logits; features if `ways` is None)."""
    layers = []
    for block in range(4):
        layers += [
            nn.Conv2d(channels if block == 0 else filters, filters, 3, padding=1),
            nn.BatchNorm2d(filters, eps=1e-3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
    layers += [nn.Flatten()] + ([] if ways is None else [nn.Linear(filters, ways)])
    return nn.Sequential(*layers)


class TorchMetaStep:
    """One MAML meta-update (meta-gradient over a meta-batch + Adam) in PyTorch.

    Args:
        ways: classes per task.
        inner_steps: inner gradient steps.
        first_order: detach the inner gradients (first-order MAML).
        inner_lr: inner learning rate.
        meta_lr: Adam learning rate.
        use_vmap: vmap over the tasks (else a Python loop over them).
        seed: torch seed of the initialisation.
    """

    def __init__(self, ways=5, inner_steps=1, first_order=False, inner_lr=0.4, meta_lr=1e-3, use_vmap=True, seed=0):
        torch.manual_seed(seed)
        self.ways = ways
        self.model = conv4(ways)
        torch.func.replace_all_batch_norm_modules_(self.model)  # batch statistics only; vmap-safe
        self.model.train()
        self.params = dict(self.model.named_parameters())
        self.optimizer = torch.optim.Adam(self.params.values(), lr=meta_lr)
        self.inner_steps = inner_steps
        self.first_order = first_order
        self.inner_lr = inner_lr
        self.use_vmap = use_vmap
        self._task_grad = grad(self._task_loss, has_aux=True)

    def _loss(self, params, x, y):
        return F.cross_entropy(functional_call(self.model, params, (x,)), y)

    def _task_loss(self, params, support_x, support_y, query_x, query_y):
        fast = params
        for _ in range(self.inner_steps):
            grads = grad(self._loss)(fast, support_x, support_y)
            if self.first_order:
                grads = {name: g.detach() for name, g in grads.items()}
            fast = {name: fast[name] - self.inner_lr * grads[name] for name in fast}
        loss = self._loss(fast, query_x, query_y)
        return loss, loss.detach()

    def meta_gradients(self, support_x, support_y, query_x, query_y):
        """Mean meta-gradient over the tasks (dict name -> tensor) and mean query loss."""
        params = {name: p.detach() for name, p in self.params.items()}
        if self.use_vmap:
            grads, losses = vmap(self._task_grad, in_dims=(None, 0, 0, 0, 0))(
                params, support_x, support_y, query_x, query_y
            )
            return {name: g.mean(0) for name, g in grads.items()}, losses.mean()
        total, losses = None, []
        for task in range(support_x.shape[0]):
            grads, loss = self._task_grad(params, support_x[task], support_y[task], query_x[task], query_y[task])
            total = grads if total is None else {name: total[name] + grads[name] for name in grads}
            losses.append(loss)
        count = support_x.shape[0]
        return {name: g / count for name, g in total.items()}, torch.stack(losses).mean()

    def __call__(self, support_x, support_y, query_x, query_y):
        grads, loss = self.meta_gradients(support_x, support_y, query_x, query_y)
        for name, p in self.params.items():
            p.grad = grads[name]
        self.optimizer.step()
        return loss

    def random_episode(self, meta_batch_size=32, shots=1, queries=15, image_shape=(1, 28, 28), seed=0):
        """Synthetic meta-batch: `(support_x, support_y, query_x, query_y)`, NCHW images."""
        generator = torch.Generator().manual_seed(seed)
        labels = lambda n: torch.arange(self.ways).repeat_interleave(n).repeat(meta_batch_size, 1)
        support_x = torch.rand(meta_batch_size, self.ways * shots, *image_shape, generator=generator)
        query_x = torch.rand(meta_batch_size, self.ways * queries, *image_shape, generator=generator)
        return support_x, labels(shots), query_x, labels(queries)


class TorchProtoStep:
    """One Prototypical Networks update (one episode + Adam) in PyTorch, as Snell et al.'s code.

    The Conv-4 embedding runs in training mode on the support and query sets
    concatenated (one batch, as `protonets`' `model.loss` does); prototypes are
    the class means; logits the negative squared Euclidean distances; Adam.

    Args:
        ways, shots, queries: the episode's shape.
        meta_lr: Adam learning rate.
        seed: torch seed of the initialisation.
    """

    def __init__(self, ways=5, shots=1, queries=15, meta_lr=1e-3, seed=0):
        torch.manual_seed(seed)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.model = conv4(None)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=meta_lr)

    def __call__(self, support_x, support_y, query_x, query_y):
        """One update on one episode (support sorted by class); returns the query loss."""
        embeddings = self.model(torch.cat([support_x, query_x]))
        support = embeddings[: self.ways * self.shots].view(self.ways, self.shots, -1)
        prototypes = support.mean(1)  # (ways, E)
        queries = embeddings[self.ways * self.shots:]
        distances = ((queries[:, None, :] - prototypes[None]) ** 2).sum(-1)  # (Q, ways)
        loss = F.cross_entropy(-distances, query_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def random_episode(self, image_shape=(1, 28, 28), seed=0):
        """A synthetic episode `(support_x, support_y, query_x, query_y)`, NCHW images, sorted by class."""
        generator = torch.Generator().manual_seed(seed)
        labels = lambda n: torch.arange(self.ways).repeat_interleave(n)
        support_x = torch.rand(self.ways * self.shots, *image_shape, generator=generator)
        query_x = torch.rand(self.ways * self.queries, *image_shape, generator=generator)
        return support_x, labels(self.shots), query_x, labels(self.queries)


# ---------------------------------------------------------------- --check

CHECK_CONFIGS = {  # name: (inner_steps, first_order)
    "maml2_1step": (1, False),
    "maml2_5step": (5, False),
    "fomaml_1step": (1, True),
    "fomaml_5step": (5, True),
}
# Largest accepted max |tf - torch| / max |tf| per gradient tensor, by dtype.
# float64 (the default): both frameworks run the same arithmetic to ~1e-16; through
# 5 inner steps at inner lr 0.4 on noise images (a diverging inner loop: the support
# loss climbs from 1.7 to 18) round-off grows by up to ~1e4 (measured in float32:
# torch's float32 meta-gradient is within 1e-4..5e-3 of its float64 one), so 1e-8
# leaves a margin of 1e3 over the 2e-12..5e-12 measured, and a real mismatch
# (BatchNorm epsilon 1e-5 instead of 1e-3, a transposed kernel) gives 1e-4 or more.
# float32: 1e-4 is the aim for float32 round-off, but on these configurations the
# max-pool and ReLU kinks (an argmax or a sign flipped by round-off moves a whole
# entry) and the diverging inner loop amplify it far beyond: measured against
# float64, torch's float32 meta-gradient is off by up to 5e-3 and tfmeta's (oneDNN
# kernels) by up to 0.5 (fomaml_5step; 1.5e-3 with TF_ENABLE_ONEDNN_OPTS=0), so in
# float32 the check is a diagnostic, not a gate.
CHECK_TOLERANCES = {"float64": 1e-8, "float32": 1e-4}
# Entries of a gradient tensor smaller than this fraction of the largest entry
# of all tensors are round-off noise, not gradient (the conv biases: BatchNorm
# right after the convolution cancels them, their exact gradient is zero).
CHECK_FLOOR = 1e-3


def tfmeta_meta_gradients(model, episode, inner_steps: int, first_order: bool, inner_lr: float) -> list:
    """tfmeta's mean meta-gradient over `episode`, through its public API, compiled
    as the trainer's step is. The one place to update when that API changes.

    Returns:
        numpy arrays aligned with `model.trainable_variables` (= `meta_variables`).
    """
    import tensorflow as tf

    from tfmeta.learners import MAML

    maml = MAML(model, inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order)
    gradients = tf.function(lambda batch: maml.meta_gradients(batch, step=0), autograph=False)
    grads, _, _ = gradients(episode)
    return [g.numpy() for g in grads]


def _tf_to_torch(value, torch_shape):
    """A TF weight in torch's layout: conv kernel HWIO -> OIHW, dense (in, out) -> (out, in)."""
    import numpy as np

    if value.ndim == 4:
        value = np.transpose(value, (3, 2, 0, 1))
    elif value.ndim == 2:
        value = value.T
    if tuple(value.shape) != tuple(torch_shape):
        raise ValueError(f"Weight shapes differ after conversion. Received: {value.shape} vs {tuple(torch_shape)}")
    return np.ascontiguousarray(value)


def _torch_to_tf(value):
    """Inverse of `_tf_to_torch` (for the gradients)."""
    import numpy as np

    if value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    return value.T if value.ndim == 2 else value


def meta_gradient_differences(inner_steps: int, first_order: bool, tasks: int = 4, dtype: str = "float64",
                              inner_lr: float = 0.4, seed: int = 0, torch_bn_epsilon: float = 1e-3) -> dict:
    """tfmeta's and this module's meta-gradients on the same weights and meta-batch.

    The meta-batch is `TorchMetaStep.random_episode`'s (5-way 1-shot, 15 queries
    per class, 28x28x1: the shapes `benchmarks.meta_step` times), NCHW for torch
    and NHWC for tfmeta. The learners are tfmeta's `conv4` (NHWC) and `conv4`
    here (NCHW) with the same weights: conv kernels HWIO -> OIHW, the dense
    kernel (in, out) -> Linear (out, in), BatchNorm gamma/beta -> weight/bias,
    all random (conv biases and BatchNorm scales and offsets too, so that a
    swapped or misplaced tensor shows). At 28x28 the map is 1x1 after four
    poolings, so both flattens give the 64 channels in the same order. Both
    BatchNorms normalise with the biased batch variance and epsilon 1e-3.

    Args:
        inner_steps, first_order, inner_lr: the MAML configuration.
        tasks: tasks in the meta-batch.
        dtype: `"float64"` or `"float32"`, for both frameworks.
        seed: seed of the weights and of the meta-batch.
        torch_bn_epsilon: epsilon of torch's BatchNorm (tfmeta's is 1e-3; another
            value shows that the check detects a mismatch).

    Returns:
        `{tfmeta variable path: max |tf - torch| / max |tf|}`, where a tensor's
        `max |tf|` counts as at least `CHECK_FLOOR` times the largest entry of
        all the gradients.
    """
    import numpy as np
    import tensorflow as tf

    from tfmeta.data.episode import Episode
    from tfmeta.models import conv4 as tf_conv4

    if dtype not in CHECK_TOLERANCES:
        raise ValueError(f"`dtype` must be one of {list(CHECK_TOLERANCES)}. Received: dtype={dtype!r}")
    rng = np.random.default_rng(seed)
    ways = 5
    model = tf_conv4(ways, (28, 28, 1), dtype=dtype, seed=seed)
    for variable in model.trainable_variables:  # every weight non-trivial
        shape = tuple(variable.shape)
        if variable.name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif variable.name in ("beta", "bias"):
            value = rng.uniform(-0.5, 0.5, shape)
        else:
            value = variable.numpy()
        variable.assign(value.astype(dtype))

    torch_dtype = getattr(torch, dtype)
    step = TorchMetaStep(ways, inner_steps, first_order, inner_lr=inner_lr, use_vmap=False, seed=seed)
    step.model.to(torch_dtype)
    for module in step.model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = torch_bn_epsilon
    names = list(step.params)  # conv weight, conv bias, bn weight, bn bias (x4), linear weight, bias
    if len(names) != len(model.trainable_variables):
        raise ValueError(f"The learners differ: {len(names)} torch parameters, "
                         f"{len(model.trainable_variables)} tfmeta variables")
    with torch.no_grad():
        for name, variable in zip(names, model.trainable_variables):
            param = step.params[name]
            param.copy_(torch.from_numpy(_tf_to_torch(variable.numpy(), param.shape)))

    # torch: (tasks, way*shots, 1, 28, 28) NCHW, int64 labels; tfmeta: (tasks, way*shots, 28, 28, 1), int32.
    support_x, support_y, query_x, query_y = step.random_episode(tasks, shots=1, queries=15, seed=seed)
    support_x, query_x = support_x.to(torch_dtype), query_x.to(torch_dtype)
    nhwc = lambda x: tf.constant(x.permute(0, 1, 3, 4, 2).numpy())
    labels = lambda y: tf.constant(y.numpy().astype(np.int32))
    episode = Episode(nhwc(support_x), labels(support_y), nhwc(query_x), labels(query_y))
    tf_grads = tfmeta_meta_gradients(model, episode, inner_steps, first_order, inner_lr)
    torch_grads, _ = step.meta_gradients(support_x, support_y, query_x, query_y)

    floor = CHECK_FLOOR * max(float(np.max(np.abs(g))) for g in tf_grads)
    differences = {}
    for variable, tf_grad, name in zip(model.trainable_variables, tf_grads, names):
        torch_grad = _torch_to_tf(torch_grads[name].numpy())
        scale = max(float(np.max(np.abs(tf_grad))), floor)
        differences[variable.path] = float(np.max(np.abs(tf_grad - torch_grad))) / scale
    return differences


def run_check(configs, tasks: int, dtype: str, tolerance: float) -> bool:
    """Prints `check=<name> max_rel_diff=<value> ...` per configuration; returns
    whether every difference is within `tolerance`."""
    ok = True
    for name in configs:
        inner_steps, first_order = CHECK_CONFIGS[name]
        differences = meta_gradient_differences(inner_steps, first_order, tasks=tasks, dtype=dtype)
        worst = max(differences, key=differences.get)
        passed = differences[worst] <= tolerance
        ok = ok and passed
        print(f"check={name} max_rel_diff={differences[worst]:.1e} worst={worst} dtype={dtype} tasks={tasks} "
              f"tolerance={tolerance:g} ok={passed}", flush=True)
    return ok


flags.DEFINE_enum("learner", "maml", ["maml", "protonet"], "The step: MAML's meta-update or a ProtoNet update.")
flags.DEFINE_integer("ways", 5, "Classes per episode.")
flags.DEFINE_integer("shots", 1, "Support examples per class.")
flags.DEFINE_integer("queries", 15, "Query examples per class.")
flags.DEFINE_integer("inner_steps", 1, "Inner steps.")
flags.DEFINE_bool("first_order", False, "First-order MAML.")
flags.DEFINE_integer("meta_batch_size", 32, "Tasks per meta-step.")
flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: torch's default, one per core).")
flags.DEFINE_integer("interop_threads", 0, "torch.set_num_interop_threads (0: torch's default).")
flags.DEFINE_bool("vmap", False, "vmap over the tasks (else a Python loop, faster here).")
flags.DEFINE_integer("repeats", 5, "Standalone: timed steps (after one warm-up step); the median is printed.")
flags.DEFINE_bool("check", False, "Check that tfmeta computes the same meta-gradient as this step (needs "
                  "TensorFlow and tfmeta); exit status 1 if a difference exceeds --check_tolerance.")
flags.DEFINE_list("check_configs", list(CHECK_CONFIGS), f"--check: configurations, among {list(CHECK_CONFIGS)}.")
flags.DEFINE_integer("check_tasks", 4, "--check: tasks in the meta-batch.", lower_bound=1)
flags.DEFINE_enum("check_dtype", "float64", list(CHECK_TOLERANCES), "--check: dtype of both learners.")
flags.DEFINE_float("check_tolerance", None, "--check: largest max |tf - torch| / max |tf| accepted "
                   f"(default by dtype: {CHECK_TOLERANCES}).")
flags.DEFINE_bool("serve", False, "Child mode: read commands from stdin (`step`: run one step and print "
                  "`ms=<time>`; `rss`: print `peak_rss_mb=<n> start_rss_mb=<n>`; `quit`).")


def main(argv):
    del argv
    flag = flags.FLAGS
    if flag.threads:
        torch.set_num_threads(flag.threads)
    if flag.interop_threads:
        torch.set_num_interop_threads(flag.interop_threads)
    if flag.check:
        from benchmarks.common import check_configs

        check_configs(flag.check_configs, CHECK_CONFIGS)
        tolerance = flag.check_tolerance if flag.check_tolerance is not None else CHECK_TOLERANCES[flag.check_dtype]
        sys.exit(0 if run_check(flag.check_configs, flag.check_tasks, flag.check_dtype, tolerance) else 1)
    if flag.learner == "protonet":
        step = TorchProtoStep(flag.ways, flag.shots, flag.queries)
        episode = step.random_episode()
    else:
        step = TorchMetaStep(flag.ways, flag.inner_steps, flag.first_order, use_vmap=flag.vmap)
        episode = step.random_episode(flag.meta_batch_size, shots=flag.shots, queries=flag.queries)
    start_rss = rss_mb()  # runtime, model, optimizer and batch: before any step

    def timed():
        start = time.perf_counter()
        step(*episode)
        return (time.perf_counter() - start) * 1000.0

    if not flag.serve:
        timed()
        median = statistics.median(timed() for _ in range(flag.repeats))
        print(f"config=torch ms_per_meta_step={median:.0f} peak_rss_mb={peak_rss_mb():.0f} "
              f"start_rss_mb={start_rss:.0f}", flush=True)
        return
    print(f"ready torch={torch.__version__} threads={torch.get_num_threads()} "
          f"interop={torch.get_num_interop_threads()}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            print(f"ms={timed():.3f}", flush=True)
        elif command == "rss":
            print(f"peak_rss_mb={peak_rss_mb():.0f} start_rss_mb={start_rss:.0f}", flush=True)
        elif command == "quit":
            break
        else:
            print(f"error unknown command {command!r}", flush=True)


if __name__ == "__main__":
    app.run(main)
