"""Time of one compiled meta-step (meta-gradient + Adam update): MAML, Prototypical Networks, CNP, HyperNetwork.

    python -m benchmarks.meta_step
    python -m benchmarks.meta_step --configs=maml2_1step --repeats=9
    python -m benchmarks.meta_step --configs=cnp_gp,hypernet_5w1s --repeats=21
    python -m benchmarks.meta_step --strategy=mirrored --logical_devices=2

The step is the trainer's own: `tfmeta.training.loop.MetaTrainer.train_step`
(`strategy.run(learner.meta_gradients)`, mean across replicas, finiteness check,
`optimizer.apply` with Adam, BatchNorm statistics assigned). The image
configurations run a Conv-4 learner on 28x28x1 images, 5-way 1-shot with 15
queries per class (inner lr 0.4 for MAML), on synthetic random meta-batches of
the right shapes (the data pipeline has its own benchmark,
`benchmarks.data_pipeline`). Configurations:

- `maml2_1step`: second-order MAML, 1 inner step;
- `maml2_5step`: second-order MAML, 5 inner steps;
- `fomaml_1step`: first-order MAML, 1 inner step;
- `proto_5w1s`: Prototypical Networks (Conv-4 embedding), one 5-way 1-shot episode with
  15 queries per class per step (the ProtoNet trainer's meta-batch of 1);
- `proto_60w5s`: the same, one 60-way 5-shot episode with 5 queries per class (Snell
  et al.'s Omniglot training episodes);
- `cnp_gp`: a Conditional Neural Process (`ConditionalNeuralProcess` as the `cnp`
  trainer builds it for `--dataset=gp`: encoder MLP 128x4, mean over the context,
  decoder 128-128-2, Adam 1e-4) on one real meta-batch of the trainer's GP tasks
  (the first of its stream, seed 0: context and targets padded to 9 and 18 points
  under masks, 6 and 13 real in that batch);
- `mann_5way`: a memory-augmented network (`trainers.mann`'s defaults: LSTM controller
  200 units, memory 128 x 40, 4 read heads, 20x20 images) on 16 label-offset sequences
  of 5 classes x 10 instances (50 steps each), synthetic images; no PyTorch reference;
- `hypernet_5w1s`: a HyperNetwork classifier head (`HyperHead`, `hypernet
  --generate=head`: Conv-4 embedding, a generator MLP 64-128-65 per class, Adam 1e-3),
  5-way 1-shot tasks with 15 queries per class, synthetic images.
- `rl2_bandit`: RL²'s whole training step (`RL2Trainer.train_step`: a rollout of one
  trial on each of `--meta_batch_size` (250) Bernoulli bandits, k = 10 arms, n = 100
  pulls, GRU 256 units, then 4 PPO epochs of backpropagation through the trial), one
  compiled `tf.function`. Its line also gives `env_steps_per_s` (trials x pulls per
  second of the whole step) and the split `rollout_ms` (the rollout alone, the same
  compiled loop) / `ppo_update_ms` (the rest: GAE and the PPO updates); no PyTorch
  reference.
- `lstm_meta_5w1s`: the LSTM meta-learner as `python -m trainers.lstm_meta` builds it
  (`TRAINER_DEFAULTS["lstm_meta"]`: Conv-4 with a 5-way head, 5 updates of the
  coordinate-wise LSTM, first order in the learner's gradients, 4 tasks per step,
  `--lstm_hidden_size` units in its first layer, default the trainer's 20), 5-way 1-shot
  with 15 queries per class, synthetic images; no PyTorch reference.

The MAML, CNP and HyperNetwork configurations take `--meta_batch_size` tasks per step,
by default their trainers' (`DEFAULT_META_BATCH_SIZE`: 32 for MAML, Finn et al.'s Omniglot
5-way 1-shot; 64 for `cnp_gp`, `TRAINER_DEFAULTS["cnp"]`; 32 for `hypernet_5w1s`,
`CLASSIFICATION_DEFAULTS`); the ProtoNet ones one episode (`ms_per_episode` is printed
for them: one step is one episode).

After compilation and `--warmup` untimed steps, `--repeats` steps are timed one by one;
one line per configuration gives the median:
`config=<name> ms_per_meta_step=<median> peak_rss_mb=<number> start_rss_mb=<number>`,
where `peak_rss_mb` is the process's peak resident memory so far (Linux's `VmHWM`; it
never goes down, so later lines include the earlier configurations) and
`start_rss_mb` its resident memory once the step is built, before the first
(compiling) step: for the first configuration, the fixed cost of the runtime
(TensorFlow alone is ~570 MB here, PyTorch ~220 MB) and the model; the difference
is the step's compilation and working memory.

When PyTorch is importable (it is not a tfmeta dependency), the same step written
idiomatically in PyTorch (`benchmarks.torch_reference`: `torch.func` for MAML, plain
`nn.Module`s batched over the tasks for the CNP and the HyperNetwork head; its
`--check` verifies that they compute tfmeta's loss and gradients; the CNP's gets the
same GP meta-batch, through a `.npz` file) is timed in the same run, in a child
process (PyTorch next to TensorFlow's thread pools in one process runs several
times slower), its repeats interleaved with TensorFlow's (TF step, torch step, TF
step, ...) so that both see the same machine load; two more lines:
`config=torch_<name> ms_per_meta_step=<median> peak_rss_mb=<child's peak> start_rss_mb=<...>` and
`config=<name> tf_over_torch=<ratio of the medians>`.

Threads: TensorFlow gets `--intra_op_threads` / `--inter_op_threads`, by default
the trainers' defaults (1, and one per core: the tasks of the meta-batch run in
parallel); PyTorch gets `--torch_threads` / `--torch_interop_threads`, by default
its own defaults (one thread per core, its fastest here). Each framework runs as
it is fastest, as a user would run it. On a machine busy with other work (more
runnable threads than cores) PyTorch's OpenMP threads wait for each other at every
op and one thread is much faster (measured under a load of 8 on 2 cores: the CNP
step 15 ms with `--torch_threads=1`, 170-1200 ms with 2; the HyperNetwork one, 4
tasks, 1.0-1.6 s against 1.8-5.8 s): pass `--torch_threads=1` there, and for
`hypernet_5w1s` `--torch_hypernet_per_task` (32 tasks one at a time with one
thread: 4.0 s against 9.0 s for the batched pass, whose activations are far out of
cache).
"""

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks.common import check_configs, peak_rss_mb, rss_mb
from tfmeta.training.presets import CLASSIFICATION_DEFAULTS, PRESETS, TRAINER_DEFAULTS
from trainers import common

