"""Routes of the fake Hugging Face Hub: ``HubApp`` maps a :class:`Request` to a :class:`Response`, transport-free.

Routes, headers and JSON shapes follow what the ``huggingface_hub`` client (2.x) sends and parses:

* ``GET /api/whoami-v2``; ``POST /api/repos/create``; ``DELETE /api/repos/delete``; ``POST /api/validate-yaml``
* ``/api/{models,datasets,spaces}/{ns}/{name}``: info (``/revision/{rev}``), ``/tree/{rev}[/{path}]``, ``/refs``,
  ``/commits/{rev}``, ``/paths-info/{rev}``, ``/preupload/{rev}``, ``/commit/{rev}`` (NDJSON), ``/branch/{b}``,
  ``/tag/{rev}``, ``/settings``, ``/runtime`` (spaces)
* ``GET|HEAD /[{datasets,spaces}/]{ns}/{name}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ranges
* Git LFS basic transfer: ``POST /{repo}.git/info/lfs/objects/batch``, ``PUT /_lfs/objects/{sha256}``,
  ``POST /{repo}.git/info/lfs/objects/verify``

Revisions and paths arrive percent-encoded (the client quotes revisions with ``safe=""``, so ``refs/pr/1`` is a single
``refs%2Fpr%2F1`` segment): routes match the raw path and decode each captured group afterwards.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from .faults import Faults
from .storage import LFS_POINTER_SIZE, REPO_TYPES, HubError, Repo, Storage

SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
TRUE_VALUES = ("1", "true", "yes", "on")


@dataclass
class Request:
    """A parsed HTTP request. ``params`` holds the URL-decoded groups captured by the matched route."""

    method: str
    raw_path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in TRUE_VALUES

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err


@dataclass
class Response:
    """What to send back. A file body is streamed from ``file`` (``offset``/``length`` select a range).

    ``abort`` closes the connection without answering; ``drop_after`` sends the headers and only that many body
    bytes, then closes the connection (both simulate network failures, see :mod:`faults`).
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    offset: int = 0
    length: int = 0
    abort: bool = False
    drop_after: int | None = None
    fault: str | None = None

    @property
    def content_length(self) -> int:
        return self.length if self.file is not None else len(self.body)


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data).encode()
    return Response(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)


def error_response(error: HubError, headers: dict[str, str] | None = None) -> Response:
    """JSON error like the Hub's: the client reads ``X-Error-Code`` to pick the exception class and shows ``error``."""
    extra = {"X-Error-Message": error.message, **(headers or {})}
    if error.code:
        extra["X-Error-Code"] = error.code
    return json_response(error.status, {**error.extra, "error": error.message}, extra)


def _repo_not_found(user: str | None) -> HubError:
    # The Hub answers 401 to anonymous callers and 404 to authenticated ones, so that private repos are
    # indistinguishable from missing ones.
    return HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")


_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API_REPO = r"^/api/(?P<plural>models|datasets|spaces)/" + _REPO
_WEB_REPO = r"^/(?:(?P<plural>datasets|spaces)/)?" + _REPO


