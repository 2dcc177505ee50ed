# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Gradio Spaces: `push_space`."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from huggingface_hub import HfApi, metadata_load

from ._commit import _check_repo_id, _commit_files, _with_retries
from ._scan import _check_uploadable, _is_private, _walk

# Never sent with a Space: caches, virtual environments, VCS data, credentials (folders at any depth, file names).
# Hidden files and folders (".git-credentials", ".huggingface/", ".env", ...) are never sent by any push either,
# unless a Space push names them in `include`.
SPACE_IGNORED_FOLDERS = {"__pycache__", "venv", "flagged"}
SPACE_IGNORED_FILES = ["*.pyc"]


def push_space(folder: str | os.PathLike, repo_id: str, *, private: bool = False, include: Iterable[str] = ()) -> str:
    """
    Create (if needed) a Gradio Space and upload `folder` to it in one commit; return the commit sha.

    The folder needs app.py and a README.md whose YAML front matter declares `sdk: gradio`. Caches, virtual
    environments, hidden files and folders, and credential files (*.pem, id_rsa, .netrc, ...) are not sent unless
    `include` names them, and no file sent, text or binary, may hold the active token or a Hub token.

    Args:
        include (`Iterable[str]`, *optional*): paths relative to `folder` to send although hidden or credential-like
            (e.g. ".streamlit/config.toml"); they are still scanned for tokens.
    """
    folder = _check_space_folder(Path(folder))
    _check_repo_id(repo_id)
    included = _check_included(folder, include)
    paths = sorted({path for path in _walk(folder) if _is_space_file(path) and not _is_private(path)} | included)
    _check_uploadable(folder, paths)
    api = HfApi()
    _with_retries(
        api.create_repo,
        repo_id,
        repo_type="space",
        space_sdk="gradio",
        private=private,
        exist_ok=True,
        description=f"create Space {repo_id}",
    )
    return _commit_files(api, repo_id, folder, paths, branch="main", message="Upload Space", repo_type="space")


def _check_space_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (expected a Space: app.py, README.md, requirements.txt).")
    for required in ("app.py", "README.md"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder / required} is missing: a Gradio Space needs app.py and README.md.")
    sdk = _front_matter(folder / "README.md").get("sdk")
    if sdk != "gradio":
        raise ValueError(f"{folder / 'README.md'} must declare `sdk: gradio` in its YAML front matter, got {sdk!r}.")
    return folder


def _check_included(folder: Path, include: Iterable[str]) -> set[str]:
    """The files named in `include`, as POSIX paths relative to `folder`; each must be a file inside it."""
    included = set()
    for name in include:
        path = Path(folder, name)
        if not path.is_file() or not path.resolve().is_relative_to(folder.resolve()):
            raise FileNotFoundError(f"`include` names {name!r}, which is not a file inside {folder}.")
        included.add(path.resolve().relative_to(folder.resolve()).as_posix())
    return included


def _is_space_file(path: str) -> bool:
    *folders, name = path.split("/")
    ignored_name = any(fnmatch.fnmatchcase(name, pattern) for pattern in SPACE_IGNORED_FILES)
    return not ignored_name and not SPACE_IGNORED_FOLDERS.intersection(folders)


def _front_matter(readme: Path) -> dict:
    try:
        data = metadata_load(readme)
    except yaml.YAMLError as error:
        raise ValueError(f"{readme} has invalid YAML front matter: {error}") from None
    except ValueError:  # huggingface_hub: "repo card metadata block should be a dict"
        raise ValueError(f"{readme} front matter must be a YAML mapping.") from None
    if data is None:
        raise ValueError(f"{readme} has no YAML front matter (--- ... ---) with the Space settings.")
    return data
