# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The Hugging Face Hub side of hf-ddpm: push and pull pipelines, training checkpoints and Spaces; model cards.

What goes where, and why:

* A pipeline repo (`push_pipeline`, `pull`) holds what loading needs (model_index.json, unet/ config and safetensors,
  scheduler/ config), the self-contained *.py modules for `trust_remote_code=True`, README.md, sample PNGs and
  metrics JSON. Never pickles (*.bin, *.pkl, ...), never a token: files are picked by an allow-list, hidden and
  credential files are never picked, and every file about to be sent, text or binary, is scanned for every token of
  this machine and anything shaped like a Hub token before anything is sent. Every safetensors file's header is
  checked against its size, so a truncated weight file is refused instead of published.
* A push is ONE commit created against the branch head read just before (`parent_commit`): a push that fails leaves
  the repo at its previous commit, and a push that races another writer is refused instead of overwriting it.
  Transient failures (5xx, dropped connections) are retried with backoff; a commit is retried only after checking
  that the branch head has not moved, so a commit whose answer was lost is recognised instead of made twice.
* Training checkpoints (`push_checkpoint`, `download_checkpoint`) go to a separate branch ("checkpoints"), because
  accelerate's state files (optimizer.bin, scheduler.bin, random_states_*.pkl, custom_checkpoint_*.pkl) are pickles
  by design: the main branch stays pickle-free. Resuming from a Hub checkpoint unpickles files from that repo
  (`custom_checkpoint_*.pkl` with `weights_only=False`, which can run code): naming the repo in
  `--resume_from_checkpoint hub:REPO_ID[@REV]` is the explicit opt-in, and `download_checkpoint` logs which pickles
  it fetched and the exact commit. Only resume from repos you trust, as you would only `torch.load` files you trust.

huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE` and the cache location at import; `HfApi()` is created inside
each function, never at import, so that tests (and users) can point the library at another endpoint.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import os
import re
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import yaml
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    ResolvedRevision,
    get_cached_repo_tree,
    snapshot_download,
)
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    RevisionResolutionError,
)
from huggingface_hub.utils import get_stored_tokens, get_token, validate_repo_id

from .files import atomic_write_text
from .pipeline_ddpm_posterior import LOAD_PATTERNS, PIPELINE_CLASS

__all__ = [
    "CHECKPOINT_BRANCH",
    "HubPushError",
    "check_pipeline_folder",
    "describe_hub_error",
    "download_checkpoint",
    "pull",
    "push_checkpoint",
    "push_pipeline",
    "push_space",
    "register",
    "save_model_card",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
# The first line of the body of a card rendered here: push regenerates such cards, and keeps any card without it.
GENERATED_MARKER = (
    "<!-- hf-ddpm:generated-card (rendered by `hf-ddpm card`; delete this line to keep your edits when pushing) -->"
)
CHECKPOINT_BRANCH = "checkpoints"
LICENSE_DEFAULT = "apache-2.0"
TASK = "unconditional-image-generation"

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
# save_state always writes the RNG states of each process: the marker of a checkpoint folder. Everything else in the
# folder goes with it (model.safetensors, optimizer.bin, scheduler.bin, custom_checkpoint_0.pkl, scaler.pt, a
# manifest...: what accelerate writes changes with its version and features) except hidden files and caches.
CHECKPOINT_MARKER = "random_states_*.pkl"
PICKLE_PATTERNS = ["*.bin", "*.pkl", "*.pickle", "*.pt", "*.pth", "*.ckpt"]
# Never sent with a Space: caches, virtual environments, VCS data, credentials (folders at any depth, file names).
# Hidden files and folders (".git-credentials", ".huggingface/", ".env", ...) are never sent by any push either,
# unless a Space push names them in `include`.
SPACE_IGNORED_FOLDERS = {"__pycache__", "venv", "flagged"}
SPACE_IGNORED_FILES = ["*.pyc"]
CREDENTIAL_FILES = [
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    "*.netrc", "_netrc", "credentials", "credentials.json", "*.git-credentials", "token", "stored_tokens", "*.env",
]  # fmt: skip
# An access token as the Hub issues them, as bytes (files are scanned whatever their type); the active token is also
# looked for verbatim. Files are read in blocks that overlap by more than a token's length.
TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
TOKEN_BYTES_RE = re.compile(rb"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9])")
SCAN_BLOCK_BYTES = 8 * 2**20
SCAN_OVERLAP_BYTES = 4096
# safetensors: dtype name -> bytes per element, to check each tensor's byte range against its shape
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
SECRET_KEY_RE = re.compile(r"token|secret|password|passwd|credential|api_key", re.IGNORECASE)

# Seconds to wait before each retry of a call that failed transiently (server errors, dropped connections).
RETRY_DELAYS = (1.0, 2.0, 4.0)
TRANSIENT_STATUS_CODES = (408, 429, 500, 502, 503, 504)


class HubPushError(RuntimeError):
    """A push that did not complete. The remote branch is left at its previous commit (named in the message)."""


# ----------------------------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------------------------


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
    index = _read_json(index_path)
    if not isinstance(index, dict) or not all(isinstance(index.get(name), list) for name in ("unet", "scheduler")):
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


# ----------------------------------------------------------------------------------------------------------------
# Training checkpoints
# ----------------------------------------------------------------------------------------------------------------


def push_checkpoint(
    checkpoint_dir: str | os.PathLike,
    repo_id: str,
    *,
    branch: str = CHECKPOINT_BRANCH,
    path_in_repo: str | None = None,
    private: bool = False,
) -> str:
    """
    Upload an accelerate checkpoint folder (what `accelerator.save_state` wrote) to a branch of a model repo, in one
    commit, and return the commit sha.

    The checkpoint goes to the branch `branch` (created from `main` if new), under `path_in_repo` (default: the
    folder's name, e.g. "checkpoint-500"), so that the pickles it holds never reach the pipeline on `main`.

    Args:
        checkpoint_dir (`str` or `os.PathLike`): e.g. "outputs/ddpm/checkpoint-500".
        repo_id (`str`): the model repo (created if needed).
        branch (`str`, defaults to `"checkpoints"`): the branch that collects checkpoints.
        path_in_repo (`str`, *optional*): the folder in the repo.
        private (`bool`, defaults to `False`): create the repo private.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"{checkpoint_dir} is not a folder (expected an accelerate checkpoint).")
    _check_repo_id(repo_id)
    _check_branch(branch)
    if not any(fnmatch.fnmatchcase(_name(path), CHECKPOINT_MARKER) for path in _walk(checkpoint_dir)):
        raise FileNotFoundError(
            f"{checkpoint_dir} is not an accelerate checkpoint: accelerator.save_state writes random_states_0.pkl."
        )
    prefix = (checkpoint_dir.resolve().name if path_in_repo is None else path_in_repo).strip("/")
    if not prefix:
        raise ValueError("`path_in_repo` must name a folder (e.g. 'checkpoint-500'): a branch holds many checkpoints.")
    paths = [path for path in _walk(checkpoint_dir) if not _is_hidden_or_cache(path) and not _is_private(path)]
    _check_uploadable(checkpoint_dir, paths)
    api = HfApi()
    _with_retries(api.create_repo, repo_id, private=private, exist_ok=True, description=f"create repo {repo_id}")
    _with_retries(api.create_branch, repo_id, branch=branch, exist_ok=True, description=f"create branch {branch}")
    return _commit_files(api, repo_id, checkpoint_dir, paths, branch=branch, message=f"Upload {prefix}", prefix=prefix)


def download_checkpoint(spec: str, *, path_in_repo: str | None = None) -> str:
    """
    Download an accelerate checkpoint pushed by `push_checkpoint` and return its local folder, for
    `accelerator.load_state(folder)`.

    Loading that folder unpickles files from the repo (accelerate loads `custom_checkpoint_*.pkl` with
    `weights_only=False`, which can run code): only resume from repos you trust. Naming the repo is the opt-in; the
    pickles fetched and the exact commit are logged.

    Args:
        spec (`str`): "REPO_ID[@REVISION]" (what follows "hub:" in `--resume_from_checkpoint`); the revision defaults
            to the "checkpoints" branch and may be a branch, tag or commit sha.
        path_in_repo (`str`, *optional*): the checkpoint folder in the repo; when `None`, the "checkpoint-N" folder of
            the revision with the highest N.
    """
    repo_id, revision = _parse_spec(spec)
    api = HfApi()
    resolved = _resolve_revision(api, repo_id, revision)
    if path_in_repo is None:
        path_in_repo = _latest_checkpoint(_list_files(api, repo_id, resolved), spec)
    prefix = path_in_repo.strip("/")
    if not prefix:
        raise ValueError("`path_in_repo` must name the checkpoint's folder in the repo, e.g. 'checkpoint-500'.")
    # fnmatch's "*" spans folders: "checkpoint-500/*" is the whole checkpoint, subfolders included
    snapshot = _download(repo_id, revision=resolved, local_dir=None, allow_patterns=[f"{prefix}/*"])
    folder = Path(snapshot, prefix)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(f"No checkpoint files under {prefix!r} in {repo_id}@{revision}.")
    pickles = sorted(path for path in _walk(folder) if _matches(_name(path), PICKLE_PATTERNS))
    logger.warning(
        "Checkpoint %s@%s (commit %s): accelerate will unpickle %s; resume only from repos you trust.",
        repo_id,
        revision,
        resolved.resolved,
        ", ".join(pickles) or "no pickle files",
    )
    return str(folder)


def _parse_spec(spec: str) -> tuple[str, str]:
    """ "REPO_ID[@REVISION]" -> (repo_id, revision); the revision defaults to the checkpoints branch."""
    repo_id, at, revision = spec.removeprefix("hub:").partition("@")
    _check_repo_id(repo_id)
    if at and not revision:
        raise ValueError(f"`spec` {spec!r} has an empty revision after '@': use REPO_ID or REPO_ID@REVISION.")
    return repo_id, revision or CHECKPOINT_BRANCH


def _latest_checkpoint(files: list[str], spec: str) -> str:
    """The checkpoint folder among `files` whose name ends with the highest step number ("checkpoint-N")."""
    markers = [path for path in files if "/" in path and fnmatch.fnmatchcase(_name(path), CHECKPOINT_MARKER)]
    folders = {path.rsplit("/", 1)[0] for path in markers}
    if not folders:
        raise FileNotFoundError(f"{spec} holds no accelerate checkpoint (no folder with random_states_0.pkl).")
    steps = {folder: int(match.group(1)) for folder in folders if (match := re.search(r"(\d+)$", folder))}
    if not steps and len(folders) > 1:
        raise ValueError(f"{spec} holds several checkpoints ({', '.join(sorted(folders))}): pass `path_in_repo`.")
    return max(steps, key=steps.get) if steps else folders.pop()


# ----------------------------------------------------------------------------------------------------------------
# Spaces
# ----------------------------------------------------------------------------------------------------------------


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


def _is_hidden_or_cache(path: str) -> bool:
    *folders, name = path.split("/")
    hidden_folder = any(folder.startswith(".") or folder == "__pycache__" for folder in folders)
    return hidden_folder or name.startswith(".") or name.endswith(".pyc")


def _check_included(folder: Path, include: Iterable[str]) -> set[str]:
    """The files named in `include`, as POSIX paths relative to `folder`; each must be a file inside it."""
    included = set()
    for name in include:
        path = Path(folder, name)
        if not path.is_file() or not path.resolve().is_relative_to(folder.resolve()):
            raise FileNotFoundError(f"`include` names {name!r}, which is not a file inside {folder}.")
        included.add(path.resolve().relative_to(folder.resolve()).as_posix())
    return included


def _is_private(path: str) -> bool:
    """Hidden (a name or folder starting with "."), or named like a credential (keys, .netrc, tokens)."""
    parts = path.split("/")
    return any(part.startswith(".") for part in parts) or _matches(parts[-1], CREDENTIAL_FILES)


def _is_space_file(path: str) -> bool:
    *folders, name = path.split("/")
    ignored_name = any(fnmatch.fnmatchcase(name, pattern) for pattern in SPACE_IGNORED_FILES)
    return not ignored_name and not SPACE_IGNORED_FOLDERS.intersection(folders)


def _front_matter(readme: Path) -> dict:
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme.read_text(encoding="utf-8"), re.DOTALL)
    if match is None:
        raise ValueError(f"{readme} has no YAML front matter (--- ... ---) with the Space settings.")
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{readme} has invalid YAML front matter: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{readme} front matter must be a YAML mapping.")
    return data


# ----------------------------------------------------------------------------------------------------------------
# Model cards
# ----------------------------------------------------------------------------------------------------------------


def save_model_card(
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    license: str = LICENSE_DEFAULT,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """
    Render the model card of a saved pipeline and write it to `folder/README.md`.

    Reads, when present: training_args.json (the training flags), metrics.json and eval_results.json
    (`{"metric": {"value": number, "split": ..., ...}}` or `{"metric": number}`), samples.png (embedded), and the
    unet and scheduler configs. The YAML metadata (library_name, license, tags, pipeline_tag, datasets when the
    training dataset is a Hub id, and a model-index with the metrics) is built with `ModelCardData`/`EvalResult`, so
    it validates. Keys that look like credentials (token, secret, password) and token-like values never reach the card.

    Args:
        folder (`str` or `os.PathLike`): the pipeline folder.
        repo_id (`str`, *optional*): the repo the card will live in, used in the loading examples.
        license (`str`, defaults to `"apache-2.0"`): a Hub license id.
        template_path (`str` or `os.PathLike`, *optional*): another Jinja template (default: the packaged one).

    Returns:
        `huggingface_hub.ModelCard`: the card that was written.
    """
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder / 'model_index.json'} is missing: {folder} is not a saved pipeline.")
    if repo_id is not None:
        _check_repo_id(repo_id)
    training_args = _read_optional_json(folder / "training_args.json")
    metrics = {**_read_metrics(folder / "metrics.json"), **_read_metrics(folder / "eval_results.json")}
    unet_config = _read_optional_json(folder / "unet" / "config.json")
    scheduler_config = _read_optional_json(folder / "scheduler" / "scheduler_config.json")
    dataset = _dataset_name(training_args)
    model_name = (repo_id or folder.resolve().name).split("/")[-1]
    learned_variance = scheduler_config.get("variance_type") in ("learned", "learned_range")
    card = ModelCard.from_template(
        _card_data(model_name, license, dataset, metrics, learned_variance),
        template_path=str(template_path or TEMPLATE_PATH),
        generated_marker=GENERATED_MARKER,
        model_name=model_name,
        repo_id=repo_id or f"your-username/{model_name}",
        pipeline_class=PIPELINE_CLASS,
        learned_variance=learned_variance,
        sample_size=unet_config.get("sample_size", "?"),
        in_channels=unet_config.get("in_channels", "?"),
        num_train_timesteps=scheduler_config.get("num_train_timesteps", 1000),
        samples_image="samples.png" if (folder / "samples.png").is_file() else None,
        model_rows=_model_rows(folder, unet_config),
        scheduler_rows=_scheduler_rows(scheduler_config),
        training_rows=_training_rows(training_args),
        metric_rows=_metric_rows(metrics),
        has_bits_per_dim=any("bits_per_dim" in name or name == "bpd" for name in metrics),
        dataset=_redact(dataset) if dataset else None,
    )
    token = get_token()
    if token and token in card.content:  # e.g. a token passed as a training flag under an innocent name
        card = ModelCard(card.content.replace(token, "<redacted>"))
    atomic_write_text(folder / "README.md", str(card))
    return card


def _card_data(
    model_name: str, license: str, dataset: str | None, metrics: dict, learned_variance: bool
) -> ModelCardData:
    """The YAML metadata the Hub indexes: library, task, tags, license, datasets and the model-index of metrics."""
    tags = [TASK, f"diffusers:{PIPELINE_CLASS}", "diffusers", "ddpm", "hf-ddpm"]
    return ModelCardData(
        library_name="diffusers",
        license=license,
        tags=tags + (["improved-ddpm"] if learned_variance else []),
        pipeline_tag=TASK,
        datasets=[dataset] if dataset and _is_hub_dataset_id(dataset) else None,
        model_name=model_name,
        eval_results=_eval_results(metrics, dataset or "unknown") or None,
    )


def _read_optional_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object.")
    return data


def _dataset_name(training_args: dict) -> str | None:
    for key in ("dataset_name", "dataset", "train_data_dir"):
        if isinstance(training_args.get(key), str) and training_args[key]:
            return training_args[key]
    return None


def _is_hub_dataset_id(name: str) -> bool:
    """A Hub dataset id ("mnist", "ylecun/mnist"), not a local path or a "source:name" spec."""
    if os.path.exists(name) or name.startswith((".", "~", "/")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _read_metrics(path: Path) -> dict:
    """{"metric": {"value": number, ...}} or {"metric": number} from `path` ({} when absent), values checked."""
    metrics = _read_optional_json(path)
    for name, entry in metrics.items():
        value = _metric_value(entry)
        if value is None:  # NaN is written as null: shown as such, left out of the model-index
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(
                f"Metric {name!r} in {path} needs a finite number (or null) as its value "
                f'({{"{name}": {{"value": 1.23, ...}}}} or {{"{name}": 1.23}}), got {value!r}.'
            )
    return metrics


def _metric_value(entry: Any) -> Any:
    return entry.get("value") if isinstance(entry, dict) else entry


def _eval_results(metrics: dict, dataset: str) -> list[EvalResult]:
    results = []
    for name, entry in metrics.items():
        if _metric_value(entry) is None:
            continue
        details = entry if isinstance(entry, dict) else {}
        results.append(
            EvalResult(
                task_type=TASK,
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=str(details["split"]) if details.get("split") is not None else None,
                metric_type=name,
                metric_name=name.replace("_", " "),
                metric_value=float(_metric_value(entry)),
            )
        )
    return results


def _metric_rows(metrics: dict) -> list[dict[str, str]]:
    rows = []
    for name, entry in metrics.items():
        details = {k: v for k, v in entry.items() if k not in ("value", "split")} if isinstance(entry, dict) else {}
        rows.append(
            {
                "name": _cell(name),
                "value": _format(_metric_value(entry)),
                "split": _cell(entry.get("split", "")) if isinstance(entry, dict) else "",
                "details": ", ".join(f"{_cell(k)}: {_format(v)}" for k, v in details.items() if not _is_secret(k)),
            }
        )
    return rows


def _model_rows(folder: Path, unet_config: dict) -> list[tuple[str, str]]:
    rows = [("Pipeline", f"`{PIPELINE_CLASS}` (UNet2DModel + DDPMPosteriorScheduler)")]
    for key in ("sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block"):
        if key in unet_config:
            rows.append((f"UNet `{key}`", _format(unet_config[key])))
    parameters = _count_parameters(sorted((folder / "unet").glob("*.safetensors")))
    if parameters:
        rows.append(("Parameters", f"{parameters:,}"))
    return rows


def _count_parameters(weight_files: list[Path]) -> int:
    """Parameters in safetensors files, read from their headers (8-byte length, then JSON) without loading them."""
    total = 0
    for path in weight_files:
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_size))
        total += sum(math.prod(info["shape"]) for name, info in header.items() if name != "__metadata__")
    return total


def _scheduler_rows(scheduler_config: dict) -> list[tuple[str, str]]:
    keys = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "variance_type", "prediction_type")
    keys += ("clip_sample", "timestep_spacing")
    return [(key, _format(scheduler_config[key])) for key in keys if key in scheduler_config]


def _training_rows(training_args: dict) -> list[tuple[str, str]]:
    return [(_cell(key), _format(value)) for key, value in training_args.items() if not _is_secret(key)]


def _is_secret(key: str) -> bool:
    return bool(SECRET_KEY_RE.search(str(key)))


def _redact(text: str) -> str:
    return TOKEN_RE.sub("<redacted>", text)


def _format(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_format(item) for item in value)
    elif isinstance(value, dict):
        text = json.dumps(value, sort_keys=True)
    elif value is None:
        text = "–"
    else:
        text = str(value)
    return _cell(text)


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell, with token-like strings removed."""
    return _redact(str(value)).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def _walk(folder: Path) -> list[str]:
    """Every file below `folder`, as sorted POSIX paths relative to it."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether `path` matches a pattern; a pattern spans exactly as many folders as it names ("*.py" is root-only)."""
    depth = path.count("/")
    return any(pattern.count("/") == depth and fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _check_uploadable(folder: Path, paths: list[str]) -> None:
    """Everything checked before a push sends a byte: no token in any file, every safetensors file complete."""
    _check_no_secrets(folder, paths)
    for path in paths:
        if path.endswith(".safetensors"):
            _check_safetensors(folder / path)


def _check_no_secrets(folder: Path, paths: list[str]) -> None:
    """
    Refuse to upload any file, whatever its name or type, whose bytes hold a token of this machine (the one in use,
    HF_TOKEN, the login's token file and every stored token) or anything shaped like a Hub token; PNG text chunks are
    also read decompressed (zTXt, iTXt).
    """
    tokens = {token.strip().encode() for token in _known_tokens() if token and token.strip()}
    for path in paths:
        full = folder / path
        if _holds_token(full, tokens):
            raise ValueError(f"{full} holds a Hugging Face access token: remove it before pushing (nothing was sent).")


def _known_tokens() -> list[str]:
    token_file = Path(hub_constants.HF_TOKEN_PATH)
    saved = token_file.read_text(errors="replace") if token_file.is_file() else None
    return [get_token(), os.environ.get("HF_TOKEN"), saved, *get_stored_tokens().values()]


def _holds_token(path: Path, tokens: set[bytes]) -> bool:
    with open(path, "rb") as f:
        tail = b""
        while block := f.read(SCAN_BLOCK_BYTES):
            data = tail + block
            if TOKEN_BYTES_RE.search(data) or any(token in data for token in tokens):
                return True
            tail = data[-SCAN_OVERLAP_BYTES:]
    return path.suffix.lower() == ".png" and _png_text_holds_token(path, tokens)


def _png_text_holds_token(path: Path, tokens: set[bytes]) -> bool:
    """Compressed PNG text chunks hide their bytes from the raw scan: read them as PIL decodes them."""
    import PIL.Image

    try:
        with PIL.Image.open(path, formats=["PNG"]) as image:
            texts = [f"{key}\n{value}" for key, value in getattr(image, "text", {}).items()]
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return False  # not a PNG PIL can read: the raw scan is all there is
    data = "\n".join(texts).encode("utf-8", errors="replace")
    return bool(TOKEN_BYTES_RE.search(data)) or any(token in data for token in tokens)


def _check_safetensors(path: Path) -> None:
    """
    Refuse a safetensors file that would not load: its header (8-byte length, then JSON) must parse, each tensor's
    byte range must match its dtype and shape, and the ranges must fill the file exactly (a truncated file does not).
    """
    size = path.stat().st_size
    problem = None
    try:
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            if header_size > size - 8:
                raise ValueError(f"its header claims {header_size} bytes but the file has {size}")
            header = json.loads(f.read(header_size))
        end = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, stop = info["data_offsets"]
            expected = math.prod(info["shape"]) * SAFETENSORS_DTYPE_BYTES[info["dtype"]]
            if stop - begin != expected:
                raise ValueError(f"tensor {name!r} spans {stop - begin} bytes, its shape and dtype need {expected}")
            end = max(end, stop)
        if 8 + header_size + end != size:
            problem = f"its tensors need {8 + header_size + end} bytes but the file has {size} (truncated or padded)"
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
        problem = f"its header cannot be read ({_one_line(error)})"
    except ValueError as error:
        problem = str(error)
    if problem:
        raise ValueError(f"{path} is not a complete safetensors file: {problem}; it would not load.")


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


# ----------------------------------------------------------------------------------------------------------------
# Network: retries, the one-commit push, downloads
# ----------------------------------------------------------------------------------------------------------------


def _is_transient(error: BaseException) -> bool:
    """Server overloaded or down, or the connection dropped: worth trying again."""
    if isinstance(error, RevisionResolutionError) and error.__cause__ is not None:
        return _is_transient(error.__cause__)  # the Hub failed and nothing was cached: the cause tells why
    if isinstance(error, HfHubHTTPError):
        return error.response is not None and error.response.status_code in TRANSIENT_STATUS_CODES
    if isinstance(error, OfflineModeIsEnabled):
        return False
    return isinstance(error, (httpx2.TransportError, ConnectionError)) and not isinstance(error, httpx2.ProxyError)


def _with_retries(call: Callable[..., T], *args, description: str, **kwargs) -> T:
    """`call(*args, **kwargs)`, retried after RETRY_DELAYS on transient errors. Only for idempotent calls."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if delay is None or not _is_transient(error):
                raise
            logger.warning("%s failed (%s); retrying in %.0f s", description, _one_line(error), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _head(api: HfApi, repo_id: str, branch: str, repo_type: str) -> str:
    return _with_retries(
        lambda: api.repo_info(repo_id, revision=branch, repo_type=repo_type).sha,
        description=f"read the head of {repo_id}@{branch}",
    )


def _commit_files(
    api: HfApi,
    repo_id: str,
    folder: Path,
    paths: list[str],
    *,
    branch: str,
    message: str,
    repo_type: str = "model",
    prefix: str = "",
    mirror_patterns: list[str] | None = None,
    create_pr: bool = False,
) -> str:
    """
    Commit `paths` of `folder` (under `prefix` in the repo) to `branch` in one commit and return its sha.

    The commit names the head read beforehand as its parent, so the Hub refuses it if the branch moved. On a transient
    failure the head is read again: unchanged means the commit did not land and it is sent again; moved to a commit
    with our message on top of our parent means the answer was lost but the commit landed (it is not made twice).
    """
    parent = _head(api, repo_id, branch, repo_type)
    deletions = _stale_files(api, repo_id, parent, repo_type, paths, mirror_patterns) if mirror_patterns else []

    def operations() -> list:  # fresh objects per attempt: huggingface_hub mutates them while committing
        adds = [CommitOperationAdd(path_in_repo=_join(prefix, p), path_or_fileobj=str(folder / p)) for p in paths]
        return adds + [CommitOperationDelete(path_in_repo=path) for path in deletions]

    target = f"{repo_id}@{branch}"
    for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
        try:
            info = api.create_commit(
                repo_id,
                operations(),
                commit_message=message,
                repo_type=repo_type,
                revision=branch,
                parent_commit=parent,
                create_pr=create_pr,
            )
            return info.oid
        except Exception as error:
            landed = _landed_commit(api, repo_id, repo_type, branch, parent, message, error)
            if landed is not None:
                return landed
            if delay is None or create_pr:  # a retried PR commit could open a second PR
                maybe_pr = " (a pull request may have been opened: check the repo's PRs)" if create_pr else ""
                raise HubPushError(
                    f"Push to {target} failed after {attempt} attempt(s) ({_one_line(error)}); the branch is "
                    f"unchanged at commit {parent}{maybe_pr}."
                ) from error
            logger.warning("Commit to %s failed (%s); retrying in %.0f s", target, _one_line(error), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _landed_commit(
    api: HfApi, repo_id: str, repo_type: str, branch: str, parent: str, message: str, error: Exception
) -> str | None:
    """
    After a failed commit: our commit's sha if it landed anyway (its answer was lost), None if the branch is unchanged
    and the commit may be sent again; raises for anything else (not transient, or another writer moved the branch).
    """
    target = f"{repo_id}@{branch}"
    if isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code == 412:
        raise HubPushError(
            f"{target} moved during the push (another writer committed); nothing was overwritten and the branch "
            "keeps their commit: push again."
        ) from error
    if not _is_transient(error):
        raise error
    head = _head(api, repo_id, branch, repo_type)
    if head == parent:
        return None
    if _is_our_commit(api, repo_id, repo_type, head, parent, message):
        logger.warning("The Hub's answer was lost but the commit landed: %s at %s.", target, head)
        return head
    raise HubPushError(f"{target} moved to {head} during the push; nothing was overwritten.") from error


def _is_our_commit(api: HfApi, repo_id: str, repo_type: str, head: str, parent: str, message: str) -> bool:
    commits = _with_retries(
        api.list_repo_commits, repo_id, repo_type=repo_type, revision=head, description=f"list commits of {repo_id}"
    )
    return len(commits) >= 2 and commits[0].title == message and commits[1].commit_id == parent


def _stale_files(
    api: HfApi, repo_id: str, revision: str, repo_type: str, paths: list[str], patterns: list[str]
) -> list[str]:
    """Remote files under `patterns` that the local folder no longer has (e.g. the old card's samples)."""
    remote = _with_retries(
        api.list_repo_files, repo_id, revision=revision, repo_type=repo_type, description=f"list {repo_id}"
    )
    local = set(paths)
    return sorted(path for path in remote if _matches(path, patterns) and path not in local)


def _join(prefix: str, path: str) -> str:
    return f"{prefix}/{path}" if prefix else path


def _resolve_revision(api: HfApi, repo_id: str, revision: str | None) -> ResolvedRevision:
    """The revision as a commit (a `ResolvedRevision`); the cached mapping when offline or the Hub is down."""
    try:
        return _with_retries(
            api.resolve_revision, repo_id, revision=revision, description=f"resolve {repo_id}@{revision or 'main'}"
        )
    except RevisionResolutionError as error:
        raise LocalEntryNotFoundError(
            f"{repo_id}@{revision or 'main'} is not in the local cache and the Hub cannot be reached"
            f"{' (HF_HUB_OFFLINE is set)' if hub_constants.HF_HUB_OFFLINE else ''}."
        ) from error


def _download(
    repo_id: str,
    *,
    revision: str | ResolvedRevision | None,
    local_dir: str | os.PathLike | None,
    allow_patterns: list[str],
) -> str:
    """`snapshot_download` of one resolved commit, retried (and so resumed) after transient errors."""
    resolved = revision if isinstance(revision, ResolvedRevision) else _resolve_revision(HfApi(), repo_id, revision)
    return _with_retries(
        snapshot_download,
        repo_id,
        revision=resolved,
        local_dir=os.fspath(local_dir) if local_dir is not None else None,
        allow_patterns=allow_patterns,
        description=f"download {repo_id}@{revision or 'main'}",
    )


def _list_files(api: HfApi, repo_id: str, resolved: ResolvedRevision) -> list[str]:
    try:
        return _with_retries(
            api.list_repo_files, repo_id, revision=resolved.resolved, description=f"list files of {repo_id}"
        )
    except (OfflineModeIsEnabled, httpx2.TransportError):  # offline: the listing cached by an earlier download
        return [entry.path for entry in get_cached_repo_tree(repo_id, revision=resolved.resolved)]


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"`repo_id` {repo_id!r} is not a Hub repo id (NAME or NAMESPACE/NAME): {error}") from None


def _check_branch(branch: str | None) -> None:
    if branch is not None and (not branch or re.fullmatch(r"[0-9a-f]{40}", branch) or branch.startswith("refs/tags")):
        raise ValueError(f"`revision` must name a branch to push to (new or existing), got {branch!r}.")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def describe_hub_error(error: BaseException) -> str | None:
    """A one-line explanation of a Hub failure for the command line (never containing the token), or None."""
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        server_message = error.server_message or ""
        if status == 401 and "Invalid credentials" in str(error) + server_message:
            return (
                "the Hub refused the token (401 Unauthorized: invalid or expired). Log in again with `hf auth login`"
                " or set HF_TOKEN to a valid token."
            )
        if isinstance(error, RevisionNotFoundError):
            return f"revision not found ({error.response.url}): check the branch, tag or commit sha."
        if isinstance(error, RepositoryNotFoundError):
            return "repository not found, or private and the token cannot see it (404/401)."
        if status == 401:
            return "the Hub needs a token for this (401): log in with `hf auth login` or set HF_TOKEN."
        if status == 403:
            return "the token cannot write to this repo (403 Forbidden): use a token with write access."
    if isinstance(error, httpx2.TransportError) and not isinstance(error, httpx2.ProxyError):
        return (
            f"cannot reach the Hub at {hub_constants.ENDPOINT} ({_one_line(error)}): check the network, or set "
            "HF_HUB_OFFLINE=1 to use what is cached."
        )
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return f"{_one_line(error).split(': ', 1)[-1]} (offline or unreachable Hub, nothing cached)"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Command line: push, pull, card, push-space
# ----------------------------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `push`, `pull`, `card` and `push-space` to the `hf-ddpm` command line."""
    parser = subparsers.add_parser(
        "push",
        help="upload a saved pipeline to a Hub model repo (one commit)",
        description="Upload a pipeline folder (model_index.json, unet/, scheduler/, code, card, samples, metrics) "
        "to a Hub model repo in one commit; renders README.md if missing. Never uploads pickles or tokens.",
        epilog="Example:\n  hf-ddpm push outputs/ddpm-digits your-name/ddpm-digits\n"
        "  hf-ddpm push outputs/ddpm-digits your-name/ddpm-digits --revision ema --commit_message 'EMA weights'",
    )
    parser.add_argument("path", help="the pipeline folder written by save_pretrained / hf-ddpm train")
    parser.add_argument("repo_id", help="the model repo, NAMESPACE/NAME (created if it does not exist)")
    parser.add_argument("--private", action="store_true", help="create the repo private (new repos only)")
    parser.add_argument("--revision", default=None, help="the branch to push to, created from main if new")
    parser.add_argument("--commit_message", "--commit-message", dest="commit_message", help="the commit title")
    parser.add_argument("--create_pr", "--create-pr", dest="create_pr", action="store_true", help="open a PR")
    parser.set_defaults(handler=_push_command)

    parser = subparsers.add_parser(
        "pull",
        help="download a pipeline repo and print its local folder",
        description="Download what loading a pipeline needs (plus code, card, samples, metrics) at one revision; "
        "uses the huggingface_hub cache and works offline (HF_HUB_OFFLINE=1) once cached.",
        epilog="Example:\n  hf-ddpm pull your-name/ddpm-digits --revision v1.0\n"
        "  hf-ddpm pull your-name/ddpm-digits --local_dir ddpm-digits",
    )
    parser.add_argument("repo_id", help="the model repo, NAMESPACE/NAME")
    parser.add_argument("--revision", default=None, help="a branch, tag or commit sha (default: main)")
    parser.add_argument("--local_dir", "--local-dir", dest="local_dir", help="download here instead of the cache")
    parser.set_defaults(handler=_pull_command)

    parser = subparsers.add_parser(
        "card",
        help="render the model card (README.md) of a pipeline folder",
        description="Render README.md from the training args, metrics, samples and configs in a pipeline folder.",
        epilog="Example:\n  hf-ddpm card outputs/ddpm-digits --repo_id your-name/ddpm-digits",
    )
    parser.add_argument("path", help="the pipeline folder")
    parser.add_argument("--repo_id", "--repo-id", dest="repo_id", help="the repo id shown in the loading examples")
    parser.add_argument("--license", default=LICENSE_DEFAULT, help=f"a Hub license id (default: {LICENSE_DEFAULT})")
    parser.set_defaults(handler=_card_command)

    parser = subparsers.add_parser(
        "push-space",
        help="upload a Gradio Space folder to a Hub Space",
        description="Create a Gradio Space (if needed) and upload the folder (app.py, README.md, requirements.txt, "
        "...) in one commit, without caches or credentials.",
        epilog="Example:\n  hf-ddpm push-space spaces/ddpm-digits your-name/ddpm-digits-demo",
    )
    parser.add_argument("path", help="the Space folder")
    parser.add_argument("repo_id", help="the Space repo, NAMESPACE/NAME")
    parser.add_argument("--private", action="store_true", help="create the Space private (new Spaces only)")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="send this hidden or credential-like file too (relative to the folder; repeatable); still scanned",
    )
    parser.set_defaults(handler=_push_space_command)


def _usage_checked(check: Callable[[], Any]) -> Any:
    """Run an input check; its FileNotFoundError/ValueError is bad usage (exit code 2)."""
    from hf_ddpm.cli import UsageError

    try:
        return check()
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None


def _hub_call(call: Callable[[], T]) -> T:
    """Run a Hub operation, turning its failures into one clear line (exit code 1)."""
    try:
        return call()
    except Exception as error:
        description = describe_hub_error(error)
        if description is None:
            raise
        raise RuntimeError(description) from error


def _check_push_args(args: argparse.Namespace) -> None:
    check_pipeline_folder(args.path)
    _check_repo_id(args.repo_id)
    _check_branch(args.revision)


def _push_command(args: argparse.Namespace) -> int:
    _usage_checked(lambda: _check_push_args(args))
    push = lambda: push_pipeline(  # noqa: E731
        args.path,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
    )
    sha = _usage_checked(lambda: _hub_call(push))  # a token or a truncated weight file in the folder: exit 2
    branch = args.revision or hub_constants.DEFAULT_REVISION
    print(f"Pushed {args.path} to {hub_constants.ENDPOINT}/{args.repo_id} ({branch}) at commit {sha}")
    return 0


def _pull_command(args: argparse.Namespace) -> int:
    if os.path.isdir(args.repo_id):
        from hf_ddpm.cli import UsageError

        raise UsageError(
            f"`repo_id` {args.repo_id!r} is a local folder: pull takes a Hub repo id (load a folder directly)."
        )
    _usage_checked(lambda: _check_repo_id(args.repo_id))
    print(_hub_call(lambda: pull(args.repo_id, revision=args.revision, local_dir=args.local_dir)))
    return 0


def _card_command(args: argparse.Namespace) -> int:
    _usage_checked(lambda: check_pipeline_folder(args.path))
    if args.repo_id is not None:
        _usage_checked(lambda: _check_repo_id(args.repo_id))
    save_model_card(args.path, repo_id=args.repo_id, license=args.license)
    print(Path(args.path, "README.md"))
    return 0


def _push_space_command(args: argparse.Namespace) -> int:
    _usage_checked(lambda: _check_space_folder(Path(args.path)))
    _usage_checked(lambda: _check_repo_id(args.repo_id))
    _usage_checked(lambda: _check_included(Path(args.path), args.include))
    push = lambda: push_space(args.path, args.repo_id, private=args.private, include=args.include)  # noqa: E731
    sha = _usage_checked(lambda: _hub_call(push))  # a token in a file: exit 2
    print(f"Pushed {args.path} to {hub_constants.ENDPOINT}/spaces/{args.repo_id} at commit {sha}")
    return 0
