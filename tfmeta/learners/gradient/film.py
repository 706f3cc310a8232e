"""`FiLMGenerator`: task metadata to FiLM parameters that modulate a network's initial weights.

FiLM (Perez et al., 2018) of a Dense layer's pre-activation is a change of its
weights:

```
(W x + b) * (1 + gamma) + beta  ==  (W * (1 + gamma)) x + (b * (1 + gamma) + beta)
```

(`gamma`, `beta` per output unit, `W * (1 + gamma)` scaling each output
column). So MAML can condition on a task's description by modulating the
initialisation it starts the inner loop from; the inner loop then adapts as
usual and second-order meta-gradients reach the generator through the
modulated initial weights.
"""

import keras
import tensorflow as tf


def hidden_dense_indices(model: keras.Model) -> list:
    """`[(kernel index, bias index, units)]` in `model.trainable_variables` of every
    Dense layer of `model` but the last (the hidden layers).

    Raises:
        ValueError: if `model` has no hidden Dense layer, or one without a bias.
    """
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    out = []
    for layer in dense[:-1]:
        if not layer.use_bias:
            raise ValueError(f"FiLM modulates each hidden Dense layer's kernel and bias; layer {layer.name!r} has no "
                             f"bias. Received: use_bias=False")
        out.append((index[id(layer.kernel)], index[id(layer.bias)], int(layer.units)))
    if not out:
        raise ValueError(f"FiLM needs a network with hidden Dense layers (a Dense layer before the last one). "
                         f"Received: Dense layers {[layer.name for layer in dense]}")
    return out


def film_modulate(trainable: list, film: list, layers: list) -> list:
    """The trainable values with each hidden layer's kernel and bias FiLM-modulated.

    Args:
        trainable: the network's trainable values (tensors, in `trainable_variables` order).
        film: `[(gamma, beta)]`, each `(units,)`, one pair per entry of `layers`.
        layers: `hidden_dense_indices(model)`.

    Returns:
        A new list: `kernel * (1 + gamma)` (per output column) and
        `bias * (1 + gamma) + beta` for the listed layers, the rest unchanged.
    """
    out = list(trainable)
    for (kernel, bias, _), (gamma, beta) in zip(layers, film):
        out[kernel] = out[kernel] * (1.0 + gamma)[None, :]
        out[bias] = out[bias] * (1.0 + gamma) + beta
    return out


class FiLMGenerator:
    """A meta-learned MLP from a task's metadata `(M,)` to FiLM `(gamma, beta)` of each hidden layer.

    ReLU hidden layers of `sizes`, then a linear layer to `2 * sum(units)`
    initialised at zero: at the start `gamma = beta = 0`, no modulation.

    Args:
        metadata_dim: `M`, the size of a task's description.
        layers: `hidden_dense_indices(model)` of the modulated network.
        sizes: hidden sizes of the generator.
        dtype: the network's dtype (e.g. `"float64"`).
        seed: integer seed of the hidden layers' initialisers (None: Keras's global state).

    Raises:
        ValueError: if `metadata_dim` or a size is not a positive integer.

    Example:

    ```python
    model = tfmeta.models.mlp()
    generator = FiLMGenerator(2, hidden_dense_indices(model), sizes=(64,))
    film = generator(tf.constant([1.0, 0.5]))    # [(gamma, beta)] per hidden layer, each (40,)
    ```
    """

    def __init__(self, metadata_dim: int, layers: list, sizes=(64,), dtype=None, seed=None):
        named = {"metadata_dim": metadata_dim, **{f"film_sizes[{i}]": s for i, s in enumerate(sizes)}}
        for name, value in named.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        self.metadata_dim = metadata_dim
        self.sizes = tuple(sizes)
        self.units = [units for _, _, units in layers]
        init = lambda i: keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
        net = [keras.Input((metadata_dim,), dtype=dtype)]
        for i, size in enumerate(self.sizes):
            net.append(keras.layers.Dense(size, activation="relu", kernel_initializer=init(i), dtype=dtype,
                                          name=f"film_hidden{i}"))
        net.append(keras.layers.Dense(2 * sum(self.units), kernel_initializer="zeros", dtype=dtype, name="film_out"))
        self.network = keras.Sequential(net, name="film_generator")

    @property
    def variables(self) -> list:
        """The generator's trainable variables (meta-learned)."""
        return list(self.network.trainable_variables)

    def __call__(self, metadata) -> list:
        """`[(gamma, beta)]`, each `(units,)`, for one task's `metadata` `(M,)`."""
        dtype = self.network.trainable_variables[0].dtype
        params = self.network(tf.cast(metadata, dtype)[None, :])[0]  # (2 * sum(units),)
        pieces = tf.split(params, [u for units in self.units for u in (units, units)])
        return [(pieces[2 * i], pieces[2 * i + 1]) for i in range(len(self.units))]
