"""Idiomatic PyTorch steps, the references of `benchmarks.meta_step`: MAML (`torch.func`),
Prototypical Networks, a Conditional Neural Process and a HyperNetwork head.

Not part of tfmeta (PyTorch is not a dependency): when `torch` is importable,
`benchmarks.meta_step` starts this module as a child process (`--serve`) and asks it
for one timed step at a time, interleaved with its own TensorFlow steps. A separate
process because TensorFlow's and PyTorch's thread pools in one process slow PyTorch
down several times (measured: ~0.12 s per task alone, 0.7-2 s per task next to TF).

    python -m benchmarks.torch_reference --inner_steps=1 --repeats=5   # standalone
    python -m benchmarks.torch_reference --learner=cnp --meta_batch_size=64
    python -m benchmarks.torch_reference --check   # same meta-gradients as tfmeta?

The MAML step (`TorchMetaStep`), as in learn2learn / the torch.func MAML tutorial:

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

The amortized steps are plain `nn.Module`s taking a meta-batch of tasks as tensors
(one `loss.backward()` and one Adam step per meta-batch):

* `TorchCNPStep`: tfmeta's `ConditionalNeuralProcess` (`cnp` trainer, GP tasks):
  encoder MLP 128x4 on `[x, y]`, the mean over each task's real context points
  (`support_mask`), decoder MLP 128-128-2 on `[r, x]`, stddev
  `0.1 + 0.9 * softplus`, `torch.distributions.Normal`'s log-likelihood averaged
  over each task's real targets (`query_mask`), then over the tasks;
* `TorchHyperHeadStep`: tfmeta's `HyperHead` (`hypernet --generate=head`): the
  Conv-4 embedding on each task's support and query images with BatchNorm
  statistics per task (`TaskBatchNorm2d`), class means, a generator MLP
  64-128-65 (last layer at zero) giving each class's weights and bias on top of
  Prototypical Networks' linear head, cross-entropy; `per_task=True` runs the
  module task by task instead (still one backward pass for the meta-batch).

`--check` verifies that these steps and tfmeta's compute the same meta-gradient
(so that `benchmarks.meta_step` compares the same work): tfmeta's Conv-4 and
this one with identical weights, the same synthetic meta-batch, second- and
first-order MAML with 1 and 5 inner steps; the CNP on the same weights and GP
tasks (context and target counts drawn per task, so the masks differ between
tasks), the HyperHead on the same weights and images. One line per
configuration, `check=<name> max_rel_diff=<largest over the gradient tensors
and the loss>`, exit status 1 if one exceeds the tolerance (`CHECK_TOLERANCES`,
`CHECK_TOLERANCE_OVERRIDES`).

Example:

```python
step = TorchMetaStep(ways=5, inner_steps=1, first_order=False)
episode = step.random_episode(meta_batch_size=32, shots=1, queries=15)
step(*episode)   # one meta-update; returns the mean query loss
```
"""

import contextlib
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



def mlp(input_dim: int, sizes) -> nn.Sequential:
    """`Linear -> ReLU -> ... -> Linear`: ReLU between the layers, the last one linear (tfmeta's `MLP`).

    Args:
        input_dim: size of the inputs' last axis.
        sizes: output sizes of the layers.

    Returns:
        An `nn.Sequential` on `(..., input_dim)` tensors.
    """
    layers = []
    for i, size in enumerate(sizes):
        layers.append(nn.Linear(input_dim, size))
        if i < len(sizes) - 1:
            layers.append(nn.ReLU())
        input_dim = size
    return nn.Sequential(*layers)


