"""The published class lists shipped with tfmeta (package data in `lists/`; sources in `lists/SOURCES.md`).

Lists are read with `importlib.resources`, so they work from a source checkout, an
editable install and a normal install alike.
"""

import functools
import importlib.resources


def _root():
    return importlib.resources.files("tfmeta.data.standard") / "lists"


@functools.cache
def read_text(relative_path: str) -> str:
    """The text of a shipped list, e.g. `"mini_imagenet/train.txt"`.

    Raises:
        FileNotFoundError: if tfmeta was installed without its package data.
    """
    resource = _root().joinpath(*relative_path.split("/"))
    if not resource.is_file():
        raise FileNotFoundError(
            f"The class list {relative_path} is not installed with tfmeta (expected it at {resource}); "
            "reinstall tfmeta with its package data. Received: relative_path=" + repr(relative_path)
        )
    return resource.read_text(encoding="utf-8")


def read_names(relative_path: str) -> tuple[str, ...]:
    """The non-empty lines of a shipped `.txt` list, in file order."""
    return tuple(line.strip() for line in read_text(relative_path).splitlines() if line.strip())


def read_rows(relative_path: str) -> tuple[tuple[str, ...], ...]:
    """The rows of a shipped `.csv` list without its header line, each a tuple of fields."""
    lines = [line.strip() for line in read_text(relative_path).splitlines() if line.strip()]
    return tuple(tuple(line.split(",")) for line in lines[1:])


def read_tsv(relative_path: str) -> dict[str, str]:
    """A shipped two-column `key<TAB>value` file as a dict."""
    pairs = (line.split("\t", 1) for line in read_text(relative_path).splitlines() if line.strip())
    return {key: value for key, value in pairs}
