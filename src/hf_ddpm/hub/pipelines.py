# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Pipeline repos: `push_pipeline` (one commit, mirroring the folder) and `pull`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub import constants as hub_constants

from ..files import read_json_object
from ..pipeline_ddpm_posterior import LOAD_PATTERNS, PIPELINE_CLASS
from ._commit import _check_branch, _check_repo_id, _commit_files, _download, _with_retries
from ._scan import (
    PICKLE_PATTERNS,
    _check_safetensors,
    _check_uploadable,
    _is_private,
    _matches,
    _name,
    _walk,
)
from .cards import GENERATED_MARKER, save_model_card

logger = logging.getLogger(__name__)


# What a pipeline push sends: patterns match one path level each ("*.py" is a root file, not scheduler/x.py).
PUSH_PATTERNS = [
    "model_index.json",
    "unet/config.json",
    "unet/*.safetensors",
    "unet/*.safetensors.index.json",
    "scheduler/scheduler_config.json",
    "scheduler/*.py",
    "*.py",
    "README.md",
    "*.png",
    "samples/*.png",
    "metrics.json",
    "eval_results.json",
    "training_args.json",
]
# What a pull fetches: what loading needs (the pipeline module's own list), plus code, card, samples and metrics.
PULL_PATTERNS = [
    *LOAD_PATTERNS,
    "*.py",
    "README.md",
    "*.png",
    "metrics.json",
    "eval_results.json",
    "training_args.json",
]


def push_pipeline(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
) -> str:
    """
    Upload a saved pipeline folder to a Hub model repo in one commit and return the commit sha.

    The repo is created if needed (`private` applies to new repos only), the branch `revision` is created from `main`
    if it does not exist, and the model card README.md is rendered when missing (or refreshed when it is one that
    `save_model_card` generated). Only the files in `PUSH_PATTERNS` are sent; files under those patterns that the
    remote branch holds but the folder no longer does are deleted in the same commit, so the branch mirrors the folder.

    Args:
        folder (`str` or `os.PathLike`): a folder written by `DDPMPosteriorPipeline.save_pretrained`.
        repo_id (`str`): "namespace/name" (or "name", in the token owner's namespace).
        private (`bool`, defaults to `False`): create the repo private.
        revision (`str`, *optional*): the branch to push to; `main` when `None`.
        commit_message (`str`, *optional*): defaults to "Upload DDPMPosteriorPipeline".
        create_pr (`bool`, defaults to `False`): open a pull request with the commit instead of moving the branch.
        token (`str`, *optional*): the Hub token; the logged-in one (or HF_TOKEN) when `None`.

    Returns:
        `str`: the sha of the new commit (the current head if nothing changed).

    Raises:
        `FileNotFoundError` / `ValueError`: the folder is not a complete saved pipeline, or it holds a token.
        `HubPushError`: the commit could not be made; the branch is unchanged.
    """
    folder = check_pipeline_folder(folder)
    _check_repo_id(repo_id)
    _check_branch(revision)
    readme = folder / "README.md"
    generated_card = not readme.is_file() or GENERATED_MARKER in readme.read_text(encoding="utf-8", errors="replace")
    if generated_card:
        save_model_card(folder, repo_id=repo_id)
    # an allow-list: pickles (*.bin, *.pkl), checkpoints, logs, caches, hidden and credential files are never picked
    paths = [path for path in _walk(folder) if _matches(path, PUSH_PATTERNS) and not _is_private(path)]
    _check_uploadable(folder, paths)
    skipped = sorted(set(_walk(folder)) - set(paths))
    if skipped:
        logger.info("Not uploading %d file(s) outside the pipeline layout: %s", len(skipped), ", ".join(skipped[:5]))

    api = HfApi(token=token)
    url = _with_retries(api.create_repo, repo_id, private=private, exist_ok=True, description=f"create repo {repo_id}")
    if url.repo_id != repo_id:  # "name" became "user/name": the card's loading examples need the full id
        repo_id = url.repo_id
        if generated_card:
            save_model_card(folder, repo_id=repo_id)
    branch = revision or hub_constants.DEFAULT_REVISION
    if branch != hub_constants.DEFAULT_REVISION:
        _with_retries(api.create_branch, repo_id, branch=branch, exist_ok=True, description=f"create branch {branch}")
    return _commit_files(
        api,
        repo_id,
        folder,
        paths,
        branch=branch,
        message=commit_message or f"Upload {PIPELINE_CLASS}",
        mirror_patterns=PUSH_PATTERNS,
        create_pr=create_pr,
    )


