"""`MetaTrainer`: the meta-training loop (compiled step, checkpoints, summaries)."""

import inspect
import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tfmeta import evaluation
from tfmeta.data.episode import Episode
from tfmeta.training import checkpoints, distribute, summaries
from tfmeta.training.config import MetaTrainConfig


class NonFiniteLossError(RuntimeError):
    """The meta-loss or a meta-gradient became NaN or infinite."""


def _state_variables(algorithm) -> list:
    """Variables that `meta_gradients`' averaged state is assigned to.

    `algorithm.state_variables` where the algorithm defines it (MAML++ keeps
    per-step BatchNorm statistics there), else the model's non-trainable ones.
    """
    state = getattr(algorithm, "state_variables", None)
    return list(algorithm.model.non_trainable_variables if state is None else state)


def _algorithm_variables(algorithm, state_variables) -> list:
    """The algorithm's own variables to checkpoint besides the model's.

    Extra meta-variables (learned inner learning rates), state variables that
    are not the model's, and a `meta_step` counter if any (MAML++ anneals
    its multi-step loss with it), so that a resumed run continues exactly.
    """
    model_ids = {id(v) for v in algorithm.model.variables}
    candidates = list(algorithm.extra_variables) + list(state_variables)
    if getattr(algorithm, "meta_step", None) is not None:
        candidates.append(algorithm.meta_step)
    result, seen = [], set(model_ids)
    for variable in candidates:
        if id(variable) not in seen:
            seen.add(id(variable))
            result.append(variable)
    return result