CONFIGS = {  # name: (learner, ways, shots, queries, inner_steps, first_order)
    "maml2_1step": ("maml", 5, 1, 15, 1, False),
    "maml2_5step": ("maml", 5, 1, 15, 5, False),
    "fomaml_1step": ("maml", 5, 1, 15, 1, True),
    "proto_5w1s": ("protonet", 5, 1, 15, None, None),
    "proto_60w5s": ("protonet", 60, 5, 5, None, None),
    "cnp_gp": ("cnp", None, None, None, None, None),  # GP regression: the points come from the generator
    "hypernet_5w1s": ("hypernet", 5, 1, 15, None, None),
    "mann_5way": ("mann", 5, 10, 0, None, None),  # label-offset sequences: 5 classes x 10 instances, no queries
    "rl2_bandit": ("rl2", None, None, None, None, None),  # RL²: the bandit and policy of RL2_BANDIT
    "lstm_meta_5w1s": ("lstm_meta", 5, 1, 15, TRAINER_DEFAULTS["lstm_meta"]["inner_steps"], True),
}
# `rl2_bandit`: the RL² trainer's whole step (rollout of one trial per task + PPO), k = 10 arms, n = 100 pulls.
RL2_BANDIT = dict(num_arms=10, num_pulls=100, units=256, epochs=4, minibatches=1)
IMAGE_SHAPE, INNER_LR = (28, 28, 1), 0.4
# Tasks per meta-step without --meta_batch_size: the trainers' defaults (ProtoNet: one episode, always).
DEFAULT_META_BATCH_SIZE = {
    "maml": PRESETS["maml_omniglot_5w1s"].config["meta_batch_size"],  # 32
    "cnp": TRAINER_DEFAULTS["cnp"]["meta_batch_size"],  # 64
    "hypernet": CLASSIFICATION_DEFAULTS["meta_batch_size"],  # 32
    "mann": 16,  # Santoro et al.'s (and trainers.mann's default)
    "rl2": 250,  # trials (vectorised bandits) per PPO step, as the README's RL² runs
    "lstm_meta": TRAINER_DEFAULTS["lstm_meta"]["meta_batch_size"],  # 4
}
# The MANN's images: Santoro et al.'s 20x20.
MANN_IMAGE_SHAPE = (20, 20, 1)

