"""`Ensemble`: several trained learners as one, by averaging their class probabilities.

It lives beside `base.py`, not in a family's folder: its members may be of any
family (MAML and Prototypical Networks and a fine-tuning baseline together).
"""

import tensorflow as tf

from tfmeta.data.episode import Episode
from tfmeta.learners.base import CLASSIFICATION, Learner, TaskLoss


class EnsembleNotTrainableError(TypeError):
    """An `Ensemble` was asked for a meta-training loss or meta-gradients."""


class Ensemble(Learner):
    """The mean of the class probabilities of several trained learners on the same task.

    ```
    adapt(support)    = (member_1.adapt(support), ..., member_M.adapt(support))     the members' task states
    predict(state, x) = log( mean_m softmax(member_m.predict(state_m, x)) )      logits (N classes)
    ```

    `predict` returns the log of the mean probability, so `softmax` of its
    output is the mean probability itself: the evaluator's accuracy and loss
    (cross-entropy of the mean probability) and an export's `probabilities`
    are the ensemble's. Classification only.

    Each member adapts as it is evaluated on its own: learners that adapt in
    steps take their `eval_steps`, and with `training=None` (the ensemble's
    `training_at_test`, which the evaluator and the exporters pass on) each
    member runs its network with its own `training_at_test` (MAML on the batch's
    BatchNorm statistics, metric learners on the moving ones). A `training` of
    True or False applies to every member.

    An ensemble is not meta-trained: train its members, then combine them.
    `meta_variables` and `state_variables` are empty; `task_loss` and
    `meta_gradients` raise `EnsembleNotTrainableError`, so a `MetaTrainer`
    given an ensemble stops at its first step. Its `variables` are the members'
    (an export holds them all).

    Serving: one export answers any number of classes when every member does
    (`any_ways`); otherwise the fixed-size members must agree on their number
    of classes N, and the ensemble serves N-way tasks.

    Args:
        members: two or more (one is allowed) trained classification `Learner`s
            with the same input shape.
        name: the name in configs and model cards.

    Raises:
        TypeError: if a member is not a `Learner`.
        ValueError: if there are no members, one is not a classifier, their input
            shapes differ, or fixed-size members disagree on the number of classes.

    Example:

    ```python
    ensemble = Ensemble.from_workdirs(["runs/protonet_s0", "runs/protonet_s1", "runs/maml_omniglot"])
    evaluate(ensemble, test_tasks, num_episodes=600)                 # mean probability of the three
    export_few_shot_classifier(ensemble, "saved_models", "ensemble")
    ```
    """

    training_at_test = None  # each member its own

    def __init__(self, members, name: str = "ensemble"):
        members = list(members)
        if not members:
            raise ValueError("An Ensemble needs at least one member. Received: members=[]")
        for i, member in enumerate(members):
            if not isinstance(member, Learner):
                raise TypeError(f"Every member must be a tfmeta Learner. Received: members[{i}]={type(member).__name__}")
            if member.task != CLASSIFICATION:
                raise ValueError(
                    f"An Ensemble averages class probabilities: every member must be a classifier. "
                    f"Received: members[{i}] ({member.name}) with task={member.task!r}"
                )
        shapes = [member.input_shape for member in members]
        if len({shape for shape in shapes if shape is not None}) > 1:
            raise ValueError(f"The members must take inputs of the same shape. Received: input shapes {shapes}")
        sizes = sorted({member.ways for member in members if not member.any_ways})
        if len(sizes) > 1:
            raise ValueError(
                f"The members with a fixed number of classes must agree on it. Received: "
                + ", ".join(f"{m.name}: {m.ways}" for m in members if not m.any_ways)
            )
        super().__init__(members[0].model, CLASSIFICATION, name=name)
        self.members = members
        self.any_ways = not sizes  # instance attribute: the exporter reads `learner.any_ways`
        self._ways = sizes[0] if sizes else None
        self._input_shape = next((shape for shape in shapes if shape is not None), None)

    @classmethod
    def from_workdirs(cls, workdirs, data_dir=None, name: str = "ensemble") -> "Ensemble":
        """An ensemble of trained runs: each run's latest checkpoint, restored by `tfmeta.workdir.restore`.

        Args:
            workdirs: run directories (`config.json`, `checkpoints/`).
            data_dir: for runs from before the data spec was recorded (see `restore`).
            name: the ensemble's name.

        Returns:
            The `Ensemble` (members in the order of `workdirs`).

        Raises:
            FileNotFoundError: if a workdir has no config or checkpoint.
            ValueError: as the constructor (a regression run, different input shapes, ...).
        """
        from tfmeta.workdir import restore  # noqa: PLC0415 - tfmeta.workdir imports the learners

        return cls([restore(workdir, data_dir=data_dir).learner for workdir in workdirs], name=name)

    # ------------------------------------------------------------ the contract

    def _member_training(self, member: Learner, training):
        return member.training_at_test if training is None else training

    def adapt(self, support_x, support_y, steps=None, training=None) -> tuple:
        """The members' task states, each adapted as the member is evaluated.

        Args:
            support_x, support_y: the support set.
            steps: must be None (each member that adapts in steps takes its `eval_steps`).
            training: None: each member its own `training_at_test`; a bool: every member.

        Returns:
            A tuple of the members' task states.
        """
        self.check_adapt_steps(steps)
        return tuple(
            member.adapt(tf.cast(support_x, member.model.compute_dtype), support_y, steps=member.eval_steps,
                         training=self._member_training(member, training))
            for member in self.members
        )

    def member_log_probabilities(self, task_state, x, training=None) -> tf.Tensor:
        """Each member's log-probabilities `(M, n, N)` (float32)."""
        return tf.stack([
            tf.nn.log_softmax(tf.cast(member.predict(state, tf.cast(x, member.model.compute_dtype),
                                                     training=self._member_training(member, training)), tf.float32))
            for member, state in zip(self.members, task_state)
        ])

    def predict(self, task_state, x, training=None) -> tf.Tensor:
        """`log(mean_m p_m)`, `(n, N)` float32: the log of the members' mean class probabilities."""
        log_p = self.member_log_probabilities(task_state, x, training)
        return tf.reduce_logsumexp(log_p, axis=0) - tf.math.log(tf.cast(len(self.members), tf.float32))

    def evaluate_task(self, episode: Episode, steps=None, training=None):
        """`Learner.evaluate_task`, each member with its own `training_at_test` by default."""
        return super().evaluate_task(episode, steps=steps, training=training)

    def evaluate_tasks(self, episodes: Episode, steps=None, training=None) -> dict:
        """`Learner.evaluate_tasks`, each member with its own `training_at_test` by default."""
        return super().evaluate_tasks(episodes, steps=steps, training=training)

    def task_loss(self, episode: Episode, step=None, training: bool = True) -> TaskLoss:
        """Raises `EnsembleNotTrainableError`: an ensemble is not meta-trained."""
        raise self._not_trainable("task_loss")

    def meta_gradients(self, episodes: Episode, step=None, training: bool = True, loss_scale=None):
        """Raises `EnsembleNotTrainableError`: an ensemble is not meta-trained."""
        raise self._not_trainable("meta_gradients")

    def _not_trainable(self, what: str) -> EnsembleNotTrainableError:
        return EnsembleNotTrainableError(
            f"An Ensemble is not meta-trained: train its members, then combine them (Ensemble(members) or "
            f"Ensemble.from_workdirs). Received: a call to {what} of {self.name!r} "
            f"({', '.join(m.name for m in self.members)})"
        )

    # ------------------------------------------------------------- variables

    @property
    def meta_variables(self) -> list:
        """None: nothing is meta-learned by the ensemble itself."""
        return []

    @property
    def state_variables(self) -> list:
        """None: evaluation changes no state."""
        return []

    @property
    def variables(self) -> list:
        """Every member's variables, each once (what an export holds)."""
        out, seen = [], set()
        for member in self.members:
            for v in member.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    @property
    def input_shape(self) -> tuple | None:
        return self._input_shape

    @property
    def ways(self) -> int | None:
        """The members' common number of classes, or None if every member serves any number."""
        return self._ways

    def metrics_dtype(self) -> tf.DType:
        return tf.float32

    # ------------------------------------------------------------ description

    def config(self) -> dict:
        return {**super().config(), "members": [member.config() for member in self.members]}

    def card(self) -> dict:
        """The ensemble's config and, per member, its card and whether it normalises with batch statistics."""
        return {"algorithm": self.config(),
                "members": [{**member.card(), "batch_norm_batch_statistics": member.training_at_test}
                            for member in self.members]}