def pull(repo_id: str, *, revision: str | None = None, local_dir: str | os.PathLike | None = None) -> str:
    """
    Download a pipeline repo (what loading needs, plus its code, card, samples and metrics) and return its folder.

    The revision (branch, tag or commit sha; `main` when `None`) is resolved to a commit once, so every file comes from
    the same commit. Files come from the huggingface_hub cache when present; with `HF_HUB_OFFLINE=1` (or the Hub
    unreachable) the cached snapshot of that revision is used. A download interrupted by a transient error is retried
    and resumes where it stopped.

    Args:
        repo_id (`str`): the model repo.
        revision (`str`, *optional*): a branch, tag or commit sha.
        local_dir (`str` or `os.PathLike`, *optional*): download into this folder instead of the cache.

    Returns:
        `str`: the local folder, loadable with `DDPMPosteriorPipeline.from_pretrained(folder)`.
    """
    _check_repo_id(repo_id)
    return _download(repo_id, revision=revision, local_dir=local_dir, allow_patterns=PULL_PATTERNS)


def check_pipeline_folder(folder: str | os.PathLike) -> Path:
    """
    Check that `folder` holds a complete saved pipeline and return it as a `Path`.

    A complete pipeline has model_index.json (a JSON object naming `unet` and `scheduler`), unet/config.json with
    safetensors weights, scheduler/scheduler_config.json, and the *.py module of every component that model_index.json
    names by file (needed by `trust_remote_code=True`).

    Raises:
        `FileNotFoundError`: a file or folder is missing (named in the message), or the weights are pickles only.
        `ValueError`: model_index.json is malformed, or a safetensors file is incomplete (truncated).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (expected a pipeline saved with save_pretrained).")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} is missing: {folder} is not a saved diffusers pipeline.")
    index = read_json_object(index_path)
    if not all(isinstance(index.get(name), list) for name in ("unet", "scheduler")):
        raise ValueError(f"{index_path} must be a JSON object with `unet` and `scheduler` entries [library, class].")
    for required in ("unet/config.json", "scheduler/scheduler_config.json"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder / required} is missing: the pipeline is incomplete.")
    weight_files = sorted((folder / "unet").glob("*.safetensors"))
    if not weight_files:
        pickles = sorted(path for path in _walk(folder / "unet") if _matches(_name(path), PICKLE_PATTERNS))
        found = f" (found {', '.join(pickles)}: hf-ddpm never uploads pickled weights)" if pickles else ""
        raise FileNotFoundError(f"{folder / 'unet'} has no .safetensors weights{found}; save with safetensors.")
    for path in weight_files:
        _check_safetensors(path)
    for module_path in _remote_code_files(index):
        if not (folder / module_path).is_file():
            raise FileNotFoundError(
                f"{folder / module_path} is missing: model_index.json names it for trust_remote_code loading."
            )
    return folder


def _remote_code_files(index: dict) -> list[str]:
    """The *.py files that model_index.json points to: [module, class] pairs whose module is not a library."""
    files = []
    class_name = index.get("_class_name")
    if isinstance(class_name, list) and len(class_name) == 2:
        files.append(f"{class_name[0]}.py")
    for component, entry in index.items():
        if component.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue
        if entry[0] not in ("diffusers", "transformers", "hf_ddpm"):
            files.append(f"{component}/{entry[0]}.py")
    return files
