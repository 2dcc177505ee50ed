# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Gradio Spaces: `push_space`."""

import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from huggingface_hub import metadata_load

from .._errors import UsageError, one_line
from ._commit import push_files
from ._scan import never_sent, scanned_files, walk
from .pipelines import with_remote_code


def push_space(folder: str | os.PathLike, repo_id: str, *, private: bool = False, include: Iterable[str] = ()) -> str:
    """
    Upload a Gradio Space folder (app.py, a README.md declaring `sdk: gradio`, ...) in one commit, creating the Space
    if needed, and return the commit sha. Caches, hidden and credential files are left out unless `include` names
    them; pipeline folders inside get the installed hf_ddpm's remote-code modules they lack.

    Args:
        include (`Iterable[str]`, *optional*): paths relative to `folder` to send although hidden or credential-like
            (e.g. ".streamlit/config.toml").
    """
    folder = Path(folder)
    for required in ("app.py", "README.md"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder / required} is missing: a Gradio Space needs app.py and README.md.")
    readme = folder / "README.md"
    try:
        sdk = (metadata_load(readme) or {}).get("sdk")
    except (yaml.YAMLError, ValueError) as error:  # huggingface_hub: "repo card metadata block should be a dict"
        raise UsageError(f"{readme} has invalid YAML front matter: {one_line(error)}") from None
    if sdk != "gradio":
        raise UsageError(f"{readme} must declare `sdk: gradio` in its YAML front matter (--- ... ---), got {sdk!r}.")
    paths = {path for path in walk(folder) if not never_sent(path)}
    for name in include:
        path = Path(folder, name).resolve()
        if not path.is_file() or not path.is_relative_to(folder.resolve()):
            raise FileNotFoundError(f"`include` names {name!r}, which is not a file inside {folder}.")
        paths.add(path.relative_to(folder.resolve()).as_posix())
    files = with_remote_code(scanned_files(folder, sorted(paths)))
    return push_files(repo_id, files, message="Upload Space", repo_type="space", private=private)
