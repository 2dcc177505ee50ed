# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""`hf-ddpm push | pull | card | push-space`. Bad input exits with code 2, Hub failures with 1, in one line each."""

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import httpx2
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

from .._errors import UsageError, one_line
from .cards import LICENSE_DEFAULT, save_model_card
from .pipelines import check_pipeline_folder, pull, push_pipeline
from .spaces import push_space


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `push`, `pull`, `card` and `push-space` to the `hf-ddpm` command line."""
    parser = subparsers.add_parser(
        "push",
        help="upload a saved pipeline to a Hub model repo (one commit)",
        description="Upload a pipeline folder (model_index.json, unet/, scheduler/, code, card, samples, metrics) "
        "to a Hub model repo in one commit; renders README.md if missing. Never uploads pickles or secrets.",
        epilog="Example:\n  hf-ddpm push outputs/ddpm-digits your-name/ddpm-digits\n"
        "  hf-ddpm push outputs/ddpm-digits your-name/ddpm-digits --revision ema --commit_message 'EMA weights'",
    )
    parser.add_argument("path", help="the pipeline folder written by save_pretrained / hf-ddpm train")
    parser.add_argument("repo_id", help="the model repo, NAMESPACE/NAME (created if it does not exist)")
    parser.add_argument("--private", action="store_true", help="create the repo private (new repos only)")
    parser.add_argument("--revision", help="the branch to push to, created from main if new")
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
    parser.add_argument("--repo_id", "--repo-id", dest="repo_id", help="the repo id shown in the loading examples")
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


def hub_errors_in_one_line(handler: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    """`handler`, its Hub failures told in one line: what the Hub answered, or that it could not be reached."""

    def run(args: argparse.Namespace) -> None:
        try:
            handler(args)
        except HFValidationError as error:  # a malformed repo id: bad input
            raise UsageError(str(error)) from None
        except HfHubHTTPError as error:
            answer = f"{error.response.url} answered {error.response.status_code} {error.response.reason_phrase}"
            raise RuntimeError(f"{answer}: {error.server_message}" if error.server_message else answer) from error
        except httpx2.TransportError as error:
            raise RuntimeError(f"cannot reach the Hub at {hub_constants.ENDPOINT}: {one_line(error)}") from error
        except LocalEntryNotFoundError as error:  # a download with no connection and nothing of it in the cache
            raise RuntimeError(
                f"cannot reach the Hub at {hub_constants.ENDPOINT}, and the cache has no copy"
            ) from error

    return run


@hub_errors_in_one_line
def _push_command(args: argparse.Namespace) -> None:
    options = {"private": args.private, "revision": args.revision, "commit_message": args.commit_message}
    sha = push_pipeline(args.path, args.repo_id, create_pr=args.create_pr, **options)
    branch = args.revision or hub_constants.DEFAULT_REVISION
    print(f"Pushed {args.path} to {hub_constants.ENDPOINT}/{args.repo_id} ({branch}) at commit {sha}")


@hub_errors_in_one_line
def _pull_command(args: argparse.Namespace) -> None:
    if os.path.isdir(args.repo_id):
        raise UsageError(f"`repo_id` {args.repo_id!r} is a local folder: pull takes a Hub repo id.")
    print(pull(args.repo_id, revision=args.revision, local_dir=args.local_dir))


@hub_errors_in_one_line
def _card_command(args: argparse.Namespace) -> None:
    save_model_card(check_pipeline_folder(args.path), repo_id=args.repo_id, license=args.license)
    print(Path(args.path, "README.md"))


@hub_errors_in_one_line
def _push_space_command(args: argparse.Namespace) -> None:
    sha = push_space(args.path, args.repo_id, private=args.private, include=args.include)
    print(f"Pushed {args.path} to {hub_constants.ENDPOINT}/spaces/{args.repo_id} at commit {sha}")
