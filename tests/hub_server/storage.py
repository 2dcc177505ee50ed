"""On-disk, git-like repository store behind the fake Hugging Face Hub server.

Layout under ``root``::

    blobs/<sha256>                            file contents, content-addressed (shared by all repos)
    repos/<type>/<namespace>/<name>/repo.json  repo metadata (private flag, sdk, creation date)
    repos/<type>/<namespace>/<name>/refs.json  branches, tags and pull-request refs -> commit id
    repos/<type>/<namespace>/<name>/commits/<commit id>.json

Every commit is a full snapshot: a manifest ``path -> {oid, sha256, size, lfs}`` plus parent pointers, so
resolving any revision is a single file read. Commit ids are the sha1 of the commit's canonical JSON, which makes
them real 40-hex ids that change whenever content, parents, message or date change.

Publishing is the only mutation that readers can observe: blobs and the commit object are written first (an
interrupted commit leaves at most orphan objects), then ``refs.json`` is replaced atomically under a lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_TYPES = ("model", "dataset", "space")
COMMIT_ID_LENGTH = 40
LFS_POINTER_SIZE = 134  # size of a git-lfs pointer file, reported in tree listings like the real Hub does

# Same content the real Hub puts in the initial commit of every new repo, so snapshots look familiar.
DEFAULT_GITATTRIBUTES = b"""*.7z filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
"""


class HubError(Exception):
    """An error with the HTTP status, message and ``X-Error-Code`` the server should answer with.

    ``extra`` fields are added to the JSON body next to ``error``.
    """

    def __init__(
        self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra or {}


def now_iso() -> str:
    """Current UTC time in the ISO format the Hub uses (``2024-01-02T03:04:05.000Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """Git's object id of a blob: sha1 of ``blob <size>\\0<content>``, the ETag the Hub serves for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_commit_id(revision: str) -> bool:
    """Whether ``revision`` looks like a full commit id (40 lowercase hex characters)."""
    return len(revision) == COMMIT_ID_LENGTH and all(c in "0123456789abcdef" for c in revision)


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file + rename so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Repo:
    """Metadata of one repository."""

    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None
    created_at: str

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/", 1)[0]

    @property
    def url_prefix(self) -> str:
        """Path prefix used in web/resolve URLs: '' for models, 'datasets/' or 'spaces/' otherwise."""
        return "" if self.repo_type == "model" else f"{self.repo_type}s/"


class Storage:
    """Thread-safe repository store. All public methods raise :class:`HubError` on client errors."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        # One lock for every ref update: commits are rare in tests, correctness matters more than throughput.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ blobs

    def put_blob(self, data: bytes) -> dict[str, Any]:
        """Store ``data`` (idempotent) and return its manifest entry (without the ``lfs`` flag)."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blobs_dir / sha256
        if not path.exists():
            tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return {"oid": git_blob_oid(data), "sha256": sha256, "size": len(data)}

    def has_blob(self, sha256: str) -> bool:
        return (self.blobs_dir / sha256).is_file()

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256

    def lfs_entry(self, sha256: str) -> dict[str, Any]:
        """Manifest entry of an already uploaded LFS object, referenced by an ``lfsFile`` commit line."""
        path = self.blob_path(sha256)
        if not path.is_file():
            raise HubError(422, f"LFS object {sha256} has not been uploaded", "LfsObjectNotFound")
        data = path.read_bytes()
        return {"oid": git_blob_oid(data), "sha256": sha256, "size": len(data), "lfs": True}

    # ------------------------------------------------------------------ repos

    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        namespace, name = repo_id.split("/", 1)
        return self.root / "repos" / repo_type / namespace / name

    def get_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        meta_path = self._repo_dir(repo_type, repo_id) / "repo.json"
        if not meta_path.is_file():
            return None
        return Repo(**_read_json(meta_path))

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool, sdk: str | None, author: str) -> Repo:
        """Create a repo with an initial commit holding ``.gitattributes`` (like the real Hub)."""
        with self._lock:
            if self.get_repo(repo_type, repo_id) is not None:
                raise HubError(409, "You already created this model repo", "RepoExists")
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, sdk=sdk, created_at=now_iso())
            repo_dir = self._repo_dir(repo_type, repo_id)
            entry = {**self.put_blob(DEFAULT_GITATTRIBUTES), "lfs": False}
            commit = self._write_commit(repo, {".gitattributes": entry}, [], "initial commit", "", author)
            _write_json_atomic(repo_dir / "refs.json", {"branches": {"main": commit["id"]}, "tags": {}, "prs": {}})
            # repo.json last: the repo only "exists" once it is complete.
            _write_json_atomic(repo_dir / "repo.json", repo.__dict__)
            return repo

    def delete_repo(self, repo: Repo) -> None:
        with self._lock:
            shutil.rmtree(self._repo_dir(repo.repo_type, repo.repo_id), ignore_errors=True)

    def set_private(self, repo: Repo, private: bool) -> Repo:
        with self._lock:
            updated = Repo(**{**repo.__dict__, "private": private})
            _write_json_atomic(self._repo_dir(repo.repo_type, repo.repo_id) / "repo.json", updated.__dict__)
            return updated

    # ------------------------------------------------------------------ refs and revisions

    def refs(self, repo: Repo) -> dict[str, dict[str, str]]:
        """``{"branches": {name: commit}, "tags": {...}, "prs": {number: commit}}``."""
        return _read_json(self._repo_dir(repo.repo_type, repo.repo_id) / "refs.json")

    def _write_refs(self, repo: Repo, refs: dict[str, dict[str, str]]) -> None:
        _write_json_atomic(self._repo_dir(repo.repo_type, repo.repo_id) / "refs.json", refs)

    def resolve(self, repo: Repo, revision: str) -> str:
        """Commit id of a branch, tag, ``refs/pr/N``, ``refs/heads/x``, ``refs/tags/x`` or full commit id."""
        refs = self.refs(repo)
        if revision.startswith("refs/pr/") and revision[len("refs/pr/") :] in refs["prs"]:
            return refs["prs"][revision[len("refs/pr/") :]]
        for prefix, kind in (("refs/heads/", "branches"), ("refs/tags/", "tags"), ("", "branches"), ("", "tags")):
            if revision.startswith(prefix) and revision[len(prefix) :] in refs[kind]:
                return refs[kind][revision[len(prefix) :]]
        if is_commit_id(revision) and self._commit_path(repo, revision).is_file():
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        with self._lock:
            refs = self.refs(repo)
            if branch in refs["branches"]:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            if branch.startswith("refs/"):
                raise HubError(400, f"Invalid reference for a branch: {branch}")
            refs["branches"][branch] = self.resolve(repo, starting_point or "main")
            self._write_refs(repo, refs)

    def delete_branch(self, repo: Repo, branch: str) -> None:
        with self._lock:
            refs = self.refs(repo)
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch")
            if refs["branches"].pop(branch, None) is None:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            self._write_refs(repo, refs)

    def create_tag(self, repo: Repo, tag: str, revision: str) -> None:
        with self._lock:
            refs = self.refs(repo)
            if tag in refs["tags"]:
                raise HubError(409, f"Tag {tag} already exists")
            refs["tags"][tag] = self.resolve(repo, revision)
            self._write_refs(repo, refs)

    def delete_tag(self, repo: Repo, tag: str) -> None:
        with self._lock:
            refs = self.refs(repo)
            if refs["tags"].pop(tag, None) is None:
                raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            self._write_refs(repo, refs)

    # ------------------------------------------------------------------ commits

    def _commit_path(self, repo: Repo, commit_id: str) -> Path:
        return self._repo_dir(repo.repo_type, repo.repo_id) / "commits" / f"{commit_id}.json"

    def get_commit(self, repo: Repo, commit_id: str) -> dict[str, Any]:
        return _read_json(self._commit_path(repo, commit_id))

    def history(self, repo: Repo, commit_id: str) -> list[dict[str, Any]]:
        """Commits reachable from ``commit_id`` following first parents, newest first."""
        commits = []
        current: str | None = commit_id
        while current is not None:
            commit = self.get_commit(repo, current)
            commits.append(commit)
            current = commit["parents"][0] if commit["parents"] else None
        return commits

    def _write_commit(
        self, repo: Repo, files: dict[str, Any], parents: list[str], title: str, message: str, author: str
    ) -> dict[str, Any]:
        body = {"parents": parents, "files": files, "title": title, "message": message, "author": author}
        body["date"] = now_iso()
        # Content-addressed id, like git: same snapshot + same history + same metadata => same id.
        commit_id = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        commit = {"id": commit_id, **body}
        _write_json_atomic(self._commit_path(repo, commit_id), commit)
        return commit

    def prepare_commit(
        self, repo: Repo, base_commit: str, operations: list[dict[str, Any]], title: str, message: str, author: str
    ) -> dict[str, Any]:
        """Apply ``operations`` on top of ``base_commit`` and store the resulting (not yet published) commit.

        Operations are ``{"op": "add", "path", "entry"}``, ``{"op": "delete_file", "path"}`` or
        ``{"op": "delete_folder", "path"}``; blobs referenced by entries must already be stored.
        """
        files = dict(self.get_commit(repo, base_commit)["files"])
        for operation in operations:
            path = operation["path"]
            if operation["op"] == "add":
                files[path] = operation["entry"]
            elif operation["op"] == "delete_file":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            else:
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
        return self._write_commit(repo, files, [base_commit], title, message, author)

    def publish(self, repo: Repo, ref_kind: str, ref_name: str, commit_id: str, expected_head: str | None) -> None:
        """Point a branch (``ref_kind="branches"``) or PR ref (``"prs"``) at ``commit_id``.

        ``expected_head`` is a compare-and-swap guard: if the ref moved since the commit was prepared, a concurrent
        commit won and this one is rejected instead of silently dropping the other one's changes.
        """
        with self._lock:
            refs = self.refs(repo)
            current = refs[ref_kind].get(ref_name)
            if expected_head is not None and current != expected_head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            refs[ref_kind][ref_name] = commit_id
            self._write_refs(repo, refs)

    def open_pr(self, repo: Repo, commit_id: str) -> str:
        """Create the next pull-request ref ``refs/pr/N`` pointing at ``commit_id`` and return ``N``."""
        with self._lock:
            refs = self.refs(repo)
            number = str(len(refs["prs"]) + 1)
            refs["prs"][number] = commit_id
            self._write_refs(repo, refs)
            return number
