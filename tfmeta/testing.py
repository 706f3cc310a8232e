"""Checks for people writing learners and networks: meta-gradients against finite differences.

```python
from tfmeta.testing import finite_difference_error
error = finite_difference_error(my_learner, episode)    # in float64
assert error < 1e-6
```
"""

import numpy as np

from tfmeta.data.episode import Episode


def finite_difference_error(learner, episode: Episode, directions: int = 3, h: float = 1e-6, seed: int = 0,
                            step=0, variables=None) -> float:
    """Largest relative error of `meta_gradients` against central finite differences of `task_loss`.

    Along `directions` random directions `d` of the meta-variables, compares the
    directional derivative `<grad, d>` from `learner.meta_gradients` (one task) with
    `(L(theta + h d) - L(theta - h d)) / (2 h)`, `L` being `learner.task_loss`. Use a
    float64 network: float32 differences are too noisy to see a wrong second
    derivative. The variables are restored afterwards.

    Args:
        learner: a `tfmeta.learners.Learner` with a float64 network.
        episode: one (unbatched) task, an `Episode` or a `TaskEpisode`.
        directions: random directions to check.
        h: the finite-difference step.
        seed: seed of the directions.
        step: the loop's step given to both (multi-step loss weights depend on it).
        variables: a subset of `learner.meta_variables` to move (None: all of
            them), e.g. a conditioning network's, to check its gradient alone.

    Returns:
        The largest `|analytic - numeric| / max(|numeric|, 1e-8)` over the directions.

    Example:

    ```python
    maml = MAML(mlp(dtype="float64"), task="regression", inner_steps=3)
    assert finite_difference_error(maml, episode) < 1e-6
    ```
    """
    grads, _, _ = learner.meta_gradients(type(episode)(*(t[None] for t in episode)), step=step)
    if variables is not None:  # the gradients of the chosen variables, in their order
        by_id = {id(v): g for v, g in zip(learner.meta_variables, grads)}
        grads = [by_id[id(v)] for v in variables]
    else:
        variables = learner.meta_variables
    rng = np.random.default_rng(seed)
    base = [v.numpy() for v in variables]

    def loss_at(offset):
        for v, b, d in zip(variables, base, offset):
            v.assign(b + d)
        return float(learner.task_loss(episode, step=step).loss)

    errors = []
    try:
        for _ in range(directions):
            direction = [rng.standard_normal(b.shape) for b in base]
            analytic = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, direction))
            numeric = (loss_at([h * d for d in direction]) - loss_at([-h * d for d in direction])) / (2 * h)
            errors.append(abs(analytic - numeric) / max(abs(numeric), 1e-8))
    finally:
        for v, b in zip(variables, base):
            v.assign(b)
    return max(errors)
