# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Gradio Spaces: `push_space`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from huggingface_hub import metadata_load

from .._errors import UsageError, one_line
from ._commit import check_repo_id, push_files
from ._scan import check_files, never_sent, read_files, walk


def push_space(folder: str | os.PathLike, repo_id: str, *, private: bool = False, include: Iterable[str] = ()) -> str:
    """
    Create (if needed) a Gradio Space and upload `folder` to it in one commit; return the commit sha.

    The folder needs app.py and a README.md whose YAML front matter declares `sdk: gradio`. Caches, virtual
    environments, hidden files and folders, and credential files (*.pem, id_rsa, .netrc, ...) are not sent unless
    `include` names them. Every pipeline folder inside gets the remote-code modules of the installed hf_ddpm where it
    lacks them. No file sent may hold a secret (see `hf_ddpm.hub._scan.check_files`).

    Args:
        include (`Iterable[str]`, *optional*): paths relative to `folder` to send although hidden or credential-like
            (e.g. ".streamlit/config.toml"); they are still scanned.
    """
    from .pipelines import with_remote_code

    folder = check_space_folder(Path(folder))
    check_repo_id(repo_id)
    paths = {path for path in walk(folder) if not never_sent(path)} | check_included(folder, include)
    files = with_remote_code(read_files(folder, sorted(paths)))
    check_files(folder, files)
    return push_files(repo_id, files, message="Upload Space", repo_type="space", private=private)


def check_space_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (expected a Space: app.py, README.md, requirements.txt).")
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
    return folder


def check_included(folder: Path, include: Iterable[str]) -> set[str]:
    """The files named in `include`, as POSIX paths relative to `folder`; each must be a file inside it."""
    included = set()
    for name in include:
        path = Path(folder, name)
        if not path.is_file() or not path.resolve().is_relative_to(folder.resolve()):
            raise FileNotFoundError(f"`include` names {name!r}, which is not a file inside {folder}.")
        included.add(path.resolve().relative_to(folder.resolve()).as_posix())
    return included
