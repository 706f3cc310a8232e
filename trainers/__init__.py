"""Thin absl command lines: flags -> config -> one library call (`python -m trainers.<name>`).

TensorFlow's C++ start-up lines (oneDNN, CUDA drivers, `cuInit` on a machine
without a GPU, "All log messages before absl::InitializeLog()") are kept out
of the trainers' output unless `--verbose` is given. They are written while
TensorFlow is imported and while it finds its devices, before absl parses the
flags, so this is decided here, from the raw command line, before any trainer
imports TensorFlow:

* `TF_CPP_MIN_LOG_LEVEL=3` (unless the environment sets it) hides TensorFlow's
  C++ log lines, `cuInit`'s error among them; errors that matter still reach
  the user as Python exceptions.
* Some lines are logged through Abseil before TensorFlow applies that level;
  they are written during `import tensorflow`, so stderr is set aside while
  TensorFlow is imported (and shown if the import fails).
"""

import os
import sys
import tempfile

VERBOSE = any(arg in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for arg in sys.argv[1:])


def _import_tensorflow_quietly() -> None:
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401, PLC0415
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _import_tensorflow_quietly()