class MetaTrainer:
    """Meta-trains an `Algorithm` on a stream of meta-batches.

    Per step (one `tf.function`, traced once for same-shaped meta-batches):

    1. In replica context (`strategy.run`), each replica computes
       `grads, metrics, state = algorithm.meta_gradients(batch)` on its own
       `meta_batch_size / num_replicas` distinct tasks (means over them).
    2. The loop averages grads, metrics and the non-trainable state (BatchNorm
       moving statistics) across replicas (`strategy.reduce(MEAN)`, an
       all-reduce across workers too): the mean over the global meta-batch,
       as on one device. The learning rate is not scaled with the replicas.
    3. In cross-replica context, if the loss and every gradient are finite,
       the optimizer applies the averaged gradients once to
       `algorithm.meta_variables` (each replica's copy gets the same update)
       and the averaged state is assigned to `state_variables` (MirroredStrategy
       would not synchronise them: they are non-trainable with no aggregation,
       and each replica's batch statistics differ). Otherwise nothing is
       applied and `train()` raises `NonFiniteLossError` without saving. With
       `mixed_float16` the optimizer is a `keras.optimizers.LossScaleOptimizer`:
       non-finite gradients then skip the step and lower the loss scale.

    The learner, the algorithm and the optimizer are built by the given
    factories inside `strategy.scope()` (the learner under
    `config.mixed_precision`'s dtype policy). A checkpoint (model variables,
    the algorithm's extra variables, the optimizer's variables and the step
    counter; also MAML's per-step statistics and `meta_step`) is saved every
    `config.eval_every` steps and at the end; the task streams are pure
    functions of `(seed, step)`, so resuming rebuilds the training stream at
    `start_step=step` and continues exactly. Under `MultiWorkerMirroredStrategy`
    every worker saves (saving is collective) but only the chief writes into
    `workdir` (checkpoints, `config.json`, TensorBoard, validation); the other
    workers write into a temporary directory deleted at the end of `train()`,
    and all restore from the chief's `workdir` (a shared file system).

    Args:
        config: a `MetaTrainConfig` (its workdir, seed, num_iterations,
            eval_every, eval_episodes, eval_inner_steps, resume are used here).
        build_algorithm: `() -> Algorithm`, called inside `strategy.scope()`
            after seeding Keras with `config.seed`.
        train_dataset: `(start_step, input_context) -> tf.data.Dataset` of
            batched `Episode`s; element `i` must be step `start_step + i`.
        eval_dataset: optional `() -> tf.data.Dataset` of validation tasks,
            evaluated every `eval_every` steps (monitoring only: nothing is
            selected on it).
        build_optimizer: optional `() -> keras.optimizers.Optimizer`
            (default: Adam with `config.meta_lr`).
        strategy: a `tf.distribute.Strategy` (default: the current one);
            `config.meta_batch_size` must be divisible by its replica count.
        verbose: print progress (a Progbar on a TTY, plain lines otherwise).
        log_every: steps between TensorBoard training scalars.

    Example:

    ```python
    trainer = MetaTrainer(config, lambda: MAML(mlp(), task="regression"),
                          lambda start, ctx: sinusoid_tasks(5, 10, 25, start_step=start))
    history = trainer.train()
    ```

    Raises:
        ValueError: if `config.meta_batch_size` does not divide among the
            strategy's replicas.
    """

    def __init__(
        self,
        config: MetaTrainConfig,
        build_algorithm,
        train_dataset,
        eval_dataset=None,
        build_optimizer=None,
        strategy=None,
        verbose: bool = True,
        log_every: int | None = None,
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
        self.trace_count = 0

        with self.strategy.scope():
            keras.utils.set_random_seed(self.config.seed)
            with distribute.mixed_precision_scope(self.config.mixed_precision):
                self.algorithm = build_algorithm()
            self.model = self.algorithm.model
            self.optimizer = (
                build_optimizer() if build_optimizer else keras.optimizers.Adam(learning_rate=self.config.meta_lr)
            )
            if self.config.mixed_precision == "mixed_float16" and not isinstance(
                self.optimizer, keras.optimizers.LossScaleOptimizer
            ):
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.algorithm.meta_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.state_variables = _state_variables(self.algorithm)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            algorithm_variables=_algorithm_variables(self.algorithm, self.state_variables),
            optimizer=self.optimizer,
            step=self.step,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            directory=str(self.write_dir / checkpoints.CHECKPOINT_DIR),
            max_to_keep=3,
            step_counter=self.step,
        )
        self._train_step = tf.function(self._step, autograph=False)

    # ---------------------------------------------------------------- the step

    @property
    def loss_scaled(self) -> bool:
        """Whether the optimizer scales the loss (`mixed_float16`)."""
        return isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

    def _replica_step(self, batch):
        """Replica context: mean meta-gradients over this replica's tasks.

        With a loss-scaling optimizer the gradients are those of the loss
        times the current scale (the optimizer divides them back): through
        `meta_gradients(..., loss_scale=)` when the algorithm accepts it,
        else scaled afterwards (no protection from float16 underflow then).
        """
        algorithm = self.algorithm
        if not self.loss_scaled:
            return algorithm.meta_gradients(batch)
        scale = tf.convert_to_tensor(self.optimizer.dynamic_scale)
        if "loss_scale" in inspect.signature(algorithm.meta_gradients).parameters:
            return algorithm.meta_gradients(batch, loss_scale=scale)
        grads, metrics, state = algorithm.meta_gradients(batch)
        return [g * tf.cast(scale, g.dtype) for g in grads], metrics, state

    def _step(self, batch):
        self.trace_count += 1  # Python side effect: counts traces, not calls.
        algorithm, strategy = self.algorithm, self.strategy
        # (1) Per replica, on its share of the tasks.
        grads, metrics, state = strategy.run(self._replica_step, args=(batch,))
        # (2) Mean over replicas (= mean over the global meta-batch: equal shares).
        mean = lambda x: strategy.reduce(tf.distribute.ReduceOp.MEAN, x, axis=None)
        grads = [mean(g) for g in grads]
        metrics = {name: mean(value) for name, value in metrics.items()}
        # Non-float state (seed-generator counters) is taken from the first local replica.
        first = lambda x: strategy.experimental_local_results(x)[0]
        state = [mean(s) if first(s).dtype.is_floating else first(s) for s in state]
        checks = [tf.reduce_all(tf.math.is_finite(metrics["loss"]))]
        if not self.loss_scaled:  # The loss scaler handles non-finite gradients itself.
            checks += [tf.reduce_all(tf.math.is_finite(g)) for g in grads]
        finite = tf.reduce_all(tf.stack(checks))

        # (3) Cross-replica context: one update of every replica's copy.
        def apply():
            if self.loss_scaled and tf.distribute.in_cross_replica_context():
                # LossScaleOptimizer.apply() insists on a replica context; its
                # strategy-agnostic path (unscale, skip if non-finite, adjust
                # the scale) works on the already averaged gradients.
                self.optimizer._common_apply(grads, algorithm.meta_variables)
            else:
                self.optimizer.apply(grads, algorithm.meta_variables)
            for variable, value in zip(self.state_variables, state):
                variable.assign(tf.cast(value, variable.dtype))
            self.step.assign_add(1)
            return tf.constant(True)

        applied = tf.cond(finite, apply, lambda: tf.constant(False))
        return applied, metrics

    # ------------------------------------------------------------ checkpoints

    def restore(self) -> int:
        """Restores the latest checkpoint of the workdir if any; returns the step.

        Every worker of a multi-worker run reads the chief's workdir.
        """
        path = checkpoints.latest_checkpoint(self.workdir)
        if path is not None:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return int(self.step.numpy())

    def save(self) -> str:
        """Saves a checkpoint numbered by the current step; returns its path
        (a temporary one on non-chief workers)."""
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    # --------------------------------------------------------------- training

    def inner_learning_rates(self) -> dict:
        """Scalars describing the inner learning rates (if the algorithm has any)."""
        get = getattr(self.algorithm, "inner_learning_rates", None)
        if get is None:
            return {}
        rates = get()
        if isinstance(rates, dict):
            items = rates.items()
        elif isinstance(rates, (list, tuple)):
            items = ((str(i), r) for i, r in enumerate(rates))
        else:
            items = (("all", rates),)
        return {f"inner_lr/{name}": float(tf.reduce_mean(tf.convert_to_tensor(r))) for name, r in items}

    def validate(self) -> dict:
        """Validation metrics before (0 inner steps) and after adaptation
        (on the chief only: other workers return `{}`)."""
        if self.eval_dataset_fn is None or not self.is_chief:
            return {}
        results = {}
        for label, steps in (("before", 0), ("after", self.config.eval_inner_steps)):
            values = evaluation.evaluate(
                self.algorithm, self.eval_dataset_fn(), num_episodes=self.config.eval_episodes, steps=steps
            )
            for name, value in values.items():
                if name != evaluation.NUM_EPISODES_KEY:
                    results[f"val/{name}_{label}"] = value[0]
        return results

    def train(self, until_step: int | None = None) -> list:
        """Runs (or resumes) meta-training up to `config.num_iterations` steps.

        Args:
            until_step: stop after this step (saving a checkpoint) as if the
                run were interrupted there; None: run to the end.

        Returns:
            The history: one dict of scalars per evaluation (`step`, training
            `loss` and metrics averaged since the previous evaluation,
            validation metrics before/after adaptation, inner learning rates).

        Raises:
            NonFiniteLossError: when the meta-loss or a gradient is not finite
                (nothing is applied or saved; the last checkpoint remains).
            WorkdirConfigMismatchError, FileExistsError: see
                `checkpoints.prepare_workdir`.
        """
        config = self.config
        if self.is_chief:
            checkpoints.prepare_workdir(config)
        else:
            self.write_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._train(until_step)
        finally:
            if not self.is_chief:
                distribute.remove_write_dir(self.write_dir, self.workdir)

    def _train(self, until_step):
        config = self.config
        start = self.restore()
        history = []
        if start >= config.num_iterations:
            self._print(f"Already trained for {start} steps (num_iterations={config.num_iterations}); nothing to do.")
            return history
        if start:
            self._print(f"Resuming from step {start}: {checkpoints.latest_checkpoint(self.workdir)}")
        dataset = self.strategy.distribute_datasets_from_function(
            lambda input_context: self.train_dataset_fn(start, input_context)
        )
        iterator = iter(dataset)
        writer = tf.summary.create_file_writer(str(self.write_dir / checkpoints.TENSORBOARD_DIR))
        progbar = self._progbar()
        window, started = {}, time.perf_counter()
        end = config.num_iterations if until_step is None else min(until_step, config.num_iterations)
        for step in range(start, end):
            try:
                batch = next(iterator)
            except StopIteration:
                raise RuntimeError(
                    f"The training task stream ended at step {step} (it must be infinite). "
                    f"Received: num_iterations={config.num_iterations}"
                ) from None
            applied, metrics = self._train_step(Episode(*batch))
            metrics = {name: float(value) for name, value in metrics.items()}
            if not bool(applied):
                last = checkpoints.latest_checkpoint(self.workdir)
                kept = f"kept the last good checkpoint at {last}" if last else "no checkpoint had been saved yet"
                bad = "nan" if np.isnan(metrics["loss"]) else ("inf" if not np.isfinite(metrics["loss"]) else "finite")
                what = f"meta-loss became {bad}" if bad != "finite" else "a meta-gradient became nan or inf"
                raise NonFiniteLossError(
                    f"{what} at step {step}; {kept}. Check the data, or lower --meta_lr or --inner_lr in a new "
                    f"--workdir (a workdir's settings are fixed). Received: workdir={str(self.workdir)!r}"
                )
            done = step + 1
            for name, value in metrics.items():
                window.setdefault(name, []).append(value)
            if progbar is not None:
                progbar.update(done, [(k, v) for k, v in metrics.items()])
            if done % self.log_every == 0:
                scalars = {f"train/{name}": value for name, value in metrics.items()}
                scalars.update(self.inner_learning_rates())
                summaries.write_scalars(writer, scalars, done)
            if done % config.eval_every == 0 or done == end:
                record = {"step": done}
                record.update({name: float(np.mean(values)) for name, values in window.items()})
                record.update(self.validate())
                record.update(self.inner_learning_rates())
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
        writer.flush()
        return history

    # ---------------------------------------------------------------- helpers

    def _progbar(self):
        if not self.verbose or not self.is_chief or not sys.stdout.isatty():
            return None  # Plain lines at every evaluation instead.
        return keras.utils.Progbar(self.config.num_iterations, stateful_metrics=None)

    def _print(self, line: str) -> None:
        if self.verbose and self.is_chief:
            if sys.stdout.isatty():
                sys.stdout.write("\n")
            print(line, flush=True)


def _printed(name: str) -> bool:
    """Keys of a history record shown on the log line (all go to TensorBoard)."""
    return name not in ("step", "seconds") and not name.startswith(("inner_lr/", "val/loss_"))
