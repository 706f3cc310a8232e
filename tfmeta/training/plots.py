"""Pictures of regression predictions: the predicted mean ± 2 stddev against the true function and the context.

matplotlib is an optional dependency (`pip install "tfmeta[plots]"`): `available()`
says whether it is importable, and `RegressionPlotHook` (a `MetaTrainer`
evaluation hook) draws a fixed set of test tasks at every evaluation (image
completion tasks: `CompletionPlotHook`, one row of pictures per task), into
`<workdir>/plots/predictions_<step>.png` and TensorBoard (`images/predictions`, written
without the `tensorboard` package: `summaries.png_image`).
matplotlib is drawn through its object API on an Agg canvas: no global backend
is switched and no window is opened.
"""

import importlib.util
import io
import os
import pathlib

import numpy as np

from tfmeta.data.episode import TaskEpisode
from tfmeta.training import summaries

PLOTS_DIR = "plots"


def available() -> bool:
    """Whether matplotlib can be imported (the `plots` extra)."""
    return importlib.util.find_spec("matplotlib") is not None


def _numpy(x):
    return None if x is None else np.asarray(x)


def regression_figure(episodes: TaskEpisode, mean, stddev=None, title: str = "", columns: int = 2) -> bytes:
    """A PNG of each task's predictions: the true function (the query targets, in order of `x`),
    the real context points, the predicted mean and, for probabilistic learners, the ±2 stddev band.

    Args:
        episodes: a batched `TaskEpisode` of 1-D regression tasks (numpy or tensors).
        mean: `(tasks, Q, 1)` predicted means at the queries.
        stddev: `(tasks, Q, 1)` predicted stddevs, or None (a learner without uncertainty).
        title: the figure's title.
        columns: panels per row.

    Returns:
        The PNG file's bytes.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if the tasks are not 1-D regression tasks.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional dependency
    from matplotlib.figure import Figure  # noqa: PLC0415

    sx, sy, qx, qy, smask, qmask = (_numpy(t) for t in tuple(episodes)[:6])
    if qx.ndim != 3 or qx.shape[-1] != 1:
        raise ValueError(f"Plots show 1-D regression tasks `(tasks, Q, 1)`. Received: query_x.shape={qx.shape}")
    mean, stddev = _numpy(mean), _numpy(stddev)
    tasks = qx.shape[0]
    rows = (tasks + columns - 1) // columns
    figure = Figure(figsize=(5 * min(columns, tasks), 3.2 * rows), dpi=80)
    FigureCanvasAgg(figure)
    for t in range(tasks):
        axes = figure.add_subplot(rows, min(columns, tasks), t + 1)
        real = qmask[t] > 0
        order = np.argsort(qx[t, real, 0])
        x = qx[t, real, 0][order]
        axes.plot(x, qy[t, real, 0][order], "k:", linewidth=1.5, label="true function")
        axes.plot(x, mean[t, real, 0][order], "b", linewidth=1.5, label="predicted mean")
        if stddev is not None:
            s = stddev[t, real, 0][order]
            m = mean[t, real, 0][order]
            axes.fill_between(x, m - 2 * s, m + 2 * s, alpha=0.25, facecolor="#65c9f7", label="±2 stddev")
        context = smask[t] > 0
        axes.plot(sx[t, context, 0], sy[t, context, 0], "ko", markersize=5, label=f"context ({int(context.sum())})")
        axes.set_title(f"task {t}", fontsize=9)
        if t == 0:
            axes.legend(fontsize=7, loc="best")
    return _png(figure, title)


# Unobserved pixels of the context picture (a muted blue: not a grey level the images use).
UNOBSERVED_COLOUR = (0.25, 0.4, 0.65)


def completion_figure(episodes: TaskEpisode, mean, stddev, image_shape, coordinate_range=(0.0, 1.0),
                      title: str = "") -> bytes:
    """A PNG of image completion tasks: a row per task with the context pixels (unobserved ones in
    `UNOBSERVED_COLOUR`), the predicted mean image, the predicted stddev image and the true image.

    Args:
        episodes: a batched `TaskEpisode` of completion tasks whose queries are every pixel in
            raster order (`image_completion_tasks(..., num_extra_targets=None)`).
        mean: `(tasks, H * W, 1)` predicted means at the queries.
        stddev: `(tasks, H * W, 1)` predicted stddevs, or None (a learner without uncertainty:
            the column is left out).
        image_shape: `(H, W)` or `(H, W, 1)`.
        coordinate_range: the tasks' `coordinate_range` (to place the context pixels).
        title: the figure's title.

    Returns:
        The PNG file's bytes.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if the queries are not the `H * W` pixels of 2-d coordinates.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional dependency
    from matplotlib.figure import Figure  # noqa: PLC0415

    sx, sy, qx, qy, smask = (_numpy(t) for t in tuple(episodes)[:5])
    height, width = (int(n) for n in tuple(image_shape)[:2])
    if qx.ndim != 3 or qx.shape[1:] != (height * width, 2):
        raise ValueError(f"Completion plots need every pixel of a {height}x{width} image as a query, "
                         f"`(tasks, {height * width}, 2)`. Received: query_x.shape={qx.shape}")
    mean, stddev = _numpy(mean), _numpy(stddev)
    tasks = qx.shape[0]
    columns = [("context", None), ("predicted mean", mean)] + ([("predicted stddev", stddev)] if stddev is not None
                                                               else []) + [("true image", qy)]
    figure = Figure(figsize=(1.9 * len(columns), 2.0 * tasks + 0.4), dpi=80)
    FigureCanvasAgg(figure)
    low, high = coordinate_range
    for t in range(tasks):
        context = np.empty((height, width, 3), np.float32)
        context[:] = UNOBSERVED_COLOUR
        real = smask[t] > 0
        rows = np.rint((sx[t, real, 0] - low) / (high - low) * (height - 1)).astype(int)
        cols = np.rint((sx[t, real, 1] - low) / (high - low) * (width - 1)).astype(int)
        context[rows, cols] = np.clip(sy[t, real, :1], 0.0, 1.0)  # grey levels
        for c, (name, values) in enumerate(columns):
            axes = figure.add_subplot(tasks, len(columns), t * len(columns) + c + 1)
            axes.set_xticks([])
            axes.set_yticks([])
            if values is None:
                axes.imshow(context, interpolation="nearest")
                label = f"context ({int(real.sum())} pixels)"
            elif name == "predicted stddev":
                picture = values[t, :, 0].reshape(height, width)
                axes.imshow(picture, cmap="viridis", vmin=0.0, vmax=max(float(values.max()), 1e-6),
                            interpolation="nearest")  # one scale for every task of the figure
                label = f"stddev ({picture.min():.2f}-{picture.max():.2f})"
            else:
                axes.imshow(values[t, :, 0].reshape(height, width), cmap="gray", vmin=0.0, vmax=1.0,
                            interpolation="nearest")
                label = name
            axes.set_title(label, fontsize=8)
    return _png(figure, title)


