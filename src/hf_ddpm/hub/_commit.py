# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The network side of every push and download: retries of transient failures, the one-commit push against a
known parent (with the check that recognises a commit whose answer was lost), downloads of one resolved commit."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx2
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
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
from huggingface_hub.utils import validate_repo_id

from .._errors import one_line
from ._scan import _matches

logger = logging.getLogger(__name__)


T = TypeVar("T")
# Seconds to wait before each retry of a call that failed transiently (server errors, dropped connections).
RETRY_DELAYS = (1.0, 2.0, 4.0)
TRANSIENT_STATUS_CODES = (408, 429, 500, 502, 503, 504)


class HubPushError(RuntimeError):
    """A push that did not complete. The remote branch is left at its previous commit (named in the message)."""


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
            logger.warning("%s failed (%s); retrying in %.0f s", description, one_line(error), delay)
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
    # create_commit, not upload_folder: it sends exactly the files that were scanned (upload_folder walks the folder
    # again) and lets each attempt be checked for a lost answer before the next.
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
                    f"Push to {target} failed after {attempt} attempt(s) ({one_line(error)}); the branch is "
                    f"unchanged at commit {parent}{maybe_pr}."
                ) from error
            logger.warning("Commit to %s failed (%s); retrying in %.0f s", target, one_line(error), delay)
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
            f"cannot reach the Hub at {hub_constants.ENDPOINT} ({one_line(error)}): check the network, or set "
            "HF_HUB_OFFLINE=1 to use what is cached."
        )
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return f"{one_line(error).split(': ', 1)[-1]} (offline or unreachable Hub, nothing cached)"
    return None