flags.DEFINE_list("configs", list(CONFIGS), f"Configurations to run, among {list(CONFIGS)}.")
flags.DEFINE_integer("repeats", 5, "Timed meta-steps per configuration; the median is printed.")
flags.DEFINE_integer("warmup", 1, "Untimed meta-steps after the compiling one.")
flags.DEFINE_integer("meta_batch_size", None, "Tasks per meta-step (global, over all replicas) of the MAML, CNP "
                     "and HyperNetwork configurations; default: their trainers' (DEFAULT_META_BATCH_SIZE).",
                     lower_bound=1)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "tf.distribute strategy.")
flags.DEFINE_integer("logical_devices", 1, "Split the CPU into this many logical devices (mirrored replicas).")
common.define_thread_flags()  # --intra_op_threads / --inter_op_threads, the trainers' own
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: torch's default).", lower_bound=0)
flags.DEFINE_integer("torch_interop_threads", 0, "torch.set_num_interop_threads (0: torch's default).",
                     lower_bound=0)
flags.DEFINE_integer("lstm_hidden_size", None, "lstm_meta_5w1s: units of the LSTM's first layer (0: none); "
                     "default: the trainer's.", lower_bound=0)
flags.DEFINE_bool("torch", True, "Also time the PyTorch reference when PyTorch is importable.")
flags.DEFINE_bool(
    "torch_hypernet_per_task", False,
    "torch reference of hypernet_5w1s: a loop over the tasks instead of one pass over the meta-batch (the same "
    "numbers; measured 2x faster with --torch_threads=1, 3x slower with 2 threads on a busy machine).",
)
flags.DEFINE_bool(
    "torch_vmap", False,
    "torch reference: vmap over the tasks instead of a Python loop (it works, but measured 3-4x slower and 5x "
    "the memory here: vmap over per-task conv weights with double backward).",
)


def random_episode(meta_batch_size: int, ways: int, shots: int, queries: int, seed: int = 0):
    """A synthetic batched `Episode`: images uniform in [0, 1), labels 0..ways-1."""
    import numpy as np

    from tfmeta.data.episode import Episode

    rng = np.random.default_rng(seed)
    labels = lambda n: np.tile(np.repeat(np.arange(ways, dtype=np.int32), n), (meta_batch_size, 1))
    return Episode(
        rng.random((meta_batch_size, ways * shots, *IMAGE_SHAPE), dtype=np.float32),  # (tasks, way*shots, h, w, c)
        labels(shots),  # (tasks, way*shots)
        rng.random((meta_batch_size, ways * queries, *IMAGE_SHAPE), dtype=np.float32),  # (tasks, way*queries, ...)
        labels(queries),  # (tasks, way*queries)
    )


def tasks_per_step(name: str, meta_batch_size: int | None) -> int:
    """One episode for ProtoNet; otherwise `meta_batch_size`, or the trainer's default if None."""
    learner = CONFIGS[name][0]
    if learner == "protonet":
        return 1
    return meta_batch_size or DEFAULT_META_BATCH_SIZE[learner]