class CNP(nn.Module):
    """A Conditional Neural Process on a meta-batch (Garnelo et al., 2018; the reference notebook's sizes).

    `r_i = encoder([x_i, y_i])` (MLP 128-128-128-128), `r` the mean of `r_i` over
    each task's real context points (`context_mask`), `(mu, s) = decoder([r, x_t])`
    (MLP 128-128-2), `sigma = min_stddev + (1 - min_stddev) * softplus(s)`.

    Args:
        x_dim, y_dim: sizes of the inputs and targets.
        encoder_sizes, decoder_sizes: the MLPs' layer sizes (the decoder's last
            layer, `2 * y_dim`, is added).
        min_stddev: lower bound of the predicted stddev.
    """

    def __init__(self, x_dim=1, y_dim=1, encoder_sizes=(128, 128, 128, 128), decoder_sizes=(128, 128),
                 min_stddev=0.1):
        super().__init__()
        self.encoder = mlp(x_dim + y_dim, encoder_sizes)
        self.decoder = mlp(encoder_sizes[-1] + x_dim, tuple(decoder_sizes) + (2 * y_dim,))
        self.min_stddev = min_stddev

    def forward(self, context_x, context_y, target_x, context_mask):
        """`Normal` predictive `(tasks, T, y_dim)` from the context `(tasks, S, .)`, its mask `(tasks, S)`
        and the target inputs `(tasks, T, x_dim)`."""
        encoded = self.encoder(torch.cat([context_x, context_y], dim=-1))  # (tasks, S, R)
        mask = context_mask.unsqueeze(-1)
        representation = (encoded * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (tasks, R)
        representation = representation.unsqueeze(1).expand(-1, target_x.shape[1], -1)  # (tasks, T, R)
        mean, raw = self.decoder(torch.cat([representation, target_x], dim=-1)).chunk(2, dim=-1)
        return torch.distributions.Normal(mean, self.min_stddev + (1.0 - self.min_stddev) * F.softplus(raw))


class TorchCNPStep:
    """One Conditional Neural Process update (a meta-batch of GP tasks + Adam) in PyTorch.

    The loss of a task is the negative log-likelihood per real target point
    (`query_mask`), the step's loss the mean over the tasks, as tfmeta's
    `ConditionalNeuralProcess`; the whole meta-batch in one batched pass.

    Args:
        meta_lr: Adam learning rate (the `cnp` trainer's default, 1e-4).
        min_stddev: lower bound of the predicted stddev.
        seed: torch seed of the initialisation.
    """

    def __init__(self, meta_lr=1e-4, min_stddev=0.1, seed=0):
        torch.manual_seed(seed)
        self.model = CNP(min_stddev=min_stddev)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=meta_lr)

    def loss(self, support_x, support_y, query_x, query_y, support_mask, query_mask):
        """The mean over tasks of `-mean_{real targets} log N(y; mu, sigma^2)`."""
        log_p = self.model(support_x, support_y, query_x, support_mask).log_prob(query_y).sum(-1)  # (tasks, T)
        log_likelihood = (log_p * query_mask).sum(-1) / query_mask.sum(-1).clamp_min(1.0)  # (tasks,)
        return -log_likelihood.mean()

    def __call__(self, *batch):
        """One update on `(support_x, support_y, query_x, query_y, support_mask, query_mask)`; returns the loss."""
        loss = self.loss(*batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @staticmethod
    def random_batch(meta_batch_size=64, num_context=6, num_targets=13, max_context=9, max_targets=18, seed=0):
        """A GP-shaped batch (for standalone runs; `benchmarks.meta_step` passes a real one):
        `x ~ U[-2, 2)`, `y ~ N(0, 1)`, padded to `max_*` points with prefix masks, padding zeros."""
        generator = torch.Generator().manual_seed(seed)
        batch = []
        for count, size in ((num_context, max_context), (num_targets, max_targets)):
            mask = (torch.arange(size) < count).float().repeat(meta_batch_size, 1)  # (tasks, size)
            x = (torch.rand(meta_batch_size, size, 1, generator=generator) * 4 - 2) * mask[..., None]
            y = torch.randn(meta_batch_size, size, 1, generator=generator) * mask[..., None]
            batch.append((x, y, mask))
        (support_x, support_y, support_mask), (query_x, query_y, query_mask) = batch
        return support_x, support_y, query_x, query_y, support_mask, query_mask


class TaskBatchNorm2d(nn.BatchNorm2d):
    """`BatchNorm2d` for a meta-batch: each task normalised by its own batch statistics.

    Input `(tasks * n, C, H, W)`, the tasks' examples consecutive, and the number
    of tasks. The tasks are folded into the channel axis, `(n, tasks * C, H, W)`,
    and normalised by one `F.batch_norm` call (how `F.instance_norm` is built),
    so every (task, channel) gets the mean and biased variance of its own task,
    as if the tasks ran one by one. Each task's running statistics are updated
    from the module's (momentum 0.1: tfmeta's decay 0.9) and the module keeps
    their mean over the tasks, as tfmeta's loop does (torch's running variance
    is the unbiased one, tfmeta's the biased one: neither enters the loss).
    """

    def forward(self, x, tasks: int):
        if not self.training:  # the running statistics: the same for every task
            return super().forward(x)
        rows, channels, height, width = x.shape
        n = rows // tasks
        folded = x.view(tasks, n, channels, height, width).transpose(0, 1).reshape(n, tasks * channels, height, width)
        running_mean, running_var = self.running_mean.repeat(tasks), self.running_var.repeat(tasks)
        out = F.batch_norm(folded, running_mean, running_var, self.weight.repeat(tasks), self.bias.repeat(tasks),
                           training=True, momentum=self.momentum, eps=self.eps)
        with torch.no_grad():
            self.running_mean.copy_(running_mean.view(tasks, channels).mean(0))
            self.running_var.copy_(running_var.view(tasks, channels).mean(0))
        return out.view(n, tasks, channels, height, width).transpose(0, 1).reshape(rows, channels, height, width)


class ConvBlock(nn.Module):
    """`Conv2d(3x3, padding 1) -> TaskBatchNorm2d -> ReLU -> MaxPool2d(2)` on a meta-batch of images."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, 3, padding=1)
        self.norm = TaskBatchNorm2d(filters, eps=1e-3)

    def forward(self, x, tasks: int):
        return F.max_pool2d(F.relu(self.norm(self.conv(x), tasks)), 2)


class TaskConv4(nn.Module):
    """The Conv-4 embedding (`conv4(None)`) on a meta-batch `(tasks, n, C, H, W)` -> `(tasks, n, filters)`:
    one convolution over all the tasks' images per layer, BatchNorm statistics per task."""

    def __init__(self, channels: int = 1, filters: int = 64):
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(channels if i == 0 else filters, filters) for i in range(4))

    def forward(self, x):
        tasks, n = x.shape[:2]
        h = x.flatten(0, 1)
        for block in self.blocks:
            h = block(h, tasks)
        return h.flatten(1).unflatten(0, (tasks, n))


