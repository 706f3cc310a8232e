"""Preemption: on SIGTERM a run saves a checkpoint at the current step and stops cleanly.

Cloud schedulers send SIGTERM before taking a (preemptible) machine away. While
`MetaTrainer.train` runs, `SigtermWatcher` turns that signal into a flag; the
loop checks it after every step, saves a checkpoint at that step and returns
with `trainer.preempted` set, and the trainers exit with `PREEMPTED_EXIT_CODE`
(42, the restart code TensorFlow's own failure handling uses). Rerunning the
same command resumes on the same trajectory (the task streams are pure
functions of `(seed, step)`).

Why not `tf.distribute.experimental.PreemptionCheckpointHandler`: it is
documented for `MultiWorkerMirroredStrategy` and `TPUStrategy` only, keeps its
own run counter in the checkpoint (our step counter already is the position in
the task stream) and restores on construction, bypassing the damaged-checkpoint
checks of `checkpoints.intact_checkpoint`. On one device and under
`MirroredStrategy` (one process) a flag checked between steps is all that is
needed. Multi-worker runs (where the workers must agree on the step to save
at) keep the default SIGTERM behaviour and resume from the last periodic
checkpoint.
"""

import signal
import threading

# The exit status of a preempted trainer: not 0 (the run is not finished, so a
# `train && export` chain stops), and the restart code of TensorFlow's failure handling.
PREEMPTED_EXIT_CODE = 42


class PreemptedError(RuntimeError):
    """A run stopped on SIGTERM after saving a checkpoint; the same command resumes it."""


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
