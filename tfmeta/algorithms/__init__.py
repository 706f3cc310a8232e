"""Deprecated: `tfmeta.algorithms` is now `tfmeta.learners`.

Every name still resolves, with a `DeprecationWarning` naming its new home:

| old | new |
| --- | --- |
| `tfmeta.algorithms.MAML` (`ANIL`, `MetaSGD`, `Reptile`, `build`, ...) | `tfmeta.learners.MAML` (...) |
| `tfmeta.algorithms.Algorithm` | `tfmeta.learners.Learner` |
| `tfmeta.algorithms.VARIANTS` | `tfmeta.learners.names()` |
"""

import warnings

_RENAMED = {"Algorithm": "Learner"}


def __getattr__(name):
    import tfmeta.learners as learners  # noqa: PLC0415

    if name == "VARIANTS":
        value = {n: learners.entry(n).build for n in learners.names()}
        new = "tfmeta.learners.names() / tfmeta.learners.entry(name)"
    else:
        new_name = _RENAMED.get(name, name)
        if new_name not in learners.__all__:
            raise AttributeError(f"module 'tfmeta.algorithms' has no attribute {name!r}")
        value = getattr(learners, new_name)
        new = f"tfmeta.learners.{new_name}"
    warnings.warn(f"tfmeta.algorithms.{name} moved to {new}; tfmeta.algorithms will be removed.",
                  DeprecationWarning, stacklevel=2)
    return value