class HyperHeadClassifier(nn.Module):
    """tfmeta's `HyperHead` (`--generate=head`) on a meta-batch: Conv-4 embedding, generated linear head.

    ```
    c_k = mean_{i: y_i = k} e(x_i)                       # per task, per class
    [dw_k, db_k] = G(c_k)                                # G: MLP 64-128-65, output layer at zero initially
    logit_k(x) = (c_k + dw_k) . e(x) - |c_k|^2 / 2 + db_k
    ```

    The embedding sees each task's support and query images in one batch
    (BatchNorm statistics over the task's 80 images).

    Args:
        ways: classes per task.
        generator_sizes: `G`'s hidden sizes.
        filters: Conv-4 channels (the embedding's size on 28x28 inputs).
    """

    def __init__(self, ways=5, generator_sizes=(128,), filters=64):
        super().__init__()
        self.ways = ways
        self.embedding = TaskConv4(filters=filters)
        self.generator = mlp(filters, tuple(generator_sizes) + (filters + 1,))
        nn.init.zeros_(self.generator[-1].weight)  # starts as Prototypical Networks' linear head
        nn.init.zeros_(self.generator[-1].bias)

    def forward(self, support_x, support_y, query_x):
        """Logits `(tasks, Q, ways)` from support `(tasks, S, C, H, W)`, labels `(tasks, S)` and queries."""
        support_size = support_x.shape[1]
        embeddings = self.embedding(torch.cat([support_x, query_x], dim=1))  # (tasks, S + Q, E)
        support, query = embeddings[:, :support_size], embeddings[:, support_size:]
        one_hot = F.one_hot(support_y, self.ways).to(support.dtype)  # (tasks, S, ways)
        means = one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1).clamp_min(1.0)  # (tasks, ways, E)
        offsets = self.generator(means)  # (tasks, ways, E + 1)
        weights = means + offsets[..., :-1]
        biases = -0.5 * means.square().sum(-1) + offsets[..., -1]  # (tasks, ways)
        return query @ weights.transpose(1, 2) + biases.unsqueeze(1)


