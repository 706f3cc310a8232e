"""An idiomatic PyTorch `torch.func` MAML meta-step, the reference of `benchmarks.meta_step`.

Not part of tfmeta (PyTorch is not a dependency): when `torch` is importable,
`benchmarks.meta_step` starts this module as a child process (`--serve`) and asks it
for one timed step at a time, interleaved with its own TensorFlow steps. A separate
process because TensorFlow's and PyTorch's thread pools in one process slow PyTorch
down several times (measured: ~0.12 s per task alone, 0.7-2 s per task next to TF).

    python -m benchmarks.torch_reference --inner_steps=1 --repeats=5   # standalone

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

Example:

```python
step = TorchMetaStep(ways=5, inner_steps=1, first_order=False)
episode = step.random_episode(meta_batch_size=32, shots=1, queries=15)
step(*episode)   # one meta-update; returns the mean query loss
```
"""

import resource
import statistics
import sys
import time

import torch
from absl import app, flags
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F


def conv4(ways: int, channels: int = 1, filters: int = 64) -> nn.Module:
    """The standard Conv-4 learner (28x28 input -> 1x1xfilters features -> logits)."""
    layers = []
    for block in range(4):
        layers += [
            nn.Conv2d(channels if block == 0 else filters, filters, 3, padding=1),
            nn.BatchNorm2d(filters, eps=1e-3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
    layers += [nn.Flatten(), nn.Linear(filters, ways)]
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


flags.DEFINE_integer("inner_steps", 1, "Inner steps.")
flags.DEFINE_bool("first_order", False, "First-order MAML.")
flags.DEFINE_integer("meta_batch_size", 32, "Tasks per meta-step.")
flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: torch's default, one per core).")
flags.DEFINE_integer("interop_threads", 0, "torch.set_num_interop_threads (0: torch's default).")
flags.DEFINE_bool("vmap", False, "vmap over the tasks (else a Python loop, faster here).")
flags.DEFINE_integer("repeats", 5, "Standalone: timed steps (after one warm-up step); the median is printed.")
flags.DEFINE_bool("serve", False, "Child mode: read commands from stdin (`step`: run one step and print "
                  "`ms=<time>`; `rss`: print `peak_rss_mb=<n>`; `quit`).")


def main(argv):
    del argv
    flag = flags.FLAGS
    if flag.threads:
        torch.set_num_threads(flag.threads)
    if flag.interop_threads:
        torch.set_num_interop_threads(flag.interop_threads)
    step = TorchMetaStep(5, flag.inner_steps, flag.first_order, use_vmap=flag.vmap)
    episode = step.random_episode(flag.meta_batch_size, shots=1, queries=15)

    def timed():
        start = time.perf_counter()
        step(*episode)
        return (time.perf_counter() - start) * 1000.0

    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not flag.serve:
        timed()
        median = statistics.median(timed() for _ in range(flag.repeats))
        print(f"config=torch ms_per_meta_step={median:.0f} peak_rss_mb={peak():.0f}", flush=True)
        return
    print(f"ready torch={torch.__version__} threads={torch.get_num_threads()} "
          f"interop={torch.get_num_interop_threads()}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            print(f"ms={timed():.3f}", flush=True)
        elif command == "rss":
            print(f"peak_rss_mb={peak():.0f}", flush=True)
        elif command == "quit":
            break
        else:
            print(f"error unknown command {command!r}", flush=True)


if __name__ == "__main__":
    app.run(main)
