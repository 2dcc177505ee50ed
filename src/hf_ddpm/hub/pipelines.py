# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Pipeline repos: `push_pipeline` (one commit, mirroring the folder) and `pull`."""

import importlib.resources
import os
from pathlib import Path

from huggingface_hub import HfApi
from safetensors import SafetensorError, safe_open

from .._errors import UsageError
from ._commit import download, push_files
from ._scan import PICKLE_PATTERNS, matches, never_sent, scanned_files, walk
from .cards import GENERATED_MARKER, save_model_card

# What a push sends and a pull fetches: what loading needs (also in the flat layout of google/ddpm-*), code, card,
# samples, metrics. A push matches a pattern at one folder depth ("*.py": root files), a pull at any depth.
REPO_PATTERNS = ["model_index.json", "unet/config.json", "unet/*.safetensors", "unet/*.safetensors.index.json"]
REPO_PATTERNS += ["scheduler/scheduler_config.json", "config.json", "scheduler_config.json", "*.safetensors"]
REPO_PATTERNS += ["*.py", "scheduler/*.py", "unet/*.py", "README.md", "*.png", "samples/*.png"]
REPO_PATTERNS += ["metrics.json", "eval_results.json", "training_args.json", "conversion.json"]
# The modules `trust_remote_code=True` runs, in a pipeline folder; their names in the installed hf_ddpm are the same.
REMOTE_CODE = ["pipeline_ddpm_posterior.py", "scheduler/scheduling_ddpm_posterior.py", "unet/unet_2d_adm.py"]


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
    Upload a saved pipeline folder to a Hub model repo in one commit and return the commit sha. The branch then
    mirrors the folder's files of `REPO_PATTERNS`, plus the installed hf_ddpm's remote-code modules where the folder
    lacks them. The model card README.md is rendered first when missing, or refreshed when `save_model_card` wrote it.

    Args:
        folder (`str` or `os.PathLike`): a folder written by `DDPMPosteriorPipeline.save_pretrained`.
        repo_id (`str`): "namespace/name" (or "name", in the token owner's namespace); created if needed.
        private (`bool`, defaults to `False`): create the repo private (new repos only).
        revision (`str`, *optional*): the branch to push to, created from `main` if new; `main` when `None`.
        commit_message (`str`, *optional*): defaults to "Upload DDPMPosteriorPipeline".
        create_pr (`bool`, defaults to `False`): open a pull request with the commit instead of moving the branch.
        token (`str`, *optional*): the Hub token (also looked for in every file); the logged-in one when `None`.

    Returns:
        `str`: the sha of the new commit (the current head if nothing changed).
    """
    from ..pipeline_ddpm_posterior import PIPELINE_CLASS  # torch: not imported for `hf-ddpm --help`

    folder = check_pipeline_folder(folder)
    if "/" not in repo_id:  # the card's loading examples need the full id
        repo_id = f"{HfApi(token=token).whoami()['name']}/{repo_id}"
    readme = folder / "README.md"
    if not readme.is_file() or GENERATED_MARKER in readme.read_text(encoding="utf-8", errors="replace"):
        save_model_card(folder, repo_id=repo_id)
    layout = [*REPO_PATTERNS, "unet", "scheduler", "samples"]  # a link in place of one of these folders: refused
    paths = [path for path in walk(folder) if matches(path, layout) and not never_sent(path)]
    files = with_remote_code(scanned_files(folder, paths, token))
    return push_files(
        repo_id,
        files,
        message=commit_message or f"Upload {PIPELINE_CLASS}",
        branch=revision,
        private=private,
        mirror_patterns=REPO_PATTERNS,
        create_pr=create_pr,
        token=token,
    )


def with_remote_code(files: dict[str, bytes]) -> dict[str, bytes]:
    """`files` plus, beside every model_index.json of our pipeline, the `REMOTE_CODE` modules it names and lacks."""
    package = importlib.resources.files("hf_ddpm")
    completed = dict(files)
    for path, data in files.items():
        # a saved pipeline's `_class_name` is ["pipeline_ddpm_posterior", "DDPMPosteriorPipeline"]
        if path.rpartition("/")[2] == "model_index.json" and b'"pipeline_ddpm_posterior"' in data:
            root = path.removesuffix("model_index.json")
            for module in (module for module in REMOTE_CODE if f'"{Path(module).stem}"'.encode() in data):
                completed.setdefault(root + module, package.joinpath(module.rpartition("/")[2]).read_bytes())
    return completed


def pull(repo_id: str, *, revision: str | None = None, local_dir: str | os.PathLike | None = None) -> str:
    """
    Download the `REPO_PATTERNS` files of a pipeline repo at one commit (that of `revision`, a branch, tag or sha) and
    return the folder. The huggingface_hub cache serves what it holds; offline, its snapshot of that revision.
    """
    return download(repo_id, revision=revision, local_dir=local_dir, allow_patterns=REPO_PATTERNS)


def check_pipeline_folder(folder: str | os.PathLike) -> Path:
    """`folder` as a `Path`, if it has a model_index.json and complete safetensors weights in unet/."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder / 'model_index.json'} is missing: {folder} is not a saved pipeline.")
    weights = sorted((folder / "unet").glob("*.safetensors"))
    if not weights:
        pickles = [path for path in walk(folder / "unet") if matches(path, PICKLE_PATTERNS)]
        found = f" (found {', '.join(pickles)}: hf-ddpm never uploads pickled weights)" if pickles else ""
        raise FileNotFoundError(f"{folder / 'unet'} has no .safetensors weights{found}; save with safetensors.")
    for path in weights:
        try:
            safe_open(path, framework="numpy")  # checks that the tensors' byte ranges cover the file exactly
        except SafetensorError as error:
            raise UsageError(f"{path} is not a complete safetensors file: {error}; it would not load.") from None
    return folder