class TorchHyperHeadStep:
    """One HyperHead update (a meta-batch of 5-way 1-shot tasks + Adam) in PyTorch.

    Cross-entropy of every task's queries, the mean over tasks, one backward
    pass and one Adam step per meta-batch. By default the whole meta-batch goes
    through the module at once (one convolution over every task's images per
    layer); `per_task=True` calls the same module on one task at a time and
    averages the losses: the same numbers, measured 2x faster with one thread on
    a busy 2-core machine (4.0 s against 9.0 s for 32 tasks: the batched
    activations, 2,560 images of 64x28x28 in the first layer, 0.5 GB per tensor,
    are far out of cache) but 3x slower with two (31 s against 9.9 s: OpenMP
    threads waiting for each other at each of its many smaller ops). With the
    loop the BatchNorm running statistics follow the tasks one after the other
    instead of their mean.

    Args:
        ways, shots, queries: the tasks' shape.
        meta_lr: Adam learning rate.
        per_task: a loop over the tasks (else the whole meta-batch in one pass).
        seed: torch seed of the initialisation.
    """

    def __init__(self, ways=5, shots=1, queries=15, meta_lr=1e-3, per_task=False, seed=0):
        torch.manual_seed(seed)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.model = HyperHeadClassifier(ways)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=meta_lr)
        self.per_task = per_task

    def loss(self, support_x, support_y, query_x, query_y):
        """The mean over tasks of each task's query cross-entropy."""
        if self.per_task:
            losses = []
            for task in range(support_x.shape[0]):
                one = slice(task, task + 1)
                logits = self.model(support_x[one], support_y[one], query_x[one])  # (1, Q, ways)
                losses.append(F.cross_entropy(logits[0], query_y[task]))
            return torch.stack(losses).mean()
        logits = self.model(support_x, support_y, query_x)  # equal query counts: the mean over all queries
        return F.cross_entropy(logits.flatten(0, 1), query_y.flatten())

    def __call__(self, support_x, support_y, query_x, query_y):
        """One update on a meta-batch (NCHW images with a leading tasks axis); returns the mean query loss."""
        loss = self.loss(support_x, support_y, query_x, query_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def random_episode(self, meta_batch_size=32, image_shape=(1, 28, 28), seed=0):
        """Synthetic meta-batch `(support_x, support_y, query_x, query_y)`, NCHW images, sorted by class."""
        generator = torch.Generator().manual_seed(seed)
        labels = lambda n: torch.arange(self.ways).repeat_interleave(n).repeat(meta_batch_size, 1)
        support_x = torch.rand(meta_batch_size, self.ways * self.shots, *image_shape, generator=generator)
        query_x = torch.rand(meta_batch_size, self.ways * self.queries, *image_shape, generator=generator)
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


# The amortized learners' checks: in float64 the CNP agrees to round-off (1e-8, as MAML),
# but tfmeta's embedding learners compute their head in float32 whatever the network's
# dtype (`EmbeddingLearner` casts the embeddings), so the HyperHead check is
# float32-accurate: measured 9e-6 (float64 networks, 4 tasks; the worst tensor is the
# generator's output bias, whose exact gradient is 0: float32 noise against `CHECK_FLOOR`;
# the others 1e-6), so 1e-4 leaves a margin of 10, while a real mismatch gives 0.1 or more
# (CNP: a stddev floor of 0 instead of 0.1; HyperHead: BatchNorm epsilon 1e-5 instead of 1e-3).
# In float32 the HyperHead's first-layer gradients are ill-conditioned (BatchNorm right after
# a convolution over 62,720 positions per task): tfmeta's are off by up to 2e-2 from float64
# (torch's by 1e-5), so there, as for MAML, the check is a diagnostic, not a gate.
AMORTIZED_CHECKS = ("cnp_gp", "hypernet_5w1s")
CHECK_TOLERANCE_OVERRIDES = {("hypernet_5w1s", "float64"): 1e-4}  # (name, dtype): tolerance


def tfmeta_learner_gradients(learner, episodes) -> tuple:
    """A tfmeta learner's mean meta-gradient and loss on a meta-batch, compiled as the trainer's step
    computes them (`learner.meta_gradients`).

    Returns:
        `(gradients, loss)`: numpy arrays aligned with `learner.meta_variables`, and a float.
    """
    import tensorflow as tf

    gradients = tf.function(lambda batch: learner.meta_gradients(batch, step=0), autograph=False)
    grads, metrics, _ = gradients(episodes)
    return [g.numpy() for g in grads], float(metrics["loss"])


@contextlib.contextmanager
def _floatx(dtype: str):
    """Keras's default float dtype is `dtype` inside the block (the amortized learners' MLPs take it)."""
    import keras

    previous = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


def _randomise(variables, seed: int) -> None:
    """Gives every weight a non-trivial value: BatchNorm scales in [0.5, 1.5], biases and shifts
    in [-0.5, 0.5], zero-initialised kernels (the head generator's last layer) N(0, 0.1^2);
    the other kernels keep their Glorot values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for variable in variables:
        shape, value = tuple(variable.shape), variable.numpy()
        if variable.name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif variable.name in ("beta", "bias"):
            value = rng.uniform(-0.5, 0.5, shape)
        elif not value.any():
            value = rng.normal(0.0, 0.1, shape)
        variable.assign(value.astype(variable.dtype))


def _copy_to_torch(variables, module: nn.Module) -> list:
    """Copies tfmeta variables into `module`'s parameters, in order (`_tf_to_torch` layouts).

    Returns:
        `[(torch name, tfmeta variable path)]`, aligned.

    Raises:
        ValueError: if the counts or the shapes differ.
    """
    params = list(module.named_parameters())
    if len(params) != len(variables):
        raise ValueError(f"The learners differ: {len(params)} torch parameters, {len(variables)} tfmeta variables")
    with torch.no_grad():
        for (name, param), variable in zip(params, variables):
            param.copy_(torch.from_numpy(_tf_to_torch(variable.numpy(), param.shape)))
    return [(name, variable.path) for (name, _), variable in zip(params, variables)]


def _differences(names, tf_grads, module: nn.Module, tf_loss: float, torch_loss: float) -> dict:
    """`{tfmeta path: max |tf - torch| / max |tf|}` of the gradients (floored as in
    `meta_gradient_differences`) and `{"loss": |tf - torch| / |tf|}`."""
    import numpy as np

    grads = dict(module.named_parameters())
    floor = CHECK_FLOOR * max(float(np.max(np.abs(g))) for g in tf_grads)
    differences = {"loss": abs(tf_loss - torch_loss) / abs(tf_loss)}
    for (name, path), tf_grad in zip(names, tf_grads):
        torch_grad = _torch_to_tf(grads[name].grad.numpy())
        differences[path] = float(np.max(np.abs(tf_grad - torch_grad))) / max(float(np.max(np.abs(tf_grad))), floor)
    return differences


def cnp_gradient_differences(tasks: int = 4, dtype: str = "float64", seed: int = 0,
                             torch_min_stddev: float = 0.1) -> dict:
    """tfmeta's `ConditionalNeuralProcess` and `TorchCNPStep` on the same weights and GP tasks.

    The tasks are `gp_tasks`' (the CNP setting) with counts drawn per task, so
    the masks differ between tasks (a reference that pooled or averaged over the
    whole meta-batch instead of per task would show). Dense kernels `(in, out)`
    -> `Linear` `(out, in)`; every bias random.

    Args:
        tasks: tasks in the meta-batch.
        dtype: `"float64"` or `"float32"`, for both frameworks.
        seed: seed of the weights and of the tasks.
        torch_min_stddev: torch's stddev floor (tfmeta's is 0.1; another value
            shows that the check detects a mismatch).

    Returns:
        `{tfmeta variable path or "loss": relative difference}` (see `_differences`).
    """
    import numpy as np
    import tensorflow as tf

    from tfmeta.data import gp
    from tfmeta.data.episode import TaskEpisode
    from tfmeta.learners import ConditionalNeuralProcess

    with _floatx(dtype):
        learner = ConditionalNeuralProcess(seed=seed)
    _randomise(learner.meta_variables, seed)
    batch = next(iter(gp.gp_tasks(tasks, seed=seed, per_task_counts=True, **gp.CNP_SETTING))).task_episode()
    arrays = [np.array(t, dtype=dtype) for t in tuple(batch)[:6]]  # points and masks
    step = TorchCNPStep(min_stddev=torch_min_stddev, seed=seed)
    step.model.to(getattr(torch, dtype))
    names = _copy_to_torch(learner.meta_variables, step.model)
    episode = TaskEpisode(*(tf.constant(a) for a in arrays), batch.metadata)
    tf_grads, tf_loss = tfmeta_learner_gradients(learner, episode)
    loss = step.loss(*(torch.from_numpy(a) for a in arrays))
    loss.backward()
    return _differences(names, tf_grads, step.model, tf_loss, float(loss.detach()))


def hypernet_gradient_differences(tasks: int = 4, dtype: str = "float64", seed: int = 0,
                                  torch_bn_epsilon: float = 1e-3) -> dict:
    """tfmeta's `HyperHead` on `conv4(None)` and `TorchHyperHeadStep` on the same weights and meta-batch.

    The meta-batch is `TorchHyperHeadStep.random_episode`'s (5-way 1-shot, 15
    queries per class, 28x28x1), NCHW for torch, NHWC for tfmeta; weights
    converted as in `meta_gradient_differences`, the generator's too.

    Args:
        tasks: tasks in the meta-batch.
        dtype: `"float64"` or `"float32"`, the networks' dtype in both frameworks
            (tfmeta's head is float32 either way: see `CHECK_TOLERANCE_OVERRIDES`).
        seed: seed of the weights and of the meta-batch.
        torch_bn_epsilon: epsilon of torch's BatchNorm (tfmeta's is 1e-3).

    Returns:
        `{tfmeta variable path or "loss": relative difference}` (see `_differences`).
    """
    import numpy as np
    import tensorflow as tf

    from tfmeta.data.episode import Episode
    from tfmeta.learners import HyperHead
    from tfmeta.models import conv4 as tf_conv4

    with _floatx(dtype):  # the generator MLP takes Keras's default dtype
        learner = HyperHead(tf_conv4(None, (28, 28, 1), dtype=dtype, seed=seed), seed=seed)
    _randomise(learner.meta_variables, seed)
    step = TorchHyperHeadStep(seed=seed)
    step.model.to(getattr(torch, dtype))
    for block in step.model.embedding.blocks:
        block.norm.eps = torch_bn_epsilon
    names = _copy_to_torch(learner.meta_variables, step.model)
    support_x, support_y, query_x, query_y = step.random_episode(tasks, seed=seed)
    support_x, query_x = support_x.to(getattr(torch, dtype)), query_x.to(getattr(torch, dtype))
    nhwc = lambda x: tf.constant(x.permute(0, 1, 3, 4, 2).numpy())
    labels = lambda y: tf.constant(y.numpy().astype(np.int32))
    episode = Episode(nhwc(support_x), labels(support_y), nhwc(query_x), labels(query_y))
    tf_grads, tf_loss = tfmeta_learner_gradients(learner, episode)
    loss = step.loss(support_x, support_y, query_x, query_y)
    loss.backward()
    return _differences(names, tf_grads, step.model, tf_loss, float(loss.detach()))


def run_check(configs, tasks: int, dtype: str, tolerance: float | None = None) -> bool:
    """Prints `check=<name> max_rel_diff=<value> ...` per configuration; returns
    whether every difference is within the tolerance (`tolerance`, by default
    `CHECK_TOLERANCE_OVERRIDES` or `CHECK_TOLERANCES[dtype]`)."""
    ok = True
    for name in configs:
        if name == "cnp_gp":
            differences = cnp_gradient_differences(tasks=tasks, dtype=dtype)
        elif name == "hypernet_5w1s":
            differences = hypernet_gradient_differences(tasks=tasks, dtype=dtype)
        else:
            inner_steps, first_order = CHECK_CONFIGS[name]
            differences = meta_gradient_differences(inner_steps, first_order, tasks=tasks, dtype=dtype)
        limit = tolerance
        if limit is None:
            limit = CHECK_TOLERANCE_OVERRIDES.get((name, dtype), CHECK_TOLERANCES[dtype])
        worst = max(differences, key=differences.get)
        passed = differences[worst] <= limit
        ok = ok and passed
        print(f"check={name} max_rel_diff={differences[worst]:.1e} worst={worst} dtype={dtype} tasks={tasks} "
              f"tolerance={limit:g} ok={passed}", flush=True)
    return ok


CNP_BATCH_FIELDS = ("support_x", "support_y", "query_x", "query_y", "support_mask", "query_mask")


def load_batch(path: str) -> tuple:
    """A CNP meta-batch saved by `benchmarks.meta_step` (`numpy.savez`): `(support_x, support_y,
    query_x, query_y, support_mask, query_mask)` as float32 tensors."""
    import numpy as np

    with np.load(path) as arrays:
        return tuple(torch.from_numpy(arrays[name]) for name in CNP_BATCH_FIELDS)

flags.DEFINE_enum("learner", "maml", ["maml", "protonet", "cnp", "hypernet"],
                  "The step: MAML's meta-update, a ProtoNet update, a CNP update on GP tasks, a HyperHead update.")
flags.DEFINE_integer("ways", 5, "Classes per episode.")
flags.DEFINE_integer("shots", 1, "Support examples per class.")
flags.DEFINE_integer("queries", 15, "Query examples per class.")
flags.DEFINE_integer("inner_steps", 1, "Inner steps.")
flags.DEFINE_bool("first_order", False, "First-order MAML.")
flags.DEFINE_integer("meta_batch_size", 32, "Tasks per meta-step (MAML, HyperHead; the CNP's random batch).")
flags.DEFINE_string("batch_file", None, "cnp: a `.npz` meta-batch (support_x, support_y, query_x, query_y, "
                    "support_mask, query_mask: `benchmarks.meta_step` writes the GP generator's); default "
                    "`TorchCNPStep.random_batch`.")
flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: torch's default, one per core).")
flags.DEFINE_integer("interop_threads", 0, "torch.set_num_interop_threads (0: torch's default).")
flags.DEFINE_bool("vmap", False, "vmap over the tasks (else a Python loop, faster here).")
flags.DEFINE_bool("hypernet_per_task", False, "hypernet: a loop over the tasks instead of one pass over the "
                  "meta-batch (faster with one thread, slower with two: see TorchHyperHeadStep).")
flags.DEFINE_integer("repeats", 5, "Standalone: timed steps (after one warm-up step); the median is printed.")
flags.DEFINE_bool("check", False, "Check that tfmeta computes the same meta-gradient as this step (needs "
                  "TensorFlow and tfmeta); exit status 1 if a difference exceeds --check_tolerance.")
flags.DEFINE_list("check_configs", list(CHECK_CONFIGS) + list(AMORTIZED_CHECKS),
                  f"--check: configurations, among {list(CHECK_CONFIGS) + list(AMORTIZED_CHECKS)}.")
flags.DEFINE_integer("check_tasks", 4, "--check: tasks in the meta-batch.", lower_bound=1)
flags.DEFINE_enum("check_dtype", "float64", list(CHECK_TOLERANCES),
                  "--check: dtype of both learners.")
flags.DEFINE_float("check_tolerance", None, "--check: largest max |tf - torch| / max |tf| accepted "
                   f"(default by dtype: {CHECK_TOLERANCES}, except {CHECK_TOLERANCE_OVERRIDES}).")
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

        check_configs(flag.check_configs, list(CHECK_CONFIGS) + list(AMORTIZED_CHECKS))
        sys.exit(0 if run_check(flag.check_configs, flag.check_tasks, flag.check_dtype, flag.check_tolerance) else 1)
    if flag.learner == "protonet":
        step = TorchProtoStep(flag.ways, flag.shots, flag.queries)
        episode = step.random_episode()
    elif flag.learner == "cnp":
        step = TorchCNPStep()
        episode = load_batch(flag.batch_file) if flag.batch_file else step.random_batch(flag.meta_batch_size)
    elif flag.learner == "hypernet":
        step = TorchHyperHeadStep(flag.ways, flag.shots, flag.queries, per_task=flag.hypernet_per_task)
        episode = step.random_episode(flag.meta_batch_size)
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