class HubApp:
    """Request handlers of the fake Hub. Thread-safe: all state lives in :class:`Storage` and :class:`Faults`."""

    def __init__(self, store: Storage, faults: Faults, tokens: dict[str, str], orgs: dict[str, list[str]]) -> None:
        self.store = store
        self.faults = faults
        self.tokens = tokens  # token -> user name
        self.orgs = orgs  # user name -> organisations the user can write to
        self.base_url = ""  # set by the server once it is bound
        self.lfs_threshold: int | None = None  # preupload answers "lfs" for files at least this big
        self.routes: list[tuple[str, re.Pattern[str], Callable[[Request, str | None], Response]]] = [
            ("GET", re.compile(r"^/api/whoami-v2$"), self.whoami),
            ("POST", re.compile(r"^/api/repos/create$"), self.create_repo),
            ("DELETE", re.compile(r"^/api/repos/delete$"), self.delete_repo),
            ("POST", re.compile(r"^/api/validate-yaml$"), self.validate_yaml),
            ("GET", re.compile(_API_REPO + r"(?:/revision/(?P<rev>[^/]+))?$"), self.repo_info),
            ("GET", re.compile(_API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$"), self.tree),
            ("POST", re.compile(_API_REPO + r"/paths-info/(?P<rev>[^/]+)$"), self.paths_info),
            ("GET", re.compile(_API_REPO + r"/refs$"), self.refs),
            ("GET", re.compile(_API_REPO + r"/commits/(?P<rev>[^/]+)$"), self.commits),
            ("POST", re.compile(_API_REPO + r"/preupload/(?P<rev>[^/]+)$"), self.preupload),
            ("POST", re.compile(_API_REPO + r"/commit/(?P<rev>[^/]+)$"), self.commit),
            ("POST", re.compile(_API_REPO + r"/branch/(?P<branch>[^/]+)$"), self.create_branch),
            ("DELETE", re.compile(_API_REPO + r"/branch/(?P<branch>[^/]+)$"), self.delete_branch),
            ("POST", re.compile(_API_REPO + r"/tag/(?P<rev>[^/]+)$"), self.create_tag),
            ("DELETE", re.compile(_API_REPO + r"/tag/(?P<tag>[^/]+)$"), self.delete_tag),
            ("PUT", re.compile(_API_REPO + r"/settings$"), self.update_settings),
            ("GET", re.compile(_API_REPO + r"/runtime$"), self.space_runtime),
            ("GET", re.compile(_WEB_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), self.resolve),
            ("POST", re.compile(_WEB_REPO + r"\.git/info/lfs/objects/batch$"), self.lfs_batch),
            ("POST", re.compile(_WEB_REPO + r"\.git/info/lfs/objects/verify$"), self.lfs_verify),
            ("PUT", re.compile(r"^/_lfs/objects/(?P<oid>[0-9a-f]{64})$"), self.lfs_put),
        ]

    # ------------------------------------------------------------------ dispatch

    def handle(self, request: Request) -> Response:
        """Route ``request`` and turn :class:`HubError` into the Hub's JSON error responses."""
        try:
            user = self.authenticate(request)
            handler = self._match(request)
            return handler(request, user)
        except HubError as error:
            return error_response(error)
        except Exception as error:  # noqa: BLE001 - deliberately turned into an HTTP 500
            # A bug in this fake server: answer a readable 500 (the traceback goes to the captured stderr)
            # rather than a dropped connection that would look like an injected network fault.
            traceback.print_exc()
            return json_response(500, {"error": f"Fake Hub server error: {error!r}"})

    def _match(self, request: Request) -> Callable[[Request, str | None], Response]:
        # HEAD is served by the GET handler; the transport drops the body.
        method = "GET" if request.method == "HEAD" else request.method
        for route_method, pattern, handler in self.routes:
            match = pattern.match(request.raw_path)
            if match and route_method == method:
                request.params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                return handler
        raise HubError(404, "Sorry, we can't find the page you are looking for.")

    def authenticate(self, request: Request) -> str | None:
        """User behind the ``Authorization: Bearer`` token; ``None`` if anonymous; 401 for an unknown token."""
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            # Exact wording of the Hub: the client special-cases it to not report "repository not found".
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token.strip()]

    # ------------------------------------------------------------------ helpers

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.base_url}/{repo.url_prefix}{repo.repo_id}"

    def _can_write(self, user: str, namespace: str) -> bool:
        return namespace == user or namespace in self.orgs.get(user, [])

    def _readable_repo(self, request: Request, user: str | None) -> Repo:
        """The repo named by the route, if ``user`` may read it (private repos are visible to their owners only)."""
        repo_type = (request.params.get("plural") or "models")[:-1]
        repo = self.store.get_repo(repo_type, f"{request.params['ns']}/{request.params['name']}")
        if repo is None or (repo.private and (user is None or not self._can_write(user, repo.namespace))):
            raise _repo_not_found(user)
        return repo

    def _writable_repo(self, request: Request, user: str | None) -> Repo:
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repository")
        repo = self._readable_repo(request, user)
        if not self._can_write(user, repo.namespace):
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")
        return repo

    def _snapshot(self, repo: Repo, revision: str) -> tuple[str, dict[str, Any]]:
        commit_id = self.store.resolve(repo, revision)
        return commit_id, self.store.get_commit(repo, commit_id)

    def _last_commits(self, repo: Repo, commit_id: str, paths: list[str]) -> dict[str, dict[str, str]]:
        """For ``expand=True``: the newest commit that changed each path (or, for folders, anything under it)."""
        history = self.store.history(repo, commit_id)
        result: dict[str, dict[str, str]] = {}
        for path in paths:
            for commit, parent in zip(history, [*history[1:], None], strict=True):
                if parent is None or _subtree(commit["files"], path) != _subtree(parent["files"], path):
                    result[path] = {"id": commit["id"], "title": commit["title"], "date": commit["date"]}
                    break
        return result

    # ------------------------------------------------------------------ account and repo management

    def whoami(self, request: Request, user: str | None) -> Response:
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in self.orgs.get(user, [])]
        return json_response(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.replace("-", " ").title(),
                "email": f"{user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "avatarUrl": "",
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "test token", "role": "write"}},
            },
        )

    def create_repo(self, request: Request, user: str | None) -> Response:
        if user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        payload = request.json()
        repo_type = payload.get("type") or "model"
        name, namespace = payload.get("name") or "", payload.get("organization") or user
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if not REPO_NAME_RE.match(name) or "--" in name or ".." in name or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: {name!r}")
        if not self._can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace {namespace}")
        sdk = payload.get("sdk")
        if repo_type == "space" and sdk not in SPACE_SDKS:
            raise HubError(400, f"Invalid or missing Space SDK: {sdk!r}, expected one of {SPACE_SDKS}")
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        repo_id = f"{namespace}/{name}"
        existing = self.store.get_repo(repo_type, repo_id)
        if existing is not None:
            # The client reads "url" from the 409 body when create_repo(exist_ok=True).
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": self._repo_url(existing)})
        repo = self.store.create_repo(repo_type, repo_id, private=private, sdk=sdk, author=user)
        return json_response(200, {"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def delete_repo(self, request: Request, user: str | None) -> Response:
        payload = request.json()
        namespace = payload.get("organization") or user or ""
        request.params = {"plural": f"{payload.get('type') or 'model'}s", "ns": namespace, "name": payload["name"]}
        self.store.delete_repo(self._writable_repo(request, user))
        return json_response(200, {})

    def update_settings(self, request: Request, user: str | None) -> Response:
        repo = self._writable_repo(request, user)
        payload = request.json()
        if "visibility" in payload:
            repo = self.store.set_private(repo, payload["visibility"] == "private")
        elif "private" in payload:
            repo = self.store.set_private(repo, bool(payload["private"]))
        return json_response(200, {"private": repo.private})

    def validate_yaml(self, request: Request, user: str | None) -> Response:
        # Model cards are not validated: accept any README metadata.
        return json_response(200, {"errors": [], "warnings": []})

    # ------------------------------------------------------------------ read API

    def repo_info(self, request: Request, user: str | None) -> Response:
        repo = self._readable_repo(request, user)
        commit_id, commit = self._snapshot(repo, request.params.get("rev", "main"))
        files = commit["files"]
        siblings = [_sibling(path, entry, request.flag("blobs")) for path, entry in sorted(files.items())]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit_id,
            "lastModified": commit["date"],
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(entry["size"] for entry in files.values()),
        }
        if repo.repo_type == "model":
            info.update(modelId=repo.repo_id, spaces=[])
        if repo.repo_type == "space":
            info.update(sdk=repo.sdk, subdomain=repo.repo_id.replace("/", "-"), runtime=_space_runtime())
        return json_response(200, info)

    def space_runtime(self, request: Request, user: str | None) -> Response:
        self._readable_repo(request, user)
        return json_response(200, _space_runtime())

    def tree(self, request: Request, user: str | None) -> Response:
        repo = self._readable_repo(request, user)
        commit_id, commit = self._snapshot(repo, request.params["rev"])
        files = commit["files"]
        base = request.params.get("path", "").strip("/")
        prefix = f"{base}/" if base else ""
        under = sorted(path for path in files if path.startswith(prefix))
        if base and not under:
            raise HubError(404, f"{base} does not exist on {request.params['rev']}", "EntryNotFound")
        entries: dict[str, dict[str, Any]] = {}
        for path in under:
            parts = path[len(prefix) :].split("/")
            depth = len(parts) if request.flag("recursive") else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):
                folder = prefix + "/".join(parts[:i])
                entries.setdefault(folder, _folder_entry(folder, files))
            if len(parts) <= depth:
                entries[path] = _file_entry(path, files[path])
        if request.flag("expand"):
            _add_last_commits(entries, self._last_commits(repo, commit_id, list(entries)))
        return json_response(200, list(entries.values()))

    def paths_info(self, request: Request, user: str | None) -> Response:
        repo = self._readable_repo(request, user)
        commit_id, commit = self._snapshot(repo, request.params["rev"])
        files = commit["files"]
        form = parse_qs(request.body.decode(), keep_blank_values=True)
        entries: dict[str, dict[str, Any]] = {}
        for path in (p.strip("/") for p in form.get("paths", [])):
            if path in files:
                entries[path] = _file_entry(path, files[path])
            elif any(p.startswith(f"{path}/") for p in files):
                entries[path] = _folder_entry(path, files)
        if (form.get("expand") or ["false"])[0].lower() in TRUE_VALUES:
            _add_last_commits(entries, self._last_commits(repo, commit_id, list(entries)))
        return json_response(200, list(entries.values()))

    def refs(self, request: Request, user: str | None) -> Response:
        repo = self._readable_repo(request, user)
        refs = self.store.refs(repo)
        data: dict[str, Any] = {
            "branches": [_ref("refs/heads/", name, oid) for name, oid in sorted(refs["branches"].items())],
            "tags": [_ref("refs/tags/", name, oid) for name, oid in sorted(refs["tags"].items())],
            "converts": [],
        }
        if request.flag("include_prs"):
            prs = sorted(refs["prs"].items(), key=lambda item: int(item[0]))
            data["pullRequests"] = [
                {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid} for n, oid in prs
            ]
        return json_response(200, data)

    def commits(self, request: Request, user: str | None) -> Response:
        repo = self._readable_repo(request, user)
        commit_id = self.store.resolve(repo, request.params["rev"])
        items = [
            {
                "id": commit["id"],
                "title": commit["title"],
                "message": commit["message"],
                "authors": [{"user": commit["author"], "avatar": ""}],
                "date": commit["date"],
            }
            for commit in self.store.history(repo, commit_id)
        ]
        return json_response(200, items)

    def resolve(self, request: Request, user: str | None) -> Response:
        """File download (GET) or metadata (HEAD), with the headers ``hf_hub_download`` relies on."""
        repo = self._readable_repo(request, user)
        commit_id, commit = self._snapshot(repo, request.params["rev"])
        entry = commit["files"].get(request.params["path"])
        if entry is None:
            # X-Repo-Commit on a 404 lets the client cache the file's absence for this commit.
            error = HubError(404, "Entry not found", "EntryNotFound")
            return error_response(error, {"X-Repo-Commit": commit_id})
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit_id,
        }
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(entry["size"])})
        return _file_response(self.store.blob_path(entry["sha256"]), entry["size"], headers, request)

    # ------------------------------------------------------------------ write API

    def preupload(self, request: Request, user: str | None) -> Response:
        repo = self._writable_repo(request, user)
        _, commit = self._snapshot(repo, request.params["rev"])
        current = commit["files"]
        files = []
        for item in request.json().get("files", []):
            lfs = self.lfs_threshold is not None and int(item.get("size", 0)) >= self.lfs_threshold
            existing = current.get(item["path"])
            # The client skips files whose remote oid equals its local one (git sha1, or sha256 for LFS files).
            oid = (existing["sha256"] if lfs else existing["oid"]) if existing else None
            files.append(
                {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return json_response(200, {"files": files, "commitOid": commit["id"]})

    def commit(self, request: Request, user: str | None) -> Response:
        """NDJSON commit: every blob is stored before the branch moves, so a failed commit changes nothing."""
        repo = self._writable_repo(request, user)
        header, operations = self._parse_commit_payload(request.body)
        ref_kind, ref_name, head = self._commit_target(repo, request.params["rev"])
        parent = header.get("parentCommit")
        if parent and parent != head:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        commit = self.store.prepare_commit(
            repo, head, operations, header.get("summary") or "", header.get("description") or "", user or ""
        )
        if self.faults.take("abort_commit", request.method, unquote(request.raw_path)):
            # Simulated crash: the commit object exists but was never published.
            return Response(0, abort=True, fault="abort_commit")
        data: dict[str, Any] = {"success": True, "commitOid": commit["id"], "hookOutput": ""}
        data["commitUrl"] = f"{self._repo_url(repo)}/commit/{commit['id']}"
        if request.flag("create_pr"):
            number = self.store.open_pr(repo, commit["id"])
            data["pullRequestUrl"] = f"{self._repo_url(repo)}/discussions/{number}"
        else:
            self.store.publish(repo, ref_kind, ref_name, commit["id"], expected_head=head)
        if self.faults.take("lose_commit_answer", request.method, unquote(request.raw_path)):
            return Response(0, abort=True, fault="lose_commit_answer")  # published, but the client never hears it
        return json_response(200, data)

    def _commit_target(self, repo: Repo, revision: str) -> tuple[str, str, str]:
        """(ref kind, ref name, current head) of the branch or PR ref a commit goes to."""
        refs = self.store.refs(repo)
        if revision.startswith("refs/pr/") and revision[len("refs/pr/") :] in refs["prs"]:
            number = revision[len("refs/pr/") :]
            return "prs", number, refs["prs"][number]
        branch = revision.removeprefix("refs/heads/")
        if branch not in refs["branches"]:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return "branches", branch, refs["branches"][branch]

    def _parse_commit_payload(self, body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        header: dict[str, Any] = {}
        operations: list[dict[str, Any]] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    header = value
                else:
                    operations.append(self._commit_operation(key, value))
            except (ValueError, KeyError, TypeError) as err:
                raise HubError(400, f"Invalid commit payload line: {err!r}") from err
        return header, operations

    def _commit_operation(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Storage operation for one NDJSON line; file contents are stored right away (content-addressed)."""
        if key == "file":
            return {"op": "add", "path": value["path"], "entry": self._regular_entry(value)}
        if key == "lfsFile":
            entry = self.store.lfs_entry(value["oid"])
            if "size" in value and int(value["size"]) != entry["size"]:
                raise HubError(422, f"Size mismatch for LFS object {value['oid']}")
            return {"op": "add", "path": value["path"], "entry": entry}
        if key in ("deletedFile", "deletedFolder"):
            return {"op": "delete_file" if key == "deletedFile" else "delete_folder", "path": value["path"]}
        raise HubError(400, f"Unknown commit operation: {key}")

    def _regular_entry(self, value: dict[str, Any]) -> dict[str, Any]:
        content = value.get("content", "")
        try:
            data = base64.b64decode(content, validate=True) if value.get("encoding") == "base64" else content.encode()
        except binascii.Error as err:
            raise HubError(400, f"Invalid base64 content for {value.get('path')}") from err
        return {**self.store.put_blob(data), "lfs": False}

    def create_branch(self, request: Request, user: str | None) -> Response:
        repo = self._writable_repo(request, user)
        self.store.create_branch(repo, request.params["branch"], request.json().get("startingPoint"))
        return json_response(200, {})

    def delete_branch(self, request: Request, user: str | None) -> Response:
        self.store.delete_branch(self._writable_repo(request, user), request.params["branch"])
        return json_response(200, {})

    def create_tag(self, request: Request, user: str | None) -> Response:
        repo = self._writable_repo(request, user)
        tag = request.json().get("tag")
        if not tag:
            raise HubError(400, "Missing tag name")
        self.store.create_tag(repo, tag, request.params["rev"])
        return json_response(200, {})

    def delete_tag(self, request: Request, user: str | None) -> Response:
        self.store.delete_tag(self._writable_repo(request, user), request.params["tag"])
        return json_response(200, {})

    # ------------------------------------------------------------------ git LFS (basic transfer)

    def lfs_batch(self, request: Request, user: str | None) -> Response:
        repo = self._writable_repo(request, user)
        payload = request.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            if self.store.has_blob(oid):
                objects.append({"oid": oid, "size": size})  # no actions: already stored
                continue
            actions = {
                "upload": {"href": f"{self.base_url}/_lfs/objects/{oid}"},
                "verify": {"href": f"{self._repo_url(repo)}.git/info/lfs/objects/verify"},
            }
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        headers = {"Content-Type": "application/vnd.git-lfs+json"}
        return json_response(200, {"transfer": "basic", "objects": objects}, headers)

    def lfs_put(self, request: Request, user: str | None) -> Response:
        # Like a pre-signed storage URL: no token needed, but the content must hash to the oid in the URL.
        if hashlib.sha256(request.body).hexdigest() != request.params["oid"]:
            raise HubError(400, "Uploaded content does not match its sha256 oid")
        self.store.put_blob(request.body)
        return Response(200, {"ETag": f'"{request.params["oid"]}"'})

    def lfs_verify(self, request: Request, user: str | None) -> Response:
        self._writable_repo(request, user)
        payload = request.json()
        if not self.store.has_blob(payload.get("oid", "")):
            raise HubError(404, f"LFS object {payload.get('oid')} not found")
        if self.store.lfs_entry(payload["oid"])["size"] != int(payload.get("size", -1)):
            raise HubError(422, f"Size mismatch for LFS object {payload['oid']}")
        return json_response(200, {"success": True})


# ---------------------------------------------------------------------- JSON shapes


def _sibling(path: str, entry: dict[str, Any], with_blobs: bool) -> dict[str, Any]:
    sibling: dict[str, Any] = {"rfilename": path}
    if with_blobs:
        sibling.update(size=entry["size"], blobId=entry["oid"])
        if entry["lfs"]:
            sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": LFS_POINTER_SIZE}
    return sibling


def _file_entry(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": LFS_POINTER_SIZE}
    return item


def _subtree(files: dict[str, Any], path: str) -> list[tuple[str, str]]:
    return sorted((p, e["oid"]) for p, e in files.items() if p == path or p.startswith(f"{path}/"))


def _folder_entry(path: str, files: dict[str, Any]) -> dict[str, Any]:
    # A folder's oid only has to change when its content does: hash the sorted (path, oid) pairs below it.
    oid = hashlib.sha1(json.dumps(_subtree(files, path)).encode()).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


def _add_last_commits(entries: dict[str, dict[str, Any]], last_commits: dict[str, dict[str, str]]) -> None:
    for path, entry in entries.items():
        if path in last_commits:
            entry["lastCommit"] = last_commits[path]


def _ref(prefix: str, name: str, oid: str) -> dict[str, str]:
    return {"name": name, "ref": f"{prefix}{name}", "targetCommit": oid}


def _space_runtime() -> dict[str, Any]:
    return {
        "stage": "RUNNING",
        "hardware": {"current": "cpu-basic", "requested": "cpu-basic"},
        "storage": None,
        "gcTimeout": 172800,
        "replicas": {"current": 1, "requested": 1},
        "devMode": False,
        "domains": [],
    }


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def _file_response(path: Path, size: int, headers: dict[str, str], request: Request) -> Response:
    """200 with the whole file, or 206/416 for a single-range ``Range`` request (used to resume downloads)."""
    range_header = request.headers.get("range")
    match = _RANGE_RE.match(range_header) if range_header else None
    if match is None or not (match.group(1) or match.group(2)):
        return Response(200, headers, file=path, offset=0, length=size)
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    else:  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    if start >= size or start > end:
        return Response(416, {**headers, "Content-Range": f"bytes */{size}"})
    headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
    return Response(206, headers, file=path, offset=start, length=end - start + 1)
