"""`MetaTrainer`: the meta-training loop (compiled step, checkpoints, summaries, progress)."""

import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from tfmeta.data.episode import as_episode
from tfmeta.evaluation import Evaluator
from tfmeta.learners.base import Learner
from tfmeta.training import checkpoints, distribute, summaries
from tfmeta.training.config import MetaTrainConfig
from tfmeta.training.loss_scale import DynamicLossScale
from tfmeta.training import preemption
from tfmeta.training.preemption import SigtermWatcher

# What one compiled step did (the first value `train_step` returns).
APPLIED, SKIPPED, NON_FINITE = 0, 1, 2


class NonFiniteLossError(RuntimeError):
    """The meta-loss or a meta-gradient became NaN or infinite."""


class MetaTrainer:
    """Meta-trains a `Learner` on a stream of meta-batches.

    Per step (one `tf.function`, traced once for same-shaped meta-batches):

    1. In replica context (`strategy.run`), each replica computes
       `learner.meta_gradients(batch, step=optimizer.iterations, loss_scale=...)`
       on its own `meta_batch_size / num_replicas` distinct tasks. The step the
       learner sees is the number of meta-updates applied so far (the
       optimizer's counter), which its schedules (MAML++'s multi-step loss,
       derivative-order annealing) read: one counter, owned by the loop.
    2. The loop averages gradients, metrics and the learner's state (BatchNorm
       moving statistics) across replicas (`strategy.reduce(MEAN)`, an
       all-reduce across workers too): the mean over the global meta-batch, as
       on one device. Under `mixed_float16` the loss was multiplied by a
       dynamic loss scale (`DynamicLossScale`) and the reduced gradients are
       divided by it here.
    3. In cross-replica context: if the loss and every gradient are finite, the
       optimizer applies the gradients once to `learner.meta_variables` and the
       state is assigned to `learner.state_variables`. A non-finite loss (or,
       without loss scaling, a non-finite gradient) applies nothing and
       `train()` raises `NonFiniteLossError` without saving. Under loss scaling
       non-finite gradients skip the update (the learner's step does not move)
       and halve the scale.

    `step` counts the meta-batches consumed (the position in the task stream,
    and the checkpoint number). A checkpoint (the learner's variables, the
    optimizer's, `step`, the loss scale) is saved every `config.eval_every`
    steps and at the end; the task streams are pure functions of
    `(seed, step)`, so resuming rebuilds the stream at `start_step=step` and
    continues exactly. Under `MultiWorkerMirroredStrategy` every worker saves
    (saving is collective) but only the chief writes into `workdir`; the other
    workers write into a temporary directory deleted at the end of `train()`,
    and all restore from the chief's `workdir` (a shared file system).

    Args:
        config: a `MetaTrainConfig` (its workdir, seed, num_iterations,
            eval_every, eval_episodes, resume, mixed_precision are used here).
        build_learner: `() -> Learner`, called inside `strategy.scope()` after
            seeding Keras with `config.seed`, under the config's dtype policy.
        train_dataset: `(start_step, input_context) -> tf.data.Dataset` of
            batched `Episode`s (or `TaskEpisode`s); element `i` must be step `start_step + i`.
        eval_dataset: optional `() -> tf.data.Dataset` of validation tasks,
            evaluated every `eval_every` steps.
        build_optimizer: optional `() -> keras.optimizers.Optimizer` (default:
            Adam with `config.meta_lr`); a plain optimizer (the loop scales
            the loss itself).
        strategy: a `tf.distribute.Strategy` (default: the current one);
            `config.meta_batch_size` must be divisible by its replica count.
        verbose: print progress (a line at least every `progress_seconds`, and
            one per evaluation).
        log_every: steps between TensorBoard training scalars.
        data_spec: what the learner's inputs are (`input_shape`,
            `preprocessing`, ...), written into `config.json` so that the run
            can be restored without reading its data (`tfmeta.workdir`).
        progress_seconds: seconds between progress lines.
        evaluation_hooks: callables `hook(learner, step, writer)` run on the
            chief after each validation (`writer`: the run's TensorBoard
            writer), e.g. pictures of the predictions on fixed test tasks.

    Raises:
        TypeError: if `config` is not a `MetaTrainConfig` or the built learner
            is not a `Learner`.
        ValueError: if `config.meta_batch_size` does not divide among the
            strategy's replicas, or the optimizer scales losses itself.

    Example:

    ```python
    trainer = MetaTrainer(config, lambda: MAML(mlp(), task="regression"),
                          lambda start, ctx: sinusoid_tasks(5, 10, 25, start_step=start))
    history = trainer.train()
    ```
    """

    def __init__(
        self,
        config: MetaTrainConfig,
        build_learner,
        train_dataset,
        eval_dataset=None,
        build_optimizer=None,
        strategy=None,
        verbose: bool = True,
        log_every: int | None = None,
        data_spec: dict | None = None,
        progress_seconds: float = 10.0,
        evaluation_hooks=(),
    ):
        if not isinstance(config, MetaTrainConfig):
            raise TypeError(f"`config` must be a MetaTrainConfig. Received: config={type(config).__name__}")
        self.config = config.resolved()
        self.workdir = pathlib.Path(self.config.workdir)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.per_replica_batch_size = distribute.check_meta_batch_size(self.config.meta_batch_size, self.strategy)
        self.is_chief = distribute.is_chief(self.strategy)
        # Where this process writes: the workdir on the chief, a temporary directory elsewhere.
        self.write_dir = distribute.write_dir(self.workdir, self.strategy)
        self.train_dataset_fn = train_dataset
        self.eval_dataset_fn = eval_dataset
        self.verbose = verbose
        self.log_every = log_every or max(1, self.config.eval_every // 20)
        self.data_spec = data_spec
        self.progress_seconds = progress_seconds
        self.evaluation_hooks = tuple(evaluation_hooks)
        self.trace_count = 0
        self.restored_from = None  # the checkpoint `restore` restored
        self.preempted = False  # whether the last `train()` stopped on SIGTERM

        with self.strategy.scope():
            keras.utils.set_random_seed(self.config.seed)
            with distribute.mixed_precision_scope(self.config.mixed_precision):
                self.learner = build_learner()
            if not isinstance(self.learner, Learner):
                raise TypeError(f"`build_learner` must return a tfmeta Learner. Received: {type(self.learner).__name__}")
            self.model = self.learner.model
            self.optimizer = (
                build_optimizer() if build_optimizer else keras.optimizers.Adam(learning_rate=self.config.meta_lr)
            )
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                raise ValueError(
                    "The loop scales the loss itself under mixed_precision='mixed_float16': pass a plain optimizer. "
                    f"Received: {type(self.optimizer).__name__}"
                )
            self.optimizer.build(self.learner.meta_variables)
            self.loss_scale = DynamicLossScale() if self.config.mixed_precision == "mixed_float16" else None
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        model_ids = {id(v) for v in self.model.variables}
        parts = dict(
            model=self.model,
            # The learner's variables besides its network's, by position (the name is kept for old checkpoints).
            algorithm_variables=[v for v in self.learner.variables if id(v) not in model_ids],
            optimizer=self.optimizer,
            step=self.step,
        )
        if self.loss_scale is not None:
            parts["loss_scale"] = self.loss_scale
        self.checkpoint = tf.train.Checkpoint(**parts)
        self.manager = self._make_manager()
        # The checkpoint with the best validation metric (kept apart from the last three).
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, directory=str(self.write_dir / checkpoints.BEST_DIR), max_to_keep=1,
        )
        self.evaluator = Evaluator(self.learner)
        self.compute_gradients = tf.function(self._gradients, autograph=False)
        self.train_step = tf.function(self._step, autograph=False)

    @property
    def algorithm(self) -> Learner:
        """The learner (the name before `tfmeta.learners`)."""
        return self.learner

    # ---------------------------------------------------------------- the step

    def _replica_gradients(self, batch):
        scale = None if self.loss_scale is None else self.loss_scale.scale
        return self.learner.meta_gradients(batch, step=self.optimizer.iterations, loss_scale=scale)

    def _gradients(self, batch):
        """The meta-gradients of one global meta-batch: mean over replicas, unscaled.

        Returns:
            `(grads, metrics, state)`: gradients aligned with
            `learner.meta_variables`, metrics and state averaged over the
            global meta-batch. Compiled as `compute_gradients(batch)` (nothing
            is applied), and the first half of `train_step`.
        """
        strategy = self.strategy
        grads, metrics, state = strategy.run(self._replica_gradients, args=(batch,))
        # Mean over replicas (= mean over the global meta-batch: equal shares).
        mean = lambda x: strategy.reduce(tf.distribute.ReduceOp.MEAN, x, axis=None)
        grads = [mean(g) for g in grads]
        if self.loss_scale is not None:
            grads = self.loss_scale.unscale(grads)
        metrics = {name: mean(value) for name, value in metrics.items()}
        # Non-float state (seed-generator counters) is taken from the first local replica.
        first = lambda x: strategy.experimental_local_results(x)[0]
        state = [mean(s) if first(s).dtype.is_floating else first(s) for s in state]
        return grads, metrics, state

    def _step(self, batch):
        self.trace_count += 1  # Python side effect: counts traces, not calls.
        grads, metrics, state = self._gradients(batch)
        finite_loss = tf.reduce_all(tf.math.is_finite(metrics["loss"]))
        finite_grads = DynamicLossScale.all_finite(grads)

        # Cross-replica context: one update of every replica's copy.
        def apply():
            self.optimizer.apply(grads, self.learner.meta_variables)
            for variable, value in zip(self.learner.state_variables, state):
                variable.assign(tf.cast(value, variable.dtype))
            return tf.constant(APPLIED)

        if self.loss_scale is None:
            status = tf.cond(tf.logical_and(finite_loss, finite_grads), apply, lambda: tf.constant(NON_FINITE))
        else:  # Overflowing gradients skip the update and lower the scale.
            status = tf.cond(
                finite_loss,
                lambda: tf.cond(finite_grads, apply, lambda: tf.constant(SKIPPED)),
                lambda: tf.constant(NON_FINITE),
            )
            with tf.control_dependencies([status]):
                self.loss_scale.update(finite_grads)
        with tf.control_dependencies([status]):
            self.step.assign_add(tf.cast(tf.not_equal(status, NON_FINITE), tf.int64))
        return tf.identity(status), metrics

    # ------------------------------------------------------------ checkpoints

    def _make_manager(self) -> tf.train.CheckpointManager:
        """The manager of the periodic checkpoints (the last three kept), reading the state file as it is now."""
        return tf.train.CheckpointManager(self.checkpoint, directory=str(self.write_dir / checkpoints.CHECKPOINT_DIR),
                                          max_to_keep=3, step_counter=self.step)

    def restore(self) -> int:
        """Restores the newest intact checkpoint of the workdir if any; returns the step.

        Damaged newer checkpoints are reported and moved aside
        (`checkpoints.intact_checkpoint`). Every worker of a multi-worker run
        reads the chief's workdir.

        Raises:
            DamagedCheckpointError: if the workdir holds checkpoints and all are damaged.
        """
        path = checkpoints.intact_checkpoint(self.workdir / checkpoints.CHECKPOINT_DIR, log=self._print,
                                             move_damaged=self.is_chief)
        if path is not None:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            self.restored_from = path
            self.manager = self._make_manager()  # damaged checkpoints may have left the state file
        return int(self.step.numpy())

    def save(self) -> str:
        """Saves a checkpoint numbered by the current step; returns its path
        (a temporary one on non-chief workers).

        If writing fails (a full disk, a permission error), the files of the
        failed checkpoint are deleted before the error is raised: the state file
        still names the previous checkpoint, and nothing partial is left for a
        later resume to pick up.
        """
        number = int(self.step.numpy())
        try:
            return self.manager.save(checkpoint_number=number)
        except BaseException:
            checkpoints.remove_checkpoint_files(self.write_dir / checkpoints.CHECKPOINT_DIR / f"ckpt-{number}")
            raise

    @property
    def selects(self) -> bool:
        """Whether validation selects a best checkpoint (`select="best"` or early stopping)."""
        return self.config.select == "best" or self.config.patience > 0

    def selection_key(self) -> tuple[str, bool]:
        """The validation metric that selects, `(history key, higher_is_better)`."""
        name, higher = self.learner.selection_metric()
        return f"val/{name}" + ("" if self.learner.eval_steps is None else "_after"), higher

    def restore_best(self) -> int:
        """Restores the checkpoint with the best validation metric; returns its step.

        Raises:
            FileNotFoundError: if no best checkpoint was saved (no validation ran).
        """
        path = tf.train.latest_checkpoint(str(self.workdir / checkpoints.BEST_DIR))
        if path is None:
            raise FileNotFoundError(f"No best checkpoint in {self.workdir / checkpoints.BEST_DIR} (no validation "
                                    f"ran). Received: workdir={str(self.workdir)!r}")
        self.checkpoint.restore(path).assert_existing_objects_matched()
        return int(self.step.numpy())

    def _select(self, record: dict, selection: dict) -> bool:
        """Keeps the best checkpoint; returns whether to stop early (`patience` evaluations without progress)."""
        key, higher = self.selection_key()
        value = record.get(key)
        if value is None:
            return False
        best = selection.get("value")
        if best is None or (value > best if higher else value < best):
            self.best_manager.save(checkpoint_number=record["step"])
            selection.update(step=record["step"], value=value, metric=key, evaluations_since=0)
        else:
            selection["evaluations_since"] = selection.get("evaluations_since", 0) + 1
        if self.is_chief:
            checkpoints.write_json_atomic(self.workdir / checkpoints.BEST_DIR / checkpoints.BEST_FILE, selection)
        return bool(self.config.patience) and selection["evaluations_since"] >= self.config.patience

    # --------------------------------------------------------------- training

    def validate(self) -> dict:
        """Validation metrics (on the chief only: other workers return `{}`).

        Learners that adapt in steps report `val/<metric>_before` (0 steps) and
        `val/<metric>_after` (`config.eval_inner_steps`); the others `val/<metric>`.
        """
        if self.eval_dataset_fn is None or not self.is_chief:
            return {}
        if self.learner.eval_steps is None:
            settings = (("", None),)
        else:
            settings = (("_before", 0), ("_after", self.config.eval_inner_steps))
        results = {}
        for suffix, steps in settings:
            values = self.evaluator.evaluate(self.eval_dataset_fn(), self.config.eval_episodes, steps=steps)
            for name, value in values.items():
                if name != Evaluator.NUM_EPISODES_KEY:
                    results[f"val/{name}{suffix}"] = value[0]
        return results

    def train(self, until_step: int | None = None) -> list:
        """Runs (or resumes) meta-training up to `config.num_iterations` steps.

        Args:
            until_step: stop after this step (saving a checkpoint) as if the
                run were interrupted there; None: run to the end.

        On SIGTERM (preemption; one process, on one device or under
        `MirroredStrategy`) it saves a checkpoint after the current step and
        returns early with `self.preempted` set (`tfmeta.training.preemption`).

        Returns:
            The history: one dict of scalars per evaluation (`step`, training
            `loss` and metrics averaged since the previous evaluation,
            validation metrics, the learner's scalars, `seconds`).

        Raises:
            DamagedCheckpointError: if the workdir holds checkpoints and every
                one is damaged (see `checkpoints.intact_checkpoint`).
            NonFiniteLossError: when the meta-loss or a gradient is not finite
                (nothing is applied or saved; the last checkpoint remains).
            WorkdirConfigMismatchError, FileExistsError: see
                `checkpoints.prepare_workdir`.
        """
        if self.is_chief:
            checkpoints.prepare_workdir(self.config, self.data_spec)
        else:
            self.write_dir.mkdir(parents=True, exist_ok=True)
        self.preempted = False
        # SIGTERM (preemption) saves and stops between steps (see preemption.py): a flag in one process, TensorFlow's
        # PreemptionCheckpointHandler across the workers of a cluster (created in `_train`, after restoring).
        watcher = SigtermWatcher() if not distribute.is_multi_worker(self.strategy) else None
        try:
            if watcher is None:
                return self._train(until_step)
            with watcher:
                return self._train(until_step, watcher)
        finally:
            if not self.is_chief:
                distribute.remove_write_dir(self.write_dir, self.workdir)

    def _train(self, until_step, watcher=None):
        config = self.config
        start = self.restore()
        history = []
        if start >= config.num_iterations:
            self._print(f"Already trained for {start} steps (num_iterations={config.num_iterations}); nothing to do.")
            return history
        if start:
            self._print(f"Resuming from step {start}: {self.restored_from}")
        handler = None if watcher is not None else preemption.multi_worker_handler(self.strategy, self.manager)
        dataset = self.strategy.distribute_datasets_from_function(
            lambda input_context: self.train_dataset_fn(start, input_context)
        )
        iterator = iter(dataset)
        writer = tf.summary.create_file_writer(str(self.write_dir / checkpoints.TENSORBOARD_DIR))
        progress = _Progress(config.num_iterations, start, self.progress_seconds)
        window, started = {}, time.perf_counter()
        selection = checkpoints.load_selection(self.workdir) if self.selects else {}
        end = config.num_iterations if until_step is None else min(until_step, config.num_iterations)
        path = None  # the last checkpoint saved
        for step in range(start, end):
            try:
                batch = next(iterator)
            except StopIteration:
                raise RuntimeError(
                    f"The training task stream ended at step {step} (it must be infinite). "
                    f"Received: num_iterations={config.num_iterations}"
                ) from None
            status, metrics = self.train_step(as_episode(batch))
            metrics = {name: float(value) for name, value in metrics.items()}
            if int(status) == NON_FINITE:
                raise self._non_finite_error(step, metrics)
            done = step + 1
            for name, value in metrics.items():
                window.setdefault(name, []).append(value)
            if self.verbose and self.is_chief:
                line = progress.update(done, metrics)
                if line:
                    print(line, flush=True)
            if done % self.log_every == 0:
                scalars = {f"train/{name}": value for name, value in metrics.items()}
                scalars.update(self.learner.scalars())
                summaries.write_scalars(writer, scalars, done)
            if done % config.eval_every == 0 or done == end:
                record = {"step": done}
                record.update({name: float(np.mean(values)) for name, values in window.items()})
                record.update(self.validate())
                if self.is_chief:
                    for hook in self.evaluation_hooks:
                        hook(self.learner, done, writer)
                record.update(self.learner.scalars())
                summaries.write_scalars(writer, {k: v for k, v in record.items() if k.startswith("val/")}, done)
                path = self.save()
                record["seconds"] = time.perf_counter() - started
                history.append(record)
                window = {}
                self._print(
                    f"step {done}/{config.num_iterations} | "
                    + " | ".join(f"{k} {v:.4f}" for k, v in record.items() if _printed(k))
                    + f" | {record['seconds']:.1f}s | saved {path}"
                )
                progress.reset_window(done)
                if self.selects and self._select(record, selection):
                    self._print(f"Early stopping at step {done}: no better {selection['metric']} for "
                                f"{config.patience} evaluations (best {selection['value']:.4f} at step "
                                f"{selection['step']}).")
                    break
            if handler is not None:
                try:  # every worker saves at the same step when one of them got SIGTERM
                    handler.save_checkpoint_if_preempted(checkpoint_number=done, check_interval=False)
                except preemption.PreemptedError:
                    self.preempted = True
                    self._print(f"Preempted (SIGTERM) after step {done}: saved "
                                f"{checkpoints.latest_checkpoint(self.workdir)}. Run the same command again to resume.")
                    break
            elif watcher.received:
                if path is None or not path.endswith(f"ckpt-{done}"):  # not saved at this step yet
                    path = self.save()
                self.preempted = True
                self._print(f"Preempted (SIGTERM) after step {done}: saved {path}. Run the same command again to "
                            f"resume from it.")
                break
        writer.flush()
        return history

    # ---------------------------------------------------------------- helpers

    def _non_finite_error(self, step: int, metrics: dict) -> NonFiniteLossError:
        last = checkpoints.latest_checkpoint(self.workdir)
        kept = f"kept the last good checkpoint at {last}" if last else "no checkpoint had been saved yet"
        loss = metrics["loss"]
        what = (f"meta-loss became {'nan' if np.isnan(loss) else 'inf'}" if not np.isfinite(loss)
                else "a meta-gradient became nan or inf")
        return NonFiniteLossError(
            f"{what} at step {step}; {kept}. Check the data, or lower --meta_lr or --inner_lr in a new "
            f"--workdir (a workdir's settings are fixed). Received: workdir={str(self.workdir)!r}"
        )

    def _print(self, line: str) -> None:
        if self.verbose and self.is_chief:
            print(line, flush=True)


class _Progress:
    """A progress line at most every `seconds`: steps/s, the latest metrics, ETA."""

    def __init__(self, total: int, start: int, seconds: float):
        self.total, self.seconds = total, seconds
        self.reset_window(start)

    def reset_window(self, step: int) -> None:
        self.window_start, self.window_time = step, time.perf_counter()

    def update(self, step: int, metrics: dict) -> str | None:
        now = time.perf_counter()
        elapsed = now - self.window_time
        if elapsed < self.seconds:
            return None
        rate = (step - self.window_start) / elapsed
        self.reset_window(step)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        shown = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        return f"step {step}/{self.total} | {rate:.2f} steps/s | {shown} | ETA {_duration(eta)}"


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _printed(name: str) -> bool:
    """Keys of a history record shown on the log line (all go to TensorBoard)."""
    return name not in ("step", "seconds") and not name.startswith(("inner_lr/", "val/loss_"))