def gp_batch(config):
    """The first meta-batch of the `cnp` trainer's GP task stream for `config` (its own
    `train_dataset_fn`, seed `config.seed`): a `TaskEpisode` of numpy arrays, masks included."""
    from tfmeta.training import runner

    batch = next(iter(runner.train_dataset_fn(config)(0)))
    return type(batch)(*(t.numpy() for t in batch))


def amortized_trainer(name: str, strategy, meta_batch_size: int, workdir: str, batch_file: str | None):
    """The trainer and the host meta-batch of `cnp_gp` or `hypernet_5w1s`, built as
    `python -m trainers.cnp` (GP) or `python -m trainers.hypernet --generate=head` (images) build them:
    the runner's `learner_fn` and `optimizer_fn` on the trainer's defaults.

    Args:
        name: the configuration.
        strategy: the `tf.distribute` strategy.
        meta_batch_size: tasks per step.
        workdir: the trainer's directory (nothing is written there).
        batch_file: where to save the GP meta-batch for the torch reference (`numpy.savez`), or None.

    Returns:
        `(trainer, batch)`: a `MetaTrainer` and a `TaskEpisode` (GP) or `Episode` of numpy arrays.
    """
    import numpy as np

    from tfmeta.training import runner
    from tfmeta.training.config import MetaTrainConfig
    from tfmeta.training.loop import MetaTrainer

    learner, ways, shots, queries, _, _ = CONFIGS[name]
    if learner == "cnp":
        config = MetaTrainConfig(variant="cnp", workdir=workdir,
                                 **{**TRAINER_DEFAULTS["cnp"], "meta_batch_size": meta_batch_size})
        batch = gp_batch(config)
        if batch_file is not None:
            np.savez(batch_file, **{field: getattr(batch, field) for field in batch._fields if field != "metadata"})
        input_shape = runner.data_spec(config, None)["input_shape"]
    else:
        config = MetaTrainConfig(variant="hypernet", generate="head", dataset="synthetic", workdir=workdir,
                                 **{**CLASSIFICATION_DEFAULTS, "ways": ways, "shots": shots, "queries": queries,
                                    "meta_batch_size": meta_batch_size})
        batch = random_episode(meta_batch_size, ways, shots, queries)
        input_shape = IMAGE_SHAPE
    trainer = MetaTrainer(config, runner.learner_fn(config, input_shape), train_dataset=None,
                          build_optimizer=runner.optimizer_fn(config), strategy=strategy, verbose=False)
    return trainer, batch


def mann_trainer(strategy, meta_batch_size: int, ways: int, instances: int, workdir: str):
    """The trainer and a synthetic meta-batch of label-offset sequences for `mann_5way`, built as
    `trainers.mann` builds them (`tfmeta.training.sequences`)."""
    import numpy as np

    from tfmeta.data.episode import Episode
    from tfmeta.training.config import MetaTrainConfig
    from tfmeta.training.loop import MetaTrainer
    from tfmeta.training.sequences import build_sequence_learner

    config = MetaTrainConfig(dataset="synthetic", variant="mann", ways=ways, shots=instances, queries=1,
                             meta_batch_size=meta_batch_size, workdir=workdir)
    trainer = MetaTrainer(config, lambda: build_sequence_learner(config, MANN_IMAGE_SHAPE), train_dataset=None,
                          strategy=strategy, verbose=False)
    rng = np.random.default_rng(0)
    length = ways * instances
    labels = np.stack([rng.permutation(np.repeat(np.arange(ways, dtype=np.int32), instances))
                       for _ in range(meta_batch_size)])
    episode = Episode(rng.random((meta_batch_size, length, *MANN_IMAGE_SHAPE), dtype=np.float32), labels,
                      np.zeros((meta_batch_size, 0, *MANN_IMAGE_SHAPE), np.float32),
                      np.zeros((meta_batch_size, 0), np.int32))
    return trainer, episode