def predict_tasks(learner, episodes: TaskEpisode, training: bool):
    """The learner's predictions on each task: `(mean (tasks, Q, 1), stddev or None)`, eagerly, task by task."""
    means, stddevs = [], []
    for t in range(episodes.num_tasks):
        task = episodes.task(t)
        state = learner.adapt_task(task.support_x, task.support_y, task.support_mask, task.metadata,
                                   training=training)
        outputs = learner.predict(state, task.query_x, training=training)
        if learner.probabilistic:
            means.append(outputs["mean"].numpy())
            stddevs.append(outputs["stddev"].numpy())
        else:
            means.append(outputs.numpy())
    return np.stack(means), (np.stack(stddevs) if stddevs else None)


class RegressionPlotHook:
    """A `MetaTrainer` evaluation hook: pictures of fixed regression tasks at each evaluation.

    Args:
        episodes: a batched `TaskEpisode` of the tasks to draw (the same at every evaluation).
        workdir: the run directory (PNGs go to `<workdir>/plots/`).
        title: a prefix of each figure's title.

    Example:

    ```python
    hook = RegressionPlotHook(plot_episodes, "runs/cnp_gp", title="cnp on gp")
    trainer = MetaTrainer(config, ..., evaluation_hooks=[hook])
    ```
    """

    def __init__(self, episodes: TaskEpisode, workdir, title: str = ""):
        self.episodes = episodes
        self.directory = pathlib.Path(workdir) / PLOTS_DIR
        self.title = title
        self.written = []

    def figure(self, mean, stddev, title: str) -> bytes:
        """The PNG of the predictions `(tasks, Q, 1)` on `self.episodes`."""
        return regression_figure(self.episodes, mean, stddev, title=title)

    def __call__(self, learner, step: int, writer) -> pathlib.Path:
        mean, stddev = predict_tasks(learner, self.episodes, learner.training_at_test)
        png = self.figure(mean, stddev, title=f"{self.title} step {step}".strip())
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"predictions_{step:08d}.png"
        partial = path.with_suffix(".png.partial")
        partial.write_bytes(png)
        os.replace(partial, path)  # never a half-written picture
        if writer is not None:
            with writer.as_default():
                summaries.png_image("images/predictions", png, step)
        self.written.append(path)
        return path


class CompletionPlotHook(RegressionPlotHook):
    """A `MetaTrainer` evaluation hook: pictures of fixed image completion tasks (`completion_figure`).

    Args:
        episodes: a batched `TaskEpisode` of completion tasks, every pixel a query.
        workdir: the run directory (PNGs go to `<workdir>/plots/`).
        image_shape: `(H, W)` of the images.
        coordinate_range: the tasks' coordinate range.
        title: a prefix of each figure's title.

    Example:

    ```python
    hook = CompletionPlotHook(test_tasks, "runs/cnp_omniglot_completion", (28, 28), title="cnp")
    ```
    """

    def __init__(self, episodes: TaskEpisode, workdir, image_shape, coordinate_range=(0.0, 1.0), title: str = ""):
        super().__init__(episodes, workdir, title)
        self.image_shape = tuple(image_shape)
        self.coordinate_range = tuple(coordinate_range)

    def figure(self, mean, stddev, title: str) -> bytes:
        return completion_figure(self.episodes, mean, stddev, self.image_shape, self.coordinate_range, title=title)


def _png(figure, title: str | None) -> bytes:
    """The figure, titled, laid out and encoded as PNG bytes."""
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

