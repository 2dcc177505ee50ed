# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Training with Accelerate: `python train.py`, `accelerate launch train.py` and `hf-ddpm train` share `main`."""

import sys
from collections.abc import Sequence

from .args import add_training_arguments, finalize_args, parse_args


def main(argv: Sequence[str] | None = None) -> int:
    """
    Parse the flags and train. Returns the exit code: 0 done, 2 bad flags or data (one line naming the flag), 1 the
    loss became NaN/inf (the last good checkpoint is kept). Other errors raise with their traceback.
    """
    from .._errors import UsageError
    from .loop import configure_logging, train
    from .metrics import NonFiniteLossError

    args = parse_args(argv)
    configure_logging()
    try:
        train(args)
    except (UsageError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    return 0


__all__ = ["add_training_arguments", "finalize_args", "main", "parse_args"]
