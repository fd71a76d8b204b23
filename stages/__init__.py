"""The DVC stage scripts, run by `dvc repro` as `python -m stages.<name>` from the project root.

DVC runs a stage with whatever `python` comes first on PATH. A shell where the project's
environment is not active would run the system Python (no torch) or another environment's
packages, so importing this package first checks that the project is installed in the Python
that runs it, and otherwise stops with one line that says which environment to use.
"""

import os
import sys
from importlib import metadata

# Installed means found in the interpreter's own paths: the project folder itself (on sys.path
# as the working directory) may hold a stray `srgan.egg-info` from a build.
_here = os.path.realpath(os.getcwd())
_installed = [path for path in sys.path if path and os.path.realpath(path) != _here]
if not list(metadata.distributions(name="srgan", path=_installed)):
    print(
        f"error: {sys.executable} is not the project's environment (srgan is not installed in it); "
        "activate it with `source .venv/bin/activate` (`make repro` creates .venv), then run dvc again",
        file=sys.stderr,
    )
    raise SystemExit(2) from None
