"""`build_backbone`: one entry point for the built-in networks and user factories."""

import functools
import importlib

import keras

from tfmeta.models.conv4 import conv4
from tfmeta.models.conv4_relation import conv4_relation
from tfmeta.models.resnet12 import resnet12

# name -> factory(ways, input_shape, seed, dtype). Published settings are data, not branches.
BACKBONES = {
    "conv4": functools.partial(conv4, filters=64),  # Vinyals et al. 2016; Finn et al. 2017 (Omniglot)
    "conv4_32": functools.partial(conv4, filters=32),  # Finn et al. 2017 on miniImageNet (32 filters)
    "resnet12": resnet12,  # Lee et al. 2019; Tian et al. 2020 (64-160-320-640)
    "conv4_relation": conv4_relation,  # Sung et al. 2018: feature maps (no head), for Relation Networks
}


def build_backbone(name: str, ways=None, input_shape=(28, 28, 1), seed=None, dtype=None) -> keras.Model:
    """Builds a named network, or calls a factory given by its import path.

    Built-in names (`BACKBONES`): `"conv4"` (64 filters), `"conv4_32"` (32
    filters, MAML's miniImageNet network), `"resnet12"` (64-160-320-640,
    no DropBlock) and `"conv4_relation"` (the embedding of Relation Networks,
    Sung et al. 2018: without a head it outputs feature maps, `(n, 5, 5, 64)`
    on 28x28 inputs, which the relation module compares; the other built-ins
    output flat features). Any other name of the form `"package.module:factory"`
    (`factory` may be a dotted attribute path) is imported and called as
    `factory(ways=ways, input_shape=input_shape, seed=seed, dtype=dtype)`; it
    must return a built `keras.Model`.

    Args:
        name: a key of `BACKBONES` or `"module.path:factory"`.
        ways: size of the output layer (logits); None: no head, the network
            outputs its features (embedding for metric learners).
        input_shape: `(height, width, channels)` of one example.
        seed: integer seed of the initialisers (None: Keras's global state).
        dtype: dtype policy of every layer (e.g. `"float64"`); None: Keras's default.

    Returns:
        A built `keras.Model`.

    Raises:
        ValueError: on an unknown name (the message lists the choices), a
            module that cannot be imported, or a missing attribute; and
            whatever the built-in factories raise on bad arguments.
        TypeError: if the imported object is not callable or does not
            return a built `keras.Model`.

    Example:

    ```python
    learner = build_backbone("conv4", ways=5)                         # MAML on Omniglot
    embedding = build_backbone("resnet12", input_shape=(84, 84, 3))   # (n, 640) features
    custom = build_backbone("my_pkg.models:build", ways=5, seed=0)
    ```
    """
    if isinstance(name, str) and name in BACKBONES:
        return BACKBONES[name](ways=ways, input_shape=input_shape, seed=seed, dtype=dtype)
    if not isinstance(name, str) or name.count(":") != 1 or not all(name.split(":")):
        choices = ", ".join(repr(n) for n in BACKBONES)
        raise ValueError(
            f"Unknown backbone: use one of {choices}, or a factory as 'package.module:function'. "
            f"Received: backbone={name!r}"
        )
    factory = _import_factory(name)
    model = factory(ways=ways, input_shape=input_shape, seed=seed, dtype=dtype)
    if isinstance(model, keras.Model) and model.built:
        return model
    if isinstance(model, keras.Model):
        what = "an unbuilt keras.Model (give it a keras.Input, or call it once before returning it)"
    else:
        what = f"{type(model).__qualname__} {_short_repr(model)}"
    raise TypeError(
        f"The backbone factory {name!r} must return a built keras.Model; it returned {what}. "
        f"Received: backbone={name!r}"
    )


def _short_repr(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _import_factory(name: str):
    """The callable named `"module.path:attribute.path"`."""
    module_name, attribute = name.split(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"Cannot import module {module_name!r} of the backbone factory ({error}). Received: backbone={name!r}"
        ) from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"Module {module_name!r} has no attribute {attribute!r} (the backbone factory). "
                f"Received: backbone={name!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(
            f"The backbone factory {name!r} is not callable: it is a {type(target).__qualname__}. "
            f"Received: backbone={name!r}"
        )
    return target
