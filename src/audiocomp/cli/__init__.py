"""The `audiocomp` command line: parse options, load the config, call a stage, print its result. No logic here.

    app.py        the Typer app, shared options, the one-line error guard
    make.py       prepare, train, prune, prune sensitivity, quantize
    measure.py    eval, bench, export, predict, report
    pipelines.py  run, sweep, demo
    tools.py      models, doctor, config show, data synth/info/fetch
"""
from __future__ import annotations

import sys
import warnings

from . import make, measure, pipelines, tools  # noqa: F401  (each registers its commands)
from .app import app


def main() -> None:
    # torch's own UserWarnings (ONNX constant folding, deprecations inside torch) are not the user's to act
    # on; audiocomp's warnings (skipped files, ...) still show
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        app(prog_name="audiocomp")
    except BrokenPipeError:  # e.g. `audiocomp models | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