def tf_step(name: str, strategy, meta_batch_size: int | None, workdir: str, batch_file: str | None = None):
    """The trainer's compiled meta-step for configuration `name` and its input.

    Args:
        name: the configuration.
        strategy: the `tf.distribute` strategy.
        meta_batch_size: `--meta_batch_size` (None: the trainer's default).
        workdir: the trainer's directory.
        batch_file: `cnp_gp`: where to save its GP meta-batch for the torch reference.

    Returns:
        `(step, batch)`: `step(batch)` runs one meta-update; `batch` is the
        meta-batch (synthetic, or the GP generator's), distributed over the
        strategy's replicas.
    """
    import tensorflow as tf

    from tfmeta.learners import MAML, PrototypicalNetwork
    from tfmeta.models import conv4
    from tfmeta.training.config import MetaTrainConfig
    from tfmeta.training.loop import MetaTrainer

    learner, ways, shots, queries, inner_steps, first_order = CONFIGS[name]
    meta_batch_size = tasks_per_step(name, meta_batch_size)
    if learner == "rl2":
        return rl2_step(strategy, meta_batch_size)
    if learner in ("cnp", "hypernet"):
        trainer, episode = amortized_trainer(name, strategy, meta_batch_size, workdir, batch_file)
    elif learner == "mann":
        trainer, episode = mann_trainer(strategy, meta_batch_size, ways, shots, workdir)
    elif learner == "lstm_meta":  # as trainers.lstm_meta builds it: the runner's learner_fn on its defaults
        from tfmeta.training import runner

        values = {**TRAINER_DEFAULTS["lstm_meta"], "dataset": "synthetic", "ways": ways, "shots": shots,
                  "queries": queries, "meta_batch_size": meta_batch_size}
        if flags.FLAGS.lstm_hidden_size is not None:
            values["lstm_hidden_size"] = flags.FLAGS.lstm_hidden_size
        config = MetaTrainConfig(variant="lstm_meta", workdir=workdir, **values)
        trainer = MetaTrainer(config, runner.learner_fn(config, IMAGE_SHAPE), train_dataset=None,
                              build_optimizer=runner.optimizer_fn(config), strategy=strategy, verbose=False)
        episode = random_episode(meta_batch_size, ways, shots, queries)
    else:
        if learner == "protonet":
            inner_steps, first_order = 1, False  # unused by ProtoNet; the config needs values
        config = MetaTrainConfig(
            dataset="synthetic", ways=ways, shots=shots, queries=queries, meta_batch_size=meta_batch_size,
            inner_steps=inner_steps, inner_lr=INNER_LR, first_order=first_order,
            variant="fomaml" if first_order else "maml", workdir=workdir,
        )
        if learner == "protonet":
            build = lambda: PrototypicalNetwork(conv4(None, IMAGE_SHAPE))
        else:
            build = lambda: MAML(conv4(ways, IMAGE_SHAPE), inner_steps=inner_steps, inner_lr=INNER_LR,
                                 first_order=first_order)
        trainer = MetaTrainer(config, build, train_dataset=None, strategy=strategy, verbose=False)
        episode = random_episode(meta_batch_size, ways, shots, queries)
    # from_tensor_slices, not from_tensors(...).unbatch(): unbatching the GP batch's zero-width
    # `metadata` (tasks, 0) crashes TensorFlow 2.21 (segmentation fault).
    dataset = tf.data.Dataset.from_tensor_slices(tuple(episode)).batch(meta_batch_size).repeat()
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    batch = type(episode)(*batch)

    def step(inputs):
        status, metrics = trainer.train_step(inputs)  # the trainer's own compiled step
        return float(metrics["loss"])  # blocks until the step is done

    return step, batch


