"""Flag checks shared by the benchmarks."""

from absl import app


def check_configs(requested, known) -> None:
    """Raises `app.UsageError` naming the `--configs` entries not in `known`."""
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise app.UsageError(f"Unknown --configs {unknown}; choose among {list(known)}.")
