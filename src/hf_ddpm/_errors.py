# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The error types shared by every layer, at the bottom of the package so that nothing imports the command line."""


class UsageError(ValueError):
    """A request that cannot be served as asked (bad flag value or combination): exit code 2."""


def one_line(error: BaseException) -> str:
    """The error's type and the first line of its message: for logs and command-line errors."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