def rl2_step(strategy, meta_batch_size: int):
    """RL²'s compiled training step on `RL2_BANDIT` bandits, its first meta-batch, and a rollout-only function.

    Returns:
        `(step, tasks, rollout, environment_steps)`: `rollout(tasks)` runs the step's
        rollout alone (the same compiled `tf.while_loop`), for the split of the time.
    """
    import tensorflow as tf

    from tfmeta.learners.recurrent.rl2 import RL2Trainer, build_rl2, make_env

    config = RL2_BANDIT
    env, trial_steps = make_env("bandit", num_arms=config["num_arms"], num_pulls=config["num_pulls"])
    with strategy.scope():
        learner = build_rl2(env=env, units=config["units"], epochs=config["epochs"], minibatches=config["minibatches"])
    trainer = RL2Trainer(learner, env, trial_steps, meta_batch_size, strategy=strategy)
    tasks = next(iter(trainer.tasks(0)))
    key = tf.constant([0, 0], tf.int64)
    rollout_fn = tf.function(lambda t: strategy.run(lambda x: trainer._replica_rollout(x, key).rewards[-1], (t,)))

    def step(inputs):
        return trainer.train_step(inputs)["loss"]  # blocks until the step is done

    def rollout(inputs):
        return strategy.experimental_local_results(rollout_fn(inputs))[0].numpy()

    return step, tasks, rollout, meta_batch_size * trial_steps


class TorchChild:
    """The PyTorch reference step of configuration `name` (`benchmarks.torch_reference`), in a child process.

    Calling it runs one meta-step there and returns its time in ms (measured by
    the child around the step only).

    Args:
        name: the configuration.
        meta_batch_size: `--meta_batch_size` (None: the trainer's default).
        threads, interop_threads: torch's thread counts (0: its defaults).
        use_vmap: MAML: vmap over the tasks.
        batch_file: `cnp_gp`: the GP meta-batch `tf_step` saved.
        hypernet_per_task: `hypernet_5w1s`: a loop over the tasks instead of one pass over the meta-batch.
    """

    def __init__(self, name: str, meta_batch_size: int | None, threads: int, interop_threads: int, use_vmap: bool,
                 batch_file: str | None = None, hypernet_per_task: bool = False):
        learner, ways, shots, queries, inner_steps, first_order = CONFIGS[name]
        args = [f"--learner={learner}", f"--meta_batch_size={tasks_per_step(name, meta_batch_size)}",
                f"--threads={threads}", f"--interop_threads={interop_threads}"]
        if learner == "cnp":
            args.append(f"--batch_file={batch_file}")
        else:
            args += [f"--ways={ways}", f"--shots={shots}", f"--queries={queries}"]
        if learner == "maml":
            args += [f"--inner_steps={inner_steps}", f"--first_order={first_order}", f"--vmap={use_vmap}"]
        if learner == "hypernet":
            args.append(f"--hypernet_per_task={hypernet_per_task}")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.torch_reference", "--serve", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.banner = self._read("ready")

    def _read(self, prefix: str) -> str:
        line = self.process.stdout.readline().strip()
        if not line.startswith(prefix):
            raise RuntimeError(f"torch reference child: expected {prefix!r}. Received: {line!r}")
        return line

    def _ask(self, command: str, prefix: str) -> str:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read(prefix)

    def __call__(self, inputs=None) -> float:
        return float(self._ask("step", "ms=")[len("ms="):])

    def rss_mb(self) -> tuple:
        """`(peak, start)`: the child's peak resident memory and its memory before the first step, MB."""
        fields = dict(item.split("=") for item in self._ask("rss", "peak_rss_mb=").split())
        return float(fields["peak_rss_mb"]), float(fields["start_rss_mb"])

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


def timed(fn, inputs) -> float:
    start = time.perf_counter()
    fn(inputs)
    return (time.perf_counter() - start) * 1000.0


