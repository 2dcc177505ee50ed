# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The error types shared by every layer, at the bottom of the package so that nothing imports the command line."""


class UsageError(ValueError):
    """A request that cannot be served as asked (bad flag value or combination): exit code 2."""


def one_line(error: BaseException) -> str:
    """The error's type and the first line of its message: for logs and command-line errors."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def check_at_least(args, minimums: dict[str, int]) -> None:
    """Raise `UsageError` naming the first flag of `minimums` ({name: least value}) below its least; unset is fine."""
    for flag, least in minimums.items():
        value = getattr(args, flag)
        if value is not None and value < least:
            raise UsageError(f"--{flag} must be at least {least}, got {value}.")
