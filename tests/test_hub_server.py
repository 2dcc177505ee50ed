"""Tests of the fake Hugging Face Hub server, driven by the real, unmodified ``huggingface_hub`` client.

They double as documentation of what the client does on its own against server failures:

* ``hf_hub_download``: the metadata ``HEAD`` is retried with backoff (1 s, 2 s, ...) on 5xx/429/408 and connection
  errors; the file ``GET`` is *not* retried on 5xx, but a connection dropped mid-body is resumed with a ``Range``
  request (from the last fully received 10 MB chunk).
* ``list_repo_tree`` / ``list_repo_commits`` (paginated calls), preupload and LFS transfers go through
  ``http_backoff`` and are retried; ``repo_info``/``model_info``, ``whoami``, ``create_repo``, refs, branches, tags
  and ``create_commit``/``upload_file`` are not.

The fixtures (``hub_server``, ``hub_repo_id``) come from ``tests/conftest_hub.py``, loaded by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

if TYPE_CHECKING:
    from hub_server import HubServer

MB = 1024 * 1024


def _make_folder(root: Path) -> dict[str, bytes]:
    """A small model-like folder, including a binary file over 1 MB."""
    files = {
        "config.json": b'{"sample_size": 32}',
        "scheduler/scheduler_config.json": b'{"num_train_timesteps": 1000}',
        "unet/diffusion_pytorch_model.bin": os.urandom(int(1.5 * MB)),
        "README.md": b"# Test model\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _read_tree(folder: str | Path) -> dict[str, bytes]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _upload(api: HfApi, repo_id: str, files: dict[str, bytes], message: str = "upload") -> str:
    """Commit ``files`` (path -> bytes) in one commit and return the commit id."""
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    return api.create_commit(repo_id, operations=operations, commit_message=message).oid


def test_whoami_and_invalid_token(hub_server: HubServer) -> None:
    me = HfApi().whoami()
    assert (me["name"], me["type"], me["orgs"]) == ("test-user", "user", [])

    with pytest.raises(HfHubHTTPError, match="Invalid user token") as excinfo:
        HfApi(token="hf_wrong_token").whoami()
    assert excinfo.value.response.status_code == 401

    # Any request with a bad token is refused with a message telling why, even on public repos.
    with pytest.raises(HfHubHTTPError, match="Invalid credentials in Authorization header"):
        HfApi(token="hf_wrong_token").model_info("test-user/anything")


def test_create_repo_types_and_conflicts(hub_server: HubServer) -> None:
    api = HfApi()
    model_id, dataset_id, space_id = (hub_server.new_repo_id(kind) for kind in ("model", "dataset", "space"))

    url = api.create_repo(model_id)
    assert (url.repo_id, url.repo_type, url.endpoint) == (model_id, "model", hub_server.url)
    assert api.create_repo(dataset_id, repo_type="dataset").repo_type == "dataset"
    assert api.create_repo(space_id, repo_type="space", space_sdk="gradio").repo_type == "space"

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(model_id)
    assert excinfo.value.response.status_code == 409
    api.create_repo(model_id, exist_ok=True)

    assert api.space_info(space_id).sdk == "gradio"
    assert [s.rfilename for s in api.dataset_info(dataset_id).siblings] == [".gitattributes"]

    # Dataset (and Space) files are served under the /datasets/ (/spaces/) URL prefix.
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data.csv", repo_id=dataset_id, repo_type="dataset")
    assert Path(hf_hub_download(dataset_id, "data.csv", repo_type="dataset")).read_bytes() == b"a,b\n1,2\n"
    assert hub_server.requests_matching("GET", f"/datasets/{dataset_id}/resolve/")

    # Writes need a token.
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(hub_server.new_repo_id(), token=False)
    assert excinfo.value.response.status_code == 401

    api.delete_repo(model_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(model_id)


def test_upload_folder_then_download_identical_bytes(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    files = _make_folder(tmp_path / "model")

    commit = api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path / "model", commit_message="first")

    assert len(commit.oid) == 40
    assert api.model_info(hub_repo_id).sha == commit.oid
    snapshot = snapshot_download(hub_repo_id)
    downloaded = _read_tree(snapshot)
    assert downloaded.pop(".gitattributes")  # every new repo starts with one, like on the real Hub
    assert downloaded == files
    assert Path(snapshot).name == commit.oid

    path = hf_hub_download(hub_repo_id, "unet/diffusion_pytorch_model.bin")
    assert Path(path).read_bytes() == files["unet/diffusion_pytorch_model.bin"]
    assert f"/snapshots/{commit.oid}/" in Path(path).as_posix()


def test_revision_pinning_branches_and_tags(hub_server: HubServer, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    first = _upload(api, hub_repo_id, {"weights.bin": b"v1", "config.json": b"{}"}, "v1")
    api.create_tag(hub_repo_id, tag="v1.0", revision=first)
    api.create_branch(hub_repo_id, branch="stable", revision=first)
    second = _upload(api, hub_repo_id, {"weights.bin": b"v2"}, "v2")
    assert second != first

    for revision in (first, "v1.0", "stable"):
        assert Path(hf_hub_download(hub_repo_id, "weights.bin", revision=revision)).read_bytes() == b"v1"
    assert Path(hf_hub_download(hub_repo_id, "weights.bin")).read_bytes() == b"v2"
    assert Path(snapshot_download(hub_repo_id, revision="v1.0")).name == first

    refs = api.list_repo_refs(hub_repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": second, "stable": first}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": first}
    commits = api.list_repo_commits(hub_repo_id)
    assert [c.commit_id for c in commits][:2] == [second, first]
    assert [c.title for c in commits] == ["v2", "v1", "initial commit"]

    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo_id, "weights.bin", revision="no-such-branch")
    api.delete_tag(hub_repo_id, tag="v1.0")
    api.delete_branch(hub_repo_id, branch="stable")
    assert [b.name for b in api.list_repo_refs(hub_repo_id).branches] == ["main"]


def test_private_repo_invisible_without_token(hub_server: HubServer, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id, private=True)
    _upload(api, hub_repo_id, {"secret.txt": b"s3cret"})
    assert api.model_info(hub_repo_id).private is True

    # HF_TOKEN is set by the fixture: token=False makes the client anonymous.
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_repo_id, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, "secret.txt", token=False)
    assert Path(hf_hub_download(hub_repo_id, "secret.txt")).read_bytes() == b"s3cret"

    # Another authenticated user gets a 404 (not 401), and cannot write to someone else's namespace.
    other = HfApi(token=hub_server.add_user("other-user"))
    with pytest.raises(RepositoryNotFoundError) as excinfo:
        other.model_info(hub_repo_id)
    assert excinfo.value.response.status_code == 404
    api.update_repo_settings(hub_repo_id, private=False)
    assert other.model_info(hub_repo_id).private is False
    with pytest.raises(HfHubHTTPError, match="403 Forbidden"):
        other.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo_id)


def test_server_errors_retried_by_download_but_not_by_repo_info(hub_server: HubServer, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    _upload(api, hub_repo_id, {"config.json": b'{"a": 1}'})
    hub_server.clear_requests()

    hub_server.fail_next(2, status=500, method="HEAD", path_contains="/resolve/")
    path = hf_hub_download(hub_repo_id, "config.json")

    assert Path(path).read_bytes() == b'{"a": 1}'
    heads = hub_server.requests_matching("HEAD", "/resolve/")
    assert [(r.status, r.fault) for r in heads] == [(500, "fail"), (500, "fail"), (200, None)]

    hub_server.fail_next(1, status=503, path_prefix=f"/api/models/{hub_repo_id}")
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(hub_repo_id)
    assert excinfo.value.response.status_code == 503
    assert api.model_info(hub_repo_id).sha  # the fault fired once only


def test_dropped_connection_mid_download_is_resumed(hub_server: HubServer, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    # The client writes to disk by DOWNLOAD_CHUNK_SIZE (10 MB) chunks: resuming needs a drop after the first one.
    data = os.urandom(constants.DOWNLOAD_CHUNK_SIZE + 2 * MB)
    _upload(api, hub_repo_id, {"big.bin": data})
    hub_server.clear_requests()

    hub_server.drop_next_download(after_bytes=constants.DOWNLOAD_CHUNK_SIZE + MB)
    path = hf_hub_download(hub_repo_id, "big.bin")

    assert Path(path).read_bytes() == data
    gets = hub_server.requests_matching("GET", "/resolve/")
    assert [(r.status, r.range, r.fault) for r in gets] == [
        (200, None, "drop"),
        (206, f"bytes={constants.DOWNLOAD_CHUNK_SIZE}-", None),
    ]


def test_interrupted_commit_leaves_previous_revision(hub_server: HubServer, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    before = _upload(api, hub_repo_id, {"weights.bin": b"old"})

    hub_server.abort_next_commit()
    with pytest.raises(httpx2.RemoteProtocolError):  # create_commit/upload_file do not retry commits
        api.upload_file(path_or_fileobj=b"new", path_in_repo="weights.bin", repo_id=hub_repo_id)

    assert api.model_info(hub_repo_id).sha == before
    assert api.list_repo_commits(hub_repo_id)[0].commit_id == before
    assert Path(hf_hub_download(hub_repo_id, "weights.bin")).read_bytes() == b"old"

    # A commit based on a stale parent is refused instead of overwriting a concurrent one.
    after = _upload(api, hub_repo_id, {"weights.bin": b"new"})
    operation = CommitOperationAdd(path_in_repo="other.bin", path_or_fileobj=b"x")
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_commit(hub_repo_id, operations=[operation], commit_message="stale", parent_commit=before)
    assert excinfo.value.response.status_code == 412
    assert api.model_info(hub_repo_id).sha == after

    # A commit whose answer is lost was published all the same: the client cannot tell from the error.
    hub_server.lose_next_commit_answer()
    with pytest.raises(httpx2.RemoteProtocolError):
        api.upload_file(path_or_fileobj=b"newer", path_in_repo="weights.bin", repo_id=hub_repo_id)
    assert Path(hf_hub_download(hub_repo_id, "weights.bin")).read_bytes() == b"newer"


def test_upload_folder_xet_path_retries_an_aborted_commit(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path
) -> None:
    # With hf_xet installed (and not disabled), upload_folder commits through a pipeline that retries the commit.
    api = HfApi()
    api.create_repo(hub_repo_id)
    (tmp_path / "a.txt").write_text("hello")
    hub_server.abort_next_commit()

    commit = api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path)

    assert [r.fault for r in hub_server.requests_matching("POST", "/commit/")] == ["abort_commit", None]
    assert api.model_info(hub_repo_id).sha == commit.oid
    assert len(api.list_repo_commits(hub_repo_id)) == 2  # the aborted attempt never reached the branch


def test_snapshot_allow_patterns_fetches_only_matching_files(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path
) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    files = _make_folder(tmp_path / "model")
    _upload(api, hub_repo_id, files)
    hub_server.clear_requests()

    snapshot = snapshot_download(hub_repo_id, allow_patterns=["*.json"])

    assert set(_read_tree(snapshot)) == {"config.json", "scheduler/scheduler_config.json"}
    fetched = {
        r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in hub_server.requests_matching(None, "/resolve/")
    }
    assert fetched == {"config.json", "scheduler/scheduler_config.json"}


def test_offline_subprocess_loads_from_cache_with_server_stopped(hub_server: HubServer, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    commit = _upload(api, hub_repo_id, {"config.json": b'{"offline": true}'})
    snapshot_download(hub_repo_id)  # fills hub_server.cache_dir, shared with the subprocess through env()
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from huggingface_hub import hf_hub_download, snapshot_download
        snapshot = snapshot_download({hub_repo_id!r})
        config = hf_hub_download({hub_repo_id!r}, "config.json")
        print(Path(snapshot).name, Path(config).read_text())
        """
    )

    with hub_server.stopped():
        with pytest.raises(httpx2.ConnectError):
            httpx2.get(hub_server.url + "/api/whoami-v2")
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=hub_server.env(offline=True),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [commit, '{"offline":', "true}"]