def main(argv):
    del argv
    flag = flags.FLAGS
    check_configs(flag.configs, CONFIGS)
    if flag.strategy == "default" and flag.logical_devices != 1:
        raise app.UsageError(f"--logical_devices needs --strategy=mirrored. Received: {flag.logical_devices}")

    import tensorflow as tf

    from tfmeta.training import distribute

    common.configure_threads()  # before TensorFlow initialises its devices
    devices = None
    if flag.logical_devices > 1:
        devices = distribute.configure_logical_devices(flag.logical_devices)
    strategy = distribute.make_strategy(flag.strategy, devices=devices)

    use_torch = flag.torch and importlib.util.find_spec("torch") is not None
    if flag.torch and not use_torch:
        print("# torch is not importable: no PyTorch reference (pip install torch to compare).", flush=True)
    print(
        f"# tensorflow {tf.__version__} intra_op_threads={flag.intra_op_threads or 'default'} "
        f"inter_op_threads={flag.inter_op_threads or 'default'} strategy={flag.strategy} "
        f"replicas={strategy.num_replicas_in_sync} meta_batch_size={flag.meta_batch_size or 'trainer_default'}",
        flush=True,
    )

    for name in flag.configs:
        child = None
        with tempfile.TemporaryDirectory(prefix="tfmeta_bench_") as workdir:
            batch_file = os.path.join(workdir, "gp_batch.npz") if CONFIGS[name][0] == "cnp" else None
            step, batch, *rl2_parts = tf_step(name, strategy, flag.meta_batch_size, workdir, batch_file)
            start_rss = rss_mb()
            for _ in range(1 + flag.warmup):  # compile, then warm up
                step(batch)
            if use_torch and CONFIGS[name][0] not in ("mann", "rl2", "lstm_meta"):  # no PyTorch reference of these
                child = TorchChild(name, flag.meta_batch_size, flag.torch_threads, flag.torch_interop_threads,
                                   flag.torch_vmap, batch_file, flag.torch_hypernet_per_task)
                if name == flag.configs[0]:
                    print(f"# {child.banner} vmap={flag.torch_vmap} (child process)", flush=True)
                for _ in range(1 + flag.warmup):
                    child()
            times = {"tf": [], "torch": [], "rollout": []}
            if rl2_parts:
                rl2_parts[0](batch)  # compile the rollout alone
            for _ in range(flag.repeats):  # interleaved: both frameworks see the same load
                times["tf"].append(timed(step, batch))
                if child is not None:
                    times["torch"].append(child())
                if rl2_parts:
                    times["rollout"].append(timed(rl2_parts[0], batch))
        tf_ms = statistics.median(times["tf"])
        if rl2_parts:
            rollout_ms = statistics.median(times["rollout"])
            print(f"# rl2_bandit: k={RL2_BANDIT['num_arms']} arms, n={RL2_BANDIT['num_pulls']} pulls per trial, "
                  f"{tasks_per_step(name, flag.meta_batch_size)} trials per step, GRU {RL2_BANDIT['units']} units, "
                  f"PPO {RL2_BANDIT['epochs']} epochs x {RL2_BANDIT['minibatches']} minibatch", flush=True)
            print(f"config={name} ms_per_meta_step={tf_ms:.1f} env_steps_per_s={rl2_parts[1] / tf_ms * 1000:.0f} "
                  f"rollout_ms={rollout_ms:.1f} ppo_update_ms={tf_ms - rollout_ms:.1f} "
                  f"peak_rss_mb={peak_rss_mb():.0f} start_rss_mb={start_rss:.0f}", flush=True)
            continue
        unit = "ms_per_episode" if CONFIGS[name][0] == "protonet" else "ms_per_meta_step"
        print(f"config={name} {unit}={tf_ms:.1f} peak_rss_mb={peak_rss_mb():.0f} "
              f"start_rss_mb={start_rss:.0f}", flush=True)
        if child is not None:
            torch_ms = statistics.median(times["torch"])
            child_peak, child_start = child.rss_mb()
            print(f"config=torch_{name} {unit}={torch_ms:.1f} peak_rss_mb={child_peak:.0f} "
                  f"start_rss_mb={child_start:.0f}", flush=True)
            print(f"config={name} tf_over_torch={tf_ms / torch_ms:.2f}", flush=True)
            child.close()

if __name__ == "__main__":
    app.run(main)
