"""Preemption: on SIGTERM a run saves a checkpoint at the current step and stops cleanly.

Cloud schedulers send SIGTERM before taking a (preemptible) machine away. While
`MetaTrainer.train` runs, `SigtermWatcher` turns that signal into a flag; the
loop checks it after every step, saves a checkpoint at that step and returns
with `trainer.preempted` set, and the trainers exit with `PREEMPTED_EXIT_CODE`
(42, the restart code TensorFlow's own failure handling uses). Rerunning the
same command resumes on the same trajectory (the task streams are pure
functions of `(seed, step)`).

Under `MultiWorkerMirroredStrategy` across processes the workers must agree on
the step to save at (saving is collective): there TensorFlow's
`tf.distribute.experimental.PreemptionCheckpointHandler` does it
(`multi_worker_handler`): the worker that gets SIGTERM tells the others through
the coordination service, all save the same step with the run's
`CheckpointManager` (numbered by the step, as every checkpoint), and its exit
function raises `PreemptedError` into the loop. On one device and under
`MirroredStrategy` (one process) the handler is not documented to apply, and a
flag checked between steps is all that is needed (`SigtermWatcher`).
"""

import signal
import threading

import tensorflow as tf

# The exit status of a preempted trainer: not 0 (the run is not finished, so a
# `train && export` chain stops), and the restart code of TensorFlow's failure handling.
PREEMPTED_EXIT_CODE = 42


class PreemptedError(RuntimeError):
    """A run stopped on SIGTERM after saving a checkpoint; the same command resumes it."""


def _raise_preempted():
    raise PreemptedError("Preempted (SIGTERM): the checkpoint is saved.")


def multi_worker_handler(strategy, manager):
    """TensorFlow's `PreemptionCheckpointHandler` for a multi-worker run, saving with `manager`.

    Call `handler.save_checkpoint_if_preempted(checkpoint_number=step)` after
    every step; when any worker got SIGTERM, every worker saves at the same step
    and the call raises `PreemptedError`.

    Args:
        strategy: a `MultiWorkerMirroredStrategy` over a cluster.
        manager: the run's `tf.train.CheckpointManager` (restored from already:
            the handler restores its latest checkpoint again on construction).

    Returns:
        A `tf.distribute.experimental.PreemptionCheckpointHandler`.
    """
    config = tf.distribute.experimental.TerminationConfig(exit_fn=_raise_preempted)
    return tf.distribute.experimental.PreemptionCheckpointHandler(strategy.cluster_resolver, manager,
                                                                  termination_config=config)


class SigtermWatcher:
    """While active (a context manager), SIGTERM sets `received` instead of killing the process.

    Only the main thread can install signal handlers; elsewhere (a run started
    from a worker thread) the watcher does nothing and `installed` is False.
    The previous handler is put back on exit.

    Example:

    ```python
    with SigtermWatcher() as watcher:
        for step in range(start, end):
            train_step()
            if watcher.received:
                save(); break
    ```
    """

    def __init__(self):
        self._event = threading.Event()
        self._previous = None
        self.installed = False

    @property
    def received(self) -> bool:
        """Whether SIGTERM arrived while the watcher was active."""
        return self._event.is_set()

    def _handle(self, signum, frame):
        self._event.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self.installed = False
        return False
