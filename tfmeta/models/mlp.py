"""`mlp`: the fully connected learner of the sinusoid benchmark."""

import keras


def mlp(input_dim: int = 1, hidden=(40, 40), outputs: int = 1, dtype=None, seed=None) -> keras.Model:
    """A ReLU multilayer perceptron, built (1-40-40-1 for sinusoids, Finn et al., 2017).

    Args:
        input_dim: size of one input.
        hidden: sizes of the hidden ReLU layers.
        outputs: size of the (linear) output layer.
        dtype: dtype policy of every layer (e.g. `"float64"`); None: Keras's default.
        seed: integer seed of the initialisers (None: Keras's global state).

    Returns:
        A built `keras.Sequential` mapping `(n, input_dim)` to `(n, outputs)`.

    Raises:
        ValueError: if a size is not a positive integer.

    Example:

    ```python
    model = tfmeta.models.mlp()
    model(tf.zeros([5, 1])).shape   # (5, 1)
    ```
    """
    sizes = {"input_dim": input_dim, "outputs": outputs, **{f"hidden[{i}]": h for i, h in enumerate(hidden)}}
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    init = lambda i: keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)
    layers = [keras.Input((input_dim,), dtype=dtype)]
    for i, units in enumerate(hidden):
        layers.append(
            keras.layers.Dense(units, activation="relu", kernel_initializer=init(i), dtype=dtype, name=f"dense{i}")
        )
    layers.append(keras.layers.Dense(outputs, kernel_initializer=init(len(hidden)), dtype=dtype, name="output"))
    return keras.Sequential(layers, name="mlp")
