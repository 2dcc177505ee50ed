# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""`hf-ddpm push | pull | card | push-space`.

The pipeline and Space modules import torch and diffusers: they are imported inside the handlers, so that `--help`
prints at once. Bad input (a missing file, a secret in a file, a malformed id) exits with code 2, Hub failures with 1.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx2
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .._errors import UsageError, one_line
from ._commit import check_branch, check_repo_id
from .cards import LICENSE_DEFAULT

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `push`, `pull`, `card` and `push-space` to the `hf-ddpm` command line."""
    repo_id, branch = _argument_type(check_repo_id), _argument_type(check_branch)
    parser = subparsers.add_parser(
        "push",
        help="upload a saved pipeline to a Hub model repo (one commit)",
        description="Upload a pipeline folder (model_index.json, unet/, scheduler/, code, card, samples, metrics) "
        "to a Hub model repo in one commit; renders README.md if missing. Never uploads pickles or secrets.",
        epilog="Example:\n  hf-ddpm push outputs/ddpm-digits your-name/ddpm-digits\n"
        "  hf-ddpm push outputs/ddpm-digits your-name/ddpm-digits --revision ema --commit_message 'EMA weights'",
    )
    parser.add_argument("path", help="the pipeline folder written by save_pretrained / hf-ddpm train")
    parser.add_argument("repo_id", type=repo_id, help="the model repo, NAMESPACE/NAME (created if it does not exist)")
    parser.add_argument("--private", action="store_true", help="create the repo private (new repos only)")
    parser.add_argument("--revision", type=branch, help="the branch to push to, created from main if new")
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
    parser.add_argument("--revision", help="a branch, tag or commit sha (default: main)")
    parser.add_argument("--local_dir", "--local-dir", dest="local_dir", help="download here instead of the cache")
    parser.set_defaults(handler=_pull_command)

    parser = subparsers.add_parser(
        "card",
        help="render the model card (README.md) of a pipeline folder",
        description="Render README.md from the training args, metrics, samples and configs in a pipeline folder.",
        epilog="Example:\n  hf-ddpm card outputs/ddpm-digits --repo_id your-name/ddpm-digits",
    )
    parser.add_argument("path", help="the pipeline folder")
    parser.add_argument("--repo_id", "--repo-id", type=repo_id, help="the repo id shown in the loading examples")
    parser.add_argument("--license", default=LICENSE_DEFAULT, help=f"a Hub license id (default: {LICENSE_DEFAULT})")
    parser.set_defaults(handler=_card_command)

    parser = subparsers.add_parser(
        "push-space",
        help="upload a Gradio Space folder to a Hub Space",
        description="Create a Gradio Space (if needed) and upload the folder (app.py, README.md, requirements.txt, "
        "...) in one commit, without caches, credentials or secrets; a pipeline folder inside gets hf-ddpm's "
        "remote-code modules where it lacks them.",
        epilog="Example:\n  hf-ddpm push-space spaces/ddpm-digits your-name/ddpm-digits-demo",
    )
    parser.add_argument("path", help="the Space folder")
    parser.add_argument("repo_id", type=repo_id, help="the Space repo, NAMESPACE/NAME")
    parser.add_argument("--private", action="store_true", help="create the Space private (new Spaces only)")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="send this hidden or credential-like file too (relative to the folder; repeatable); still scanned",
    )
    parser.set_defaults(handler=_push_space_command)


def _argument_type(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse `type=` from a check that raises ValueError: its message becomes argparse's one-line error."""

    def convert(value: str) -> T:
        try:
            return check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _push_command(args: argparse.Namespace) -> int:
    from .pipelines import push_pipeline

    options = {"private": args.private, "revision": args.revision, "commit_message": args.commit_message}
    sha = _hub_call(push_pipeline, args.path, args.repo_id, create_pr=args.create_pr, **options)
    branch = args.revision or hub_constants.DEFAULT_REVISION
    print(f"Pushed {args.path} to {hub_constants.ENDPOINT}/{args.repo_id} ({branch}) at commit {sha}")
    return 0


def _pull_command(args: argparse.Namespace) -> int:
    from .pipelines import pull

    if os.path.isdir(args.repo_id):
        raise UsageError(
            f"`repo_id` {args.repo_id!r} is a local folder: pull takes a Hub repo id (load a folder directly)."
        )
    check_repo_id(args.repo_id)
    print(_hub_call(pull, args.repo_id, revision=args.revision, local_dir=args.local_dir))
    return 0


def _card_command(args: argparse.Namespace) -> int:
    from .cards import save_model_card
    from .pipelines import check_pipeline_folder

    check_pipeline_folder(args.path)
    save_model_card(args.path, repo_id=args.repo_id, license=args.license)
    print(Path(args.path, "README.md"))
    return 0


def _push_space_command(args: argparse.Namespace) -> int:
    from .spaces import push_space

    sha = _hub_call(push_space, args.path, args.repo_id, private=args.private, include=args.include)
    print(f"Pushed {args.path} to {hub_constants.ENDPOINT}/spaces/{args.repo_id} at commit {sha}")
    return 0


def _hub_call(call: Callable[..., T], *args, **kwargs) -> T:
    """`call(*args, **kwargs)`, a Hub operation, its failures turned into one clear line (exit code 1)."""
    try:
        return call(*args, **kwargs)
    except Exception as error:
        description = describe_hub_error(error)
        if description is None:
            raise
        raise RuntimeError(description) from error


def describe_hub_error(error: BaseException) -> str | None:
    """A one-line explanation of a Hub failure for the command line (never containing the token), or None."""
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status == 401 and "Invalid credentials" in str(error) + (error.server_message or ""):
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
        if status == 412:
            return "the branch moved during the push (another writer committed); nothing was overwritten: push again."
    if isinstance(error, httpx2.TransportError) and not isinstance(error, httpx2.ProxyError):
        return (
            f"cannot reach the Hub at {hub_constants.ENDPOINT} ({one_line(error)}): check the network, or set "
            "HF_HUB_OFFLINE=1 to use what is cached."
        )
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return f"{one_line(error).split(': ', 1)[-1]} (offline or unreachable Hub, nothing cached)"
    return None
