"""Flag checks and memory figures shared by the benchmarks."""

import resource

from absl import app


def check_configs(requested, known) -> None:
    """Raises `app.UsageError` naming the `--configs` entries not in `known`."""
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise app.UsageError(f"Unknown --configs {unknown}; choose among {list(known)}.")


def _status_mb(field: str):
    """`field` of `/proc/self/status` (e.g. `VmHWM`) in MB; None where there is none."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB.

    Linux's `VmHWM`, not `getrusage`'s `ru_maxrss`: a child process (the torch
    reference that `benchmarks.meta_step` starts) inherits its parent's
    `ru_maxrss` at the fork, so it reported TensorFlow's peak, not its own.
    """
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now, in MB (`VmRSS`; the peak where unknown)."""
    now = _status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()
