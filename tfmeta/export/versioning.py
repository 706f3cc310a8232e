"""TF Serving's directory layout: `<export_root>/<name>/<version>/`, versions never overwritten.

A new export is written into a hidden temporary directory beside the versions
(TF Serving only looks at all-digit names) and moved into place with one
`os.rename`, so a reader never sees a half-written version and a failed export
leaves nothing behind.
"""

import contextlib
import os
import pathlib
import re
import shutil
import tempfile

_VERSION = re.compile(r"^[1-9][0-9]*$")


def existing_versions(model_dir) -> list:
    """Sorted integer versions present under `model_dir` (empty if it does not exist)."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and _VERSION.match(p.name))


def next_version(model_dir) -> int:
    """The version a new export under `model_dir` takes: one past the largest, starting at 1."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def check_name(name):
    """Raises ValueError unless `name` is one plain directory name."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"`name` must be a non-empty directory name without '/'. Received: name={name!r}")


@contextlib.contextmanager
def staged_version(export_root, name: str, max_attempts: int = 100):
    """Yields a temporary directory to write one export into, then publishes it.

    On normal exit the directory is renamed to `<export_root>/<name>/<v>` with
    `v` the next free version (retrying with the following one when another
    exporter took it meanwhile); its final path is stored in `result["path"]`
    of the yielded dict. On an exception the temporary directory is removed.

    Args:
        export_root: root of the exports (created if missing).
        name: the model's name (one directory level).
        max_attempts: how many versions to try when racing other exporters.

    Yields:
        `(tmp_dir, result)`: the `pathlib.Path` to write into and a dict that
        receives `path` and `version` after publishing.

    Raises:
        ValueError: if `name` is not a plain directory name.
        OSError: if no version could be claimed after `max_attempts`.

    Example:

    ```python
    with staged_version("saved_models", "omniglot_5way") as (tmp, result):
        tf.saved_model.save(module, str(tmp))
    print(result["path"])      # saved_models/omniglot_5way/3
    ```
    """
    check_name(name)
    model_dir = pathlib.Path(export_root) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=model_dir))
    result = {}
    try:
        yield tmp, result
        for _ in range(max_attempts):
            version = next_version(model_dir)
            target = model_dir / str(version)
            try:
                # rename onto an existing non-empty directory fails: never overwrites.
                if target.exists():
                    continue
                os.rename(tmp, target)
            except OSError:
                if target.exists():
                    continue
                raise
            result.update(path=target, version=version)
            return
        raise OSError(f"Could not claim a free version under {model_dir} after {max_attempts} attempts.")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
