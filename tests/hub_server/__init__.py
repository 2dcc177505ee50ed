"""A local Hugging Face Hub-compatible HTTP server for tests (like moto for AWS).

It speaks the HTTP API that the real ``huggingface_hub`` client uses (repos, commits, branches, tags, downloads with
ranges, git LFS basic uploads), stores repos on disk with real 40-hex commit ids, and lets tests inject faults
(HTTP errors, slow answers, truncated downloads, interrupted commits) and inspect a request log.

    with HubServer(tmp_path) as hub:
        hub.configure(monkeypatch)          # in-process huggingface_hub -> hub.url
        subprocess.run(cmd, env=hub.env())  # or a subprocess
"""

from .faults import FaultRule, RequestRecord
from .server import HubServer
from .storage import HubError, Storage

__all__ = ["FaultRule", "HubError", "HubServer", "RequestRecord", "Storage"]
