"""Meta-learning algorithms. Every one implements `tfmeta.algorithms.base.Algorithm`."""

from tfmeta.algorithms.anil import ANIL
from tfmeta.algorithms.base import CLASSIFICATION, REGRESSION, Algorithm, Weights, task_loss_and_metrics
from tfmeta.algorithms.inner_loop import InnerLoopResult, inner_loop
from tfmeta.algorithms.maml import MAML
from tfmeta.algorithms.meta_sgd import MetaSGD
from tfmeta.algorithms.reptile import Reptile
from tfmeta.algorithms.schedules import cosine_annealing
from tfmeta.models.batchnorm import batch_norm_layers

# The published MAML++ options; any can be overridden through `build`'s kwargs.
# Per-step BatchNorm weights apply to learners with BatchNorm layers only;
# derivative-order annealing (`first_order_steps`) depends on the run's length,
# so the trainer sets it (the first third of the meta-updates, as in the paper).
MAML_PLUS_PLUS_DEFAULTS = {
    "learn_inner_lr": True, "multi_step_loss": True, "per_step_bn_stats": True, "per_step_bn_weights": True,
}


def _fomaml(model, **kwargs):
    if kwargs.get("first_order", True) is not True:
        raise ValueError(f"variant 'fomaml' is first order. Received: first_order={kwargs['first_order']!r}")
    kwargs["first_order"] = True
    return MAML(model, **kwargs)


def _maml_plus_plus(model, **kwargs):
    defaults = dict(MAML_PLUS_PLUS_DEFAULTS)
    if not batch_norm_layers(model):
        defaults["per_step_bn_weights"] = False
    return MAML(model, **{**defaults, **kwargs})


VARIANTS = {
    "maml": MAML,
    "fomaml": _fomaml,
    "anil": ANIL,
    "metasgd": MetaSGD,
    "maml++": _maml_plus_plus,
    "reptile": Reptile,
}


def build(variant: str, model, **kwargs) -> Algorithm:
    """Builds a gradient-based meta-learning algorithm by name.

    Args:
        variant: one of `"maml"`, `"fomaml"`, `"anil"`, `"metasgd"`,
            `"maml++"` (MAML with LSLR, multi-step loss, per-step
            BatchNorm statistics and, for learners with BatchNorm, per-step
            BatchNorm weights and biases), `"reptile"`.
        model: the learner, a built `keras.Model`.
        **kwargs: passed to the algorithm (`task`, `inner_steps`, `inner_lr`,
            `eval_inner_steps`, ...).

    Returns:
        The `Algorithm`.

    Raises:
        ValueError: if `variant` is unknown.

    Example:

    ```python
    algo = tfmeta.algorithms.build("maml++", tfmeta.models.conv4(ways=5), inner_steps=5, inner_lr=0.1)
    algo.config()["variant"]   # "maml++"
    ```
    """
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {sorted(VARIANTS)}. Received: variant={variant!r}")
    return VARIANTS[variant](model, **kwargs)


__all__ = [
    "ANIL", "Algorithm", "CLASSIFICATION", "MAML", "MAML_PLUS_PLUS_DEFAULTS", "MetaSGD", "REGRESSION", "Reptile",
    "VARIANTS", "Weights", "InnerLoopResult", "build", "cosine_annealing", "inner_loop", "task_loss_and_metrics",
]
