# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The network side: one commit of the scanned bytes, downloads, and retries where huggingface_hub has none."""

import logging
import re
import time
from collections.abc import Callable, Iterable

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, snapshot_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError

from .._errors import UsageError, one_line
from ._scan import matches

logger = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # seconds before each retry
TRANSIENT_STATUS_CODES = (408, 429, 500, 502, 503, 504)


def with_retries(call: Callable[[], str], description: str) -> str:
    """
    `call()`, tried again after each of RETRY_DELAYS while it fails transiently. huggingface_hub retries its listings,
    uploads of file contents and downloads' HEAD requests, but not `create_repo`, `create_branch`, `repo_info`,
    `create_commit`, nor snapshot_download's resolution of a revision or a file GET answered with a 5xx.
    """
    for delay in RETRY_DELAYS:
        try:
            return call()
        except Exception as error:
            if not _is_transient(error):
                raise
            logger.warning("%s failed (%s); retrying in %.0f s", description, one_line(error), delay)
            time.sleep(delay)
    return call()


def _is_transient(error: BaseException | None) -> bool:
    """Server overloaded or down, or the connection dropped (also as the cause of snapshot_download's error)."""
    while error is not None:
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            return error.response.status_code in TRANSIENT_STATUS_CODES
        if isinstance(error, httpx2.TransportError) and not isinstance(error, httpx2.ProxyError):
            return True
        error = error.__cause__
    return False


def push_files(
    repo_id: str,
    files: dict[str, bytes],
    *,
    message: str,
    repo_type: str = "model",
    branch: str | None = None,
    private: bool = False,
    mirror_patterns: Iterable[str] = (),
    create_pr: bool = False,
    token: str | None = None,
) -> str:
    """
    Commit `files` (path in the repo -> the scanned bytes), and the deletion of the remote files of `mirror_patterns`
    that it lacks, in one commit whose parent is the head it was built on (the Hub refuses it, 412, if another writer
    moved the branch meanwhile); return its sha. The repo, and `branch` (from main), are created if needed.
    """
    if branch is not None and (not branch or re.fullmatch(r"[0-9a-f]{40}", branch) or branch.startswith("refs/")):
        raise UsageError(f"`revision` must name a branch to push to (new or existing), got {branch!r}.")
    branch = branch or hub_constants.DEFAULT_REVISION
    api = HfApi(token=token)

    def push() -> str:
        space_sdk = "gradio" if repo_type == "space" else None
        repo = api.create_repo(repo_id, repo_type=repo_type, private=private, space_sdk=space_sdk, exist_ok=True)
        if branch != hub_constants.DEFAULT_REVISION:
            api.create_branch(repo.repo_id, repo_type=repo_type, branch=branch, exist_ok=True)
        parent = api.repo_info(repo.repo_id, repo_type=repo_type, revision=branch).sha
        remote = api.list_repo_files(repo.repo_id, repo_type=repo_type, revision=parent) if mirror_patterns else []
        stale = [path for path in remote if matches(path, mirror_patterns) and path not in files]
        operations = [CommitOperationAdd(path, data) for path, data in files.items()]
        operations += [CommitOperationDelete(path) for path in stale]
        return api.create_commit(
            repo.repo_id,
            operations,
            commit_message=message,
            repo_type=repo_type,
            revision=branch,
            parent_commit=parent,
            create_pr=create_pr,
        ).oid

    # Each attempt reads the head again: after a commit that landed but whose answer was lost, the next attempt finds
    # every file in place, and huggingface_hub drops unchanged files and makes no second commit. A pull request is
    # not retried: a second attempt would open a second one.
    return push() if create_pr else with_retries(push, f"push to {repo_id}@{branch}")


def download(repo_id: str, *, revision: str | None, allow_patterns: list[str], local_dir=None) -> str:
    """`snapshot_download` of one commit (the cached snapshot when offline), retried, resuming what was downloaded."""
    return with_retries(
        lambda: snapshot_download(repo_id, revision=revision, local_dir=local_dir, allow_patterns=allow_patterns),
        f"download {repo_id}@{revision or 'main'}",
    )
