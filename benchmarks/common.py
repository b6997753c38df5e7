"""What every benchmark does at its end: its figures as JSON (--json PATH), then the exit.

    if args.json:
        write_json(args.json, results)
    ...
    if __name__ == "__main__":
        run_main(main)
"""
from __future__ import annotations

import json
import sys
from typing import Callable


def write_json(path: str, figures: dict) -> None:
    """`figures` as indented JSON; values JSON has no type for (paths, numpy scalars) as str."""
    with open(path, "w") as f:
        json.dump(figures, f, indent=2, default=str)


def run_main(main: Callable[[], int]) -> None:
    """main(), then exit with its code without Python's heap sweeps (~3 s with torch, MLflow,
    Optuna and matplotlib loaded; mlproject.signals.leave_heap_to_the_os): the figures are out."""
    code = main()
    from mlproject.signals import leave_heap_to_the_os

    leave_heap_to_the_os()
    sys.exit(code)
