"""Pictures of regression predictions: the predicted mean ± 2 stddev against the true function and the context.

matplotlib is an optional dependency (`pip install "tfmeta[plots]"`): `available()`
says whether it is importable, and `RegressionPlotHook` (a `MetaTrainer`
evaluation hook) draws a fixed set of test tasks at every evaluation, into
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
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


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

    def __call__(self, learner, step: int, writer) -> pathlib.Path:
        mean, stddev = predict_tasks(learner, self.episodes, learner.training_at_test)
        png = regression_figure(self.episodes, mean, stddev, title=f"{self.title} step {step}".strip())
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