# huggingface_hub's own LFS upload passes a file object as `data=`, which httpx2 deprecates.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
def test_lfs_upload_with_xet_disabled(
    hub_server: HubServer, hub_repo_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hub_server.configure(monkeypatch, tmp_path / "cache", disable_xet=True)
    hub_server.lfs_threshold = MB
    api = HfApi()
    api.create_repo(hub_repo_id)
    data = os.urandom(MB + 1)

    api.upload_file(path_or_fileobj=data, path_in_repo="model.safetensors", repo_id=hub_repo_id)

    calls = [(r.method, r.path.rsplit("/", 1)[-1] if "/_lfs/" not in r.path else "_lfs") for r in hub_server.requests]
    assert ("POST", "batch") in calls  # LFS batch API
    assert ("PUT", "_lfs") in calls  # upload of the object itself
    assert ("POST", "verify") in calls
    (entry,) = [f for f in api.list_repo_tree(hub_repo_id) if f.path == "model.safetensors"]
    assert entry.lfs is not None
    assert entry.lfs.size == len(data)
    assert Path(hf_hub_download(hub_repo_id, "model.safetensors")).read_bytes() == data


def test_control_endpoint_arms_faults_over_http(hub_server: HubServer) -> None:
    # For subprocess tests: faults can be armed with plain HTTP.
    response = httpx2.post(f"{hub_server.url}/_test/faults", json={"kind": "fail", "count": 1, "status": 503})
    assert response.status_code == 200
    assert httpx2.get(f"{hub_server.url}/api/whoami-v2").status_code == 503
    assert httpx2.get(f"{hub_server.url}/api/whoami-v2").status_code == 401  # fault consumed; no token sent
    log = httpx2.get(f"{hub_server.url}/_test/requests").json()
    assert [(r["status"], r["fault"]) for r in log] == [(503, "fail"), (401, None)]


def test_slow_responses_trigger_client_timeouts(hub_server: HubServer, hub_repo_id: str) -> None:
    api = HfApi()
    api.create_repo(hub_repo_id)
    _upload(api, hub_repo_id, {"config.json": b"{}"})
    hub_server.slow_down(0.5, count=1, path_contains="/api/models/")

    with pytest.raises(httpx2.ReadTimeout):
        api.model_info(hub_repo_id, timeout=0.1)
    assert api.model_info(hub_repo_id).sha
