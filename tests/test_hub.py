"""End-to-end tests of hf_ddpm.hub: the real huggingface_hub client against the local Hub server (tests/hub_server).

Pipelines are pushed, pulled and loaded back (in-process, in a subprocess where hf_ddpm cannot be imported, and offline
with the server stopped) and must give the same images as the local pipeline for the same seed. Faults injected by
the server (HTTP 5xx, dropped downloads, commits cut off before publication or whose answer is lost) check the retries,
that a failed push leaves the repo at its previous commit and that a retried push makes no second commit.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import numpy as np
import pytest
import torch
from conftest import make_tiny_unet
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, hf_hub_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

import hf_ddpm
from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler, hub
from hf_ddpm.hub import _commit as hub_commit
from hf_ddpm.hub import cli as hub_cli
from hf_ddpm.hub.cards import TEMPLATE_PATH

if TYPE_CHECKING:
    from hub_server import HubServer

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(hf_ddpm.__file__).resolve().parent
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
PIPELINE_FILES = {
    "model_index.json",
    "pipeline_ddpm_posterior.py",
    "scheduler/scheduler_config.json",
    "scheduler/scheduling_ddpm_posterior.py",
    "unet/config.json",
    WEIGHTS,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same retry logic, with short waits: the faults below fire immediately, not after seconds.
    monkeypatch.setattr(hub_commit, "RETRY_DELAYS", (0.05,) * len(hub_commit.RETRY_DELAYS))


def save_tiny_pipeline(folder: Path, seed: int = 0) -> DDPMPosteriorPipeline:
    pipeline = DDPMPosteriorPipeline(
        unet=make_tiny_unet(seed=seed), scheduler=DDPMPosteriorScheduler(num_train_timesteps=20)
    )
    pipeline.save_pretrained(str(folder))
    return pipeline


def sample(pipeline) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return pipeline(batch_size=2, generator=generator, num_inference_steps=5, output_type="np").images


def read_tree(folder: str | Path, names: set[str] | None = None) -> dict[str, bytes]:
    root = Path(folder)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return {name: data for name, data in files.items() if names is None or name in names}


def run_python(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def write_png(path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(path)


def make_space(folder: Path) -> Path:
    folder.mkdir()
    (folder / "app.py").write_text("import gradio as gr\n")
    (folder / "README.md").write_text("---\ntitle: demo\nsdk: gradio\napp_file: app.py\n---\n# Demo\n")
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Push, pull, load
# ----------------------------------------------------------------------------------------------------------------

REMOTE_CODE_SCRIPT = """
    import sys
    sys.modules["hf_ddpm"] = None  # not importable: only the code that travels in the repo may run
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
    print(type(pipe).__name__, type(pipe.scheduler).__name__, type(pipe).__module__)
    generator = torch.Generator().manual_seed(0)
    np.save(sys.argv[2], pipe(batch_size=2, generator=generator, num_inference_steps=5, output_type="np").images)
"""


def test_push_pull_and_load_give_the_local_images(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "pipeline"
    expected = sample(save_tiny_pipeline(folder))
    (folder / "logs").mkdir()
    (folder / "logs" / "events.out").write_bytes(b"tensorboard")  # not part of a pipeline: not uploaded

    sha = hub.push_pipeline(folder, hub_repo_id)

    api = HfApi()
    assert api.model_info(hub_repo_id).sha == sha and len(sha) == 40
    assert [c.title for c in api.list_repo_commits(hub_repo_id)] == ["Upload DDPMPosteriorPipeline", "initial commit"]
    assert set(api.list_repo_files(hub_repo_id)) == PIPELINE_FILES | {".gitattributes", "README.md"}
    assert f'from_pretrained("{hub_repo_id}"' in (folder / "README.md").read_text()  # rendered, as it was missing

    path = hub.pull(hub_repo_id)
    assert Path(path).name == sha
    assert read_tree(path) == read_tree(folder, PIPELINE_FILES | {"README.md"})
    assert np.array_equal(sample(DDPMPosteriorPipeline.from_pretrained(hub_repo_id)), expected)

    # diffusers alone, with the repo's own code, in a fresh process (and cache) where hf_ddpm cannot be imported
    env = hub_server.env(cache_dir=tmp_path / "fresh_cache")
    result = run_python(REMOTE_CODE_SCRIPT, hub_repo_id, str(tmp_path / "remote.npy"), env=env)
    assert result.stdout.split()[:2] == ["DDPMPosteriorPipeline", "DDPMPosteriorScheduler"]
    assert "hf_ddpm" not in result.stdout.split()[2]
    np.testing.assert_allclose(np.load(tmp_path / "remote.npy"), expected, rtol=0, atol=1e-6)


def test_revision_pinning_by_sha_tag_and_branch(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    api = HfApi()
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    save_tiny_pipeline(v1, seed=1)
    save_tiny_pipeline(v2, seed=2)
    write_png(v1 / "samples.png")
    assert (v1 / WEIGHTS).read_bytes() != (v2 / WEIGHTS).read_bytes()

    first = hub.push_pipeline(v1, hub_repo_id)
    api.create_tag(hub_repo_id, tag="v1.0", revision=first)
    # a new branch starts from main; the same content again makes no commit
    assert hub.push_pipeline(v1, hub_repo_id, revision="stable") == first
    second = hub.push_pipeline(v2, hub_repo_id, commit_message="v2")
    assert second != first
    assert "samples.png" not in api.list_repo_files(hub_repo_id)  # the branch mirrors the folder
    assert "samples.png" in api.list_repo_files(hub_repo_id, revision="stable")
    proposed = hub.push_pipeline(v1, hub_repo_id, create_pr=True)  # a pull request; main does not move
    assert api.model_info(hub_repo_id).sha == second
    pull_requests = api.list_repo_refs(hub_repo_id, include_pull_requests=True).pull_requests
    assert [ref.target_commit for ref in pull_requests] == [proposed]

    for revision in (first, "v1.0", "stable"):
        assert (Path(hub.pull(hub_repo_id, revision=revision)) / WEIGHTS).read_bytes() == (v1 / WEIGHTS).read_bytes()
    assert (Path(hub.pull(hub_repo_id)) / WEIGHTS).read_bytes() == (v2 / WEIGHTS).read_bytes()
    local = hub.pull(hub_repo_id, revision="v1.0", local_dir=tmp_path / "local")
    assert read_tree(local, {WEIGHTS, "samples.png"}) == read_tree(v1, {WEIGHTS, "samples.png"})

    pinned = DDPMPosteriorPipeline.from_pretrained(hub_repo_id, revision="v1.0")
    reference = DDPMPosteriorPipeline.from_pretrained(str(v1))
    for name, tensor in reference.unet.state_dict().items():
        assert torch.equal(pinned.unet.state_dict()[name], tensor), name


def test_offline_pull_and_load_from_the_cache(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = sample(save_tiny_pipeline(tmp_path / "v1", seed=1))
    first = hub.push_pipeline(tmp_path / "v1", hub_repo_id)
    HfApi().create_tag(hub_repo_id, tag="v1.0", revision=first)
    save_tiny_pipeline(tmp_path / "v2", seed=2)
    hub.push_pipeline(tmp_path / "v2", hub_repo_id)
    cached = hub.pull(hub_repo_id, revision="v1.0")
    assert Path(cached).name == first

    with hub_server.stopped():
        assert hub.pull(hub_repo_id, revision="v1.0") == cached  # Hub unreachable: the cached snapshot
        # HF_HUB_OFFLINE=1 is read once, when huggingface_hub is imported, into this constant
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        assert hub.pull(hub_repo_id, revision="v1.0") == cached
        assert np.array_equal(sample(DDPMPosteriorPipeline.from_pretrained(hub_repo_id, revision="v1.0")), expected)
        with pytest.raises(LocalEntryNotFoundError, match="Cannot find an appropriate cached snapshot folder"):
            hub.pull(hub_repo_id, revision="never-pulled")


# ----------------------------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------------------------


def test_transient_errors_are_retried_without_duplicate_commits(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path
) -> None:
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    hub_server.fail_next(1, status=503, path_prefix="/api/repos/create")
    hub_server.fail_next(1, status=500, method="POST", path_contains="/commit/")
    hub_server.abort_next_commit(1)  # the connection is cut before the commit is published
    hub_server.lose_next_commit_answer(1)  # the commit is published, but its answer never arrives

    sha = hub.push_pipeline(folder, hub_repo_id)

    api = HfApi()
    # the fourth attempt finds every file in place: no fourth commit request, no second commit
    commits = hub_server.requests_matching("POST", "/commit/")
    assert [r.fault for r in commits] == ["fail", "abort_commit", "lose_commit_answer"]
    assert [c.commit_id for c in api.list_repo_commits(hub_repo_id)][0] == sha
    assert len(api.list_repo_commits(hub_repo_id)) == 2  # one push, one commit

    hub_server.clear_requests()
    hub_server.fail_next(2, status=500, method="GET", path_prefix=f"/api/models/{hub_repo_id}")
    hub_server.fail_next(1, status=502, method="GET", path_contains="/resolve/")
    hub_server.drop_next_download(1, path_contains=WEIGHTS)
    path = hub.pull(hub_repo_id)

    assert read_tree(path, PIPELINE_FILES) == read_tree(folder, PIPELINE_FILES)
    faults = [r.fault for r in hub_server.requests if r.fault]
    assert faults == ["fail", "fail", "fail", "drop"]
    assert not hub_server.faults.pending()


def test_interrupted_push_leaves_the_previous_revision(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path
) -> None:
    save_tiny_pipeline(tmp_path / "v1", seed=1)
    save_tiny_pipeline(tmp_path / "v2", seed=2)
    first = hub.push_pipeline(tmp_path / "v1", hub_repo_id)
    hub_server.abort_next_commit(len(hub_commit.RETRY_DELAYS) + 1)  # every attempt is cut off

    with pytest.raises(httpx2.RemoteProtocolError):
        hub.push_pipeline(tmp_path / "v2", hub_repo_id)

    api = HfApi()
    assert len(hub_server.requests_matching("POST", "/commit/")) == len(hub_commit.RETRY_DELAYS) + 2
    assert api.model_info(hub_repo_id).sha == first
    assert len(api.list_repo_commits(hub_repo_id)) == 2
    weights = (Path(hub.pull(hub_repo_id)) / WEIGHTS).read_bytes()
    assert weights == (tmp_path / "v1" / WEIGHTS).read_bytes()

    # another writer commits while the push is under way (after its head read): the push is refused, theirs stays
    def other_writer() -> None:
        while not hub_server.requests_matching("GET", "/revision/main"):
            time.sleep(0.01)
        api.upload_file(path_or_fileobj=b"theirs", path_in_repo="theirs.txt", repo_id=hub_repo_id)

    hub_server.clear_requests()
    hub_server.slow_down(2.0, count=1, method="GET", path_contains="/tree/")  # the push lists the branch's files
    writer = threading.Thread(target=other_writer)
    writer.start()
    push = hub_cli.hub_errors_in_one_line(lambda args: hub.push_pipeline(tmp_path / "v2", hub_repo_id))
    with pytest.raises(RuntimeError, match="answered 412 Precondition Failed: A commit has happened since") as error:
        push(None)
    writer.join()
    assert isinstance(error.value.__cause__, HfHubHTTPError)
    assert api.list_repo_commits(hub_repo_id)[0].title == "Upload theirs.txt with huggingface_hub"
    assert (Path(hub.pull(hub_repo_id)) / WEIGHTS).read_bytes() == (tmp_path / "v1" / WEIGHTS).read_bytes()


def test_broken_repos_fail_with_errors_naming_the_file(hub_server: HubServer, tmp_path: Path) -> None:
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    files = read_tree(folder)
    api = HfApi()

    def repo_with(changes: dict[str, bytes]) -> str:
        repo_id = hub_server.new_repo_id("broken")
        api.create_repo(repo_id)
        operations = [CommitOperationAdd(path, data) for path, data in {**files, **changes}.items()]
        api.create_commit(repo_id, operations, commit_message="broken")
        return repo_id

    cases = {
        WEIGHTS: {WEIGHTS: files[WEIGHTS][: len(files[WEIGHTS]) // 2]},
        "model_index.json": {"model_index.json": b"{not json"},
        "`unet`": {"model_index.json": json.dumps({"scheduler": ["diffusers", "DDPMScheduler"]}).encode()},
        "unet/config.json": {"unet/config.json": b"{bad"},
    }
    for named, changes in cases.items():
        with pytest.raises((OSError, ValueError)) as excinfo:
            DDPMPosteriorPipeline.from_pretrained(repo_with(changes))
        assert named in str(excinfo.value), str(excinfo.value)


# ----------------------------------------------------------------------------------------------------------------
# What is and is not uploaded
# ----------------------------------------------------------------------------------------------------------------


def test_push_never_uploads_pickles_or_tokens(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.bin").write_bytes(b"pickle")
    (folder / "metrics.json").write_text(json.dumps({"bits_per_dim": {"value": 3.2, "split": "test"}}))
    (folder / "training_args.json").write_text(json.dumps({"notes": f"pushed with {hub_server.token}"}))

    with pytest.raises(ValueError, match="training_args.json holds a Hugging Face access token"):
        hub.push_pipeline(folder, hub_repo_id)
    assert hub_server.requests == []  # refused before anything was sent
    assert hub_server.token not in (folder / "README.md").read_text()  # the card redacts it

    (folder / "training_args.json").write_text(json.dumps({"learning_rate": 1e-4}))
    hub.push_pipeline(folder, hub_repo_id)
    remote = set(HfApi().list_repo_files(hub_repo_id))
    assert remote == PIPELINE_FILES | {".gitattributes", "README.md", "metrics.json", "training_args.json"}

    (folder / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match="no .safetensors weights .found diffusion_pytorch_model.bin"):
        hub.push_pipeline(folder, hub_repo_id)


def png_with_text(path: Path, text: str, *, compressed: bool) -> None:
    """A PNG whose metadata holds `text`: a tEXt chunk (plain bytes) or a zTXt chunk (deflated)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", text, zip=compressed)
    Image.new("L", (8, 8), 128).save(path, pnginfo=info)


def test_push_refuses_a_token_in_any_file_text_or_binary(hub_server: HubServer, hub_repo_id: str, tmp_path: Path):
    """The token in use, or any Hub-shaped token, in a file of any name or type: refused, naming it, nothing sent."""
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    other_token = "hf_" + "Ab1" * 12  # shaped like a Hub token, not the one in use
    cases = {
        "samples.png": lambda path: png_with_text(path, f"made with {hub_server.token}", compressed=False),
        "samples/grid.png": lambda path: png_with_text(path, f"token={other_token}", compressed=True),
        "scheduler/scheduling_extra.py": lambda path: path.write_bytes(b"KEY = b'" + other_token.encode() + b"'\n"),
    }
    for name, write in cases.items():
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        write(path)
        with pytest.raises(ValueError, match=f"{path} holds a Hugging Face access token: remove it"):
            hub.push_pipeline(folder, hub_repo_id)
        path.unlink()
    assert hub_server.requests == []  # every refusal came before anything was sent

    # a hidden or credential-like file is not picked even where a pattern matches its name
    (folder / ".secret.py").write_text(f"TOKEN = {hub_server.token!r}\n")
    (folder / ".hidden.png").write_bytes(b"\x89PNG" + hub_server.token.encode())
    hub.push_pipeline(folder, hub_repo_id)
    assert not {".secret.py", ".hidden.png"} & set(HfApi().list_repo_files(hub_repo_id))


def test_push_space_sends_no_token_and_no_credential_files(hub_server: HubServer, hub_repo_id: str, tmp_path: Path):
    space = tmp_path / "space"
    space.mkdir()
    (space / "app.py").write_text("import gradio as gr\n")
    (space / "README.md").write_text("---\ntitle: demo\nsdk: gradio\napp_file: app.py\n---\n# Demo\n")
    token = hub_server.token
    for name, content in {
        "deploy.sh": f"export HF_TOKEN={token}\n",
        "settings.ini": f"[hub]\nkey = {token}\n",
        "assets/logo.png": None,  # a token in a PNG text chunk
        "Makefile": f"push:\n\tHF_TOKEN={token} hf upload\n",
    }.items():
        path = space / name
        path.parent.mkdir(exist_ok=True)
        png_with_text(path, token, compressed=False) if content is None else path.write_text(content)
        with pytest.raises(ValueError, match=f"{path} holds a Hugging Face access token"):
            hub.push_space(space, hub_repo_id)
        path.unlink()
    assert hub_server.requests == []

    credentials = {
        ".git-credentials": f"https://user:{token}@huggingface.co\n",
        ".huggingface/token": token,
        ".huggingface/stored_tokens": f"[default]\nhf_token = {token}\n",
        ".netrc": f"machine huggingface.co login user password {token}\n",
        ".env": f"HF_TOKEN={token}\n",
        "id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        "server.pem": "-----BEGIN PRIVATE KEY-----\n",
        ".streamlit/config.toml": "[server]\nheadless = true\n",
    }
    for name, content in credentials.items():
        (space / name).parent.mkdir(exist_ok=True)
        (space / name).write_text(content)
    hub.push_space(space, hub_repo_id)
    assert set(HfApi().list_repo_files(hub_repo_id, repo_type="space")) == {".gitattributes", "app.py", "README.md"}

    # asked for by name, a hidden file goes, and is still scanned
    hub.push_space(space, hub_repo_id, include=[".streamlit/config.toml"])
    assert ".streamlit/config.toml" in HfApi().list_repo_files(hub_repo_id, repo_type="space")
    with pytest.raises(ValueError, match=r"\.git-credentials holds a Hugging Face access token"):
        hub.push_space(space, hub_repo_id, include=[".git-credentials"])
    with pytest.raises(FileNotFoundError, match="`include` names '../elsewhere', which is not a file inside"):
        hub.push_space(space, hub_repo_id, include=["../elsewhere"])


def test_push_refuses_any_token_stored_on_this_machine(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only the token in use: the login's token file and every `hf auth login` stored token."""
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setattr(hub_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "stored_tokens"))
    (tmp_path / "token").write_text("saved-login-token-0001\n")
    (tmp_path / "stored_tokens").write_text("[work]\nhf_token = stored-work-token-0002\n")
    space = tmp_path / "space"
    space.mkdir()
    (space / "app.py").write_text("import gradio as gr\n")
    (space / "README.md").write_text("---\nsdk: gradio\n---\n")
    for secret in ("saved-login-token-0001", "stored-work-token-0002"):
        (space / "config.yaml").write_text(f"key: {secret}\n")
        with pytest.raises(ValueError, match="config.yaml holds a Hugging Face access token"):
            hub.push_space(space, hub_repo_id)
    assert hub_server.requests == []


def test_links_out_of_the_folder_are_refused_naming_the_link(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path
) -> None:
    """A link is never followed out of the folder (`leak.png -> /etc/passwd`); a link inside it sends its target."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (outside / "key").write_text("no secret shape, still private\n")
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    (folder / "leak.png").symlink_to(outside / "passwd")
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'leak.png'} is a link to {outside / 'passwd'}: ")):
        hub.push_pipeline(folder, hub_repo_id)
    (folder / "leak.png").unlink()
    (folder / "unet").rename(outside / "unet")
    (folder / "unet").symlink_to(outside / "unet")  # its files would not be sent: refused too
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'unet'} is a link to {outside / 'unet'}: ")):
        hub.push_pipeline(folder, hub_repo_id)
    space = make_space(tmp_path / "space")
    (space / ".env").write_text("DB_PASSWORD=hunter2\n")  # a hidden file is not sent, nor through a link
    for link, target in {"helper.py": outside / "key", "assets": outside, "settings.txt": space / ".env"}.items():
        (space / link).symlink_to(target)
        with pytest.raises(ValueError, match=re.escape(f"{space / link} is a link to {target}: a link may only")):
            hub.push_space(space, hub_repo_id)
        (space / link).unlink()
    assert hub_server.requests == []

    (space / "notes.txt").write_text("hello\n")
    (space / "notes-link.txt").symlink_to("notes.txt")
    hub.push_space(space, hub_repo_id)
    assert Path(hf_hub_download(hub_repo_id, "notes-link.txt", repo_type="space")).read_text() == "hello\n"


def test_secrets_are_found_by_their_shape_whatever_the_file(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path
) -> None:
    space = make_space(tmp_path / "space")
    token = "hf_" + "Xy9" * 12  # shaped like a Hub token, not one of this machine
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
    service_account = {"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n"}
    cases = {
        "notes.txt": (key, "a private key"),
        "deploy.sh": (f"export MY_{token}\n", "a Hugging Face access token"),  # glued to an identifier
        "project-4f2a.json": (json.dumps(service_account), "a private key"),
    }
    for name, (content, secret) in cases.items():
        (space / name).write_text(content)
        with pytest.raises(ValueError, match=re.escape(f"{space / name} holds {secret}: remove it")):
            hub.push_space(space, hub_repo_id)
        (space / name).unlink()
    (space / f"{token}.txt").write_text("harmless\n")
    with pytest.raises(ValueError, match="has a Hugging Face access token in its name") as error:
        hub.push_space(space, hub_repo_id)
    assert token not in str(error.value)
    (space / f"{token}.txt").unlink()
    assert hub_server.requests == []

    for name in ("ID_RSA", "server.PEM", "Credentials.json", "kaggle.json", "my-service_account.json"):
        (space / name).write_text('{"username": "me", "key": "0123456789abcdef"}\n')  # credentials by their name
    hub.push_space(space, hub_repo_id)
    assert set(HfApi().list_repo_files(hub_repo_id, repo_type="space")) == {".gitattributes", "app.py", "README.md"}


def png_with_chunk(path: Path, kind: bytes, body: bytes) -> None:
    """An 8x8 PNG with one more chunk (`kind`, `body`) before its end."""
    from PIL import Image

    Image.new("L", (8, 8), 128).save(path, format="PNG")
    data = path.read_bytes()
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(data[:-12] + chunk + data[-12:])  # IEND is the last 12 bytes


def test_png_chunks_are_scanned_by_content_and_unreadable_ones_refused(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path
) -> None:
    space = make_space(tmp_path / "space")
    token = hub_server.token
    cases = {  # Pillow refuses zTXt over 1 MB; any name: the PNG signature says what the file is
        "samples.png": lambda path: png_with_chunk(
            path, b"zTXt", b"Comment\0\0" + zlib.compress(b"x" * 2**21 + token.encode())
        ),
        "logo.webp": lambda path: png_with_chunk(path, b"zTXt", b"Comment\0\0" + zlib.compress(token.encode())),
        "grid.png": lambda path: png_with_chunk(path, b"iTXt", b"Comment\0\1\0en\0\0" + zlib.compress(token.encode())),
    }
    unreadable = {
        "corrupt.png": lambda path: png_with_chunk(path, b"zTXt", b"Comment\0\0" + b"not zlib data"),
        "bomb.png": lambda path: png_with_chunk(path, b"zTXt", b"Comment\0\0" + zlib.compress(bytes(17 * 2**20))),
    }
    for name, write in {**cases, **unreadable}.items():
        write(space / name)
        refusal = (
            "holds a Hugging Face access token"
            if name in cases
            else "has a compressed PNG chunk .zTXt. that cannot be read"
        )
        with pytest.raises(ValueError, match=f"{space / name} {refusal}"):
            hub.push_space(space, hub_repo_id)
        (space / name).unlink()
    assert hub_server.requests == []


def test_the_bytes_scanned_are_the_bytes_sent(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    """A file rewritten with a token after the scan (here while the Hub answers slowly) is sent as it was scanned."""
    space = make_space(tmp_path / "space")
    (space / "config.yaml").write_text("key: harmless\n")

    def rewrite_after_the_scan() -> None:
        while not hub_server.requests_matching("POST", "/api/repos/create"):
            time.sleep(0.01)
        (space / "config.yaml").write_text(f"key: {hub_server.token}\n")

    hub_server.slow_down(2.0, count=1, method="GET", path_contains="/revision/")  # the head read before the commit
    writer = threading.Thread(target=rewrite_after_the_scan)
    writer.start()
    hub.push_space(space, hub_repo_id)
    writer.join()
    assert hub_server.token in (space / "config.yaml").read_text()
    assert Path(hf_hub_download(hub_repo_id, "config.yaml", repo_type="space")).read_text() == "key: harmless\n"


def test_the_token_passed_to_push_is_looked_for_too(hub_server: HubServer, tmp_path: Path) -> None:
    other = hub_server.add_user("other-user", token="plain-other-user-token-0003")  # no Hub token shape
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    (folder / "scheduler" / "extra.py").write_text(f"KEY = {other!r}\n")
    with pytest.raises(ValueError, match="extra.py holds a Hugging Face access token"):
        hub.push_pipeline(folder, "other-user/model", token=other)
    assert hub_server.requests == []


def test_push_adds_the_remote_code_of_the_installed_package(hub_server: HubServer, tmp_path: Path) -> None:
    """A pipeline folder, alone or inside a Space, that lacks its remote-code modules gets the package's."""
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    modules = {"pipeline_ddpm_posterior.py": "pipeline_ddpm_posterior.py"}
    modules["scheduler/scheduling_ddpm_posterior.py"] = "scheduling_ddpm_posterior.py"
    for path in modules:
        (folder / path).unlink()
    space = make_space(tmp_path / "space")
    shutil.copytree(folder, space / "model")
    assert sorted(space.rglob("*.py")) == [space / "app.py"]  # the Space's model folder holds no code

    repo_id, space_id = hub_server.new_repo_id(), hub_server.new_repo_id("space")
    hub.push_pipeline(folder, repo_id)
    hub.push_space(space, space_id)
    for path, module in modules.items():
        expected = (PACKAGE / module).read_bytes()
        assert Path(hf_hub_download(repo_id, path)).read_bytes() == expected
        assert Path(hf_hub_download(space_id, f"model/{path}", repo_type="space")).read_bytes() == expected


def test_push_refuses_a_truncated_safetensors_file(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    weights = folder / WEIGHTS
    complete = weights.read_bytes()
    for broken in (complete[:-100], complete[:6], complete + b"\0" * 8):
        weights.write_bytes(broken)
        with pytest.raises(ValueError, match=f"{weights} is not a complete safetensors file: .*it would not load"):
            hub.push_pipeline(folder, hub_repo_id)
    assert hub_server.requests == []
    with pytest.raises(Exception):  # noqa: B017  (the repo was never created)
        HfApi().model_info(hub_repo_id)

    weights.write_bytes(complete)
    hub.push_pipeline(folder, hub_repo_id)
    local = hub.pull(hub_repo_id, local_dir=tmp_path / "pulled")
    assert Path(local, WEIGHTS).read_bytes() == complete


def test_an_unreachable_hub_is_named_with_its_address(
    hub_server: HubServer, hub_repo_id: str, tmp_path: Path, monkeypatch
):
    """A push to a Hub that does not answer says which address it tried, in one line (not a bare socket error)."""
    folder = tmp_path / "pipeline"
    save_tiny_pipeline(folder)
    hub_server.stop()
    with pytest.raises(RuntimeError) as error:
        hub_cli.hub_errors_in_one_line(lambda args: hub.push_pipeline(folder, hub_repo_id))(None)
    message = str(error.value)
    assert message.startswith(f"cannot reach the Hub at {hub_constants.ENDPOINT}: ") and "\n" not in message
    # a pull with nothing cached: was "Got: ConnectError: ...", exit 2
    from hf_ddpm.hub import _commit

    monkeypatch.setattr(_commit, "RETRY_DELAYS", (0.0,) * 4)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(RuntimeError) as error:
        hub_cli.hub_errors_in_one_line(lambda args: hub.pull(hub_repo_id))(None)
    assert str(error.value) == f"cannot reach the Hub at {hub_constants.ENDPOINT}, and the cache has no copy"


def test_model_card_metadata_tables_and_template(hub_server: HubServer, tmp_path: Path) -> None:
    folder = tmp_path / "ddpm-digits"
    save_tiny_pipeline(folder)
    write_png(folder / "samples.png")
    fake_token = "hf_" + "a1B2c3D4e5" * 4
    training_args = {"dataset_name": "ylecun/mnist", "learning_rate": 2e-4, "use_ema": True, "hub_token": fake_token}
    (folder / "training_args.json").write_text(json.dumps(training_args))
    metrics = {"bits_per_dim": {"value": 1.2345, "split": "held-out", "num_images": 64}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "eval_results.json").write_text(json.dumps({"fd_digits": {"value": 3.5, "split": "test"}}))

    hub.save_model_card(folder, repo_id="someone/ddpm-digits")

    assert (folder / "README.md").stat().st_mode & 0o044 == 0o044  # readable by others, as a card is meant to be
    text = (folder / "README.md").read_text()
    card = ModelCard.load(folder / "README.md")  # parses the YAML and the model-index
    assert card.data.library_name == "diffusers" and card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert {"unconditional-image-generation", "diffusers:DDPMPosteriorPipeline", "ddpm"} <= set(card.data.tags)
    assert card.data.datasets == ["ylecun/mnist"]
    results = {(r.metric_type, r.metric_value, r.dataset_split, r.dataset_type) for r in card.data.eval_results}
    mnist = "ylecun/mnist"
    assert results == {("bits_per_dim", 1.2345, "held-out", mnist), ("fd_digits", 3.5, "test", mnist)}
    assert card.data.model_name == "ddpm-digits"
    assert "![Samples drawn from the model](samples.png)" in text
    assert 'DDPMPosteriorPipeline.from_pretrained("someone/ddpm-digits")' in text
    assert 'DiffusionPipeline.from_pretrained("someone/ddpm-digits", trust_remote_code=True)' in text
    assert "| `learning_rate` | 0.0002 |" in text and "| `beta_schedule` | linear |" in text
    assert "| bits_per_dim | 1.2345 | held-out | num_images: 64 |" in text
    assert "| Parameters | 41,609 |" in text  # read from the safetensors header
    assert fake_token not in text and "hub_token" not in text

    # push refuses the token in training_args.json; without it, push refreshes a generated card (new repo id)
    # and keeps a hand-written one
    repo_id = hub_server.new_repo_id("card")
    with pytest.raises(ValueError, match="training_args.json holds a Hugging Face access token"):
        hub.push_pipeline(folder, repo_id)
    (folder / "training_args.json").write_text(json.dumps({"dataset_name": "ylecun/mnist"}))
    hub.push_pipeline(folder, repo_id.split("/")[1])  # a bare name goes to the token owner's namespace
    assert f'from_pretrained("{repo_id}")' in (folder / "README.md").read_text()
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# Mine\n")
    hub.push_pipeline(folder, repo_id)
    assert ModelCard.load(Path(hub.pull(repo_id)) / "README.md").text.strip() == "# Mine"

    (folder / "metrics.json").write_text(json.dumps({"bits_per_dim": {"value": "low"}}))
    with pytest.raises(ValueError, match="Metric 'bits_per_dim' in .*metrics.json needs a finite number"):
        hub.save_model_card(folder)

    # one template: the package's, which model_cards/ links to for people browsing the repo
    assert TEMPLATE_PATH == REPO_ROOT / "src" / "hf_ddpm" / "templates" / "model_card.md"
    assert (REPO_ROOT / "model_cards" / "ddpm_model_card.md").resolve() == TEMPLATE_PATH.resolve()


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and Spaces
# ----------------------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_through_a_branch(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    commits = {}
    for step in (3, 12, 5):  # 12 is the latest, though "checkpoint-5" sorts after it as text
        torch.nn.init.constant_(model.weight, float(step))
        accelerator.save_state(str(tmp_path / f"checkpoint-{step}"))
        (tmp_path / f"checkpoint-{step}" / ".lock").write_text("")  # hidden files stay home
        commits[step] = hub.push_checkpoint(tmp_path / f"checkpoint-{step}", hub_repo_id)

    latest = hub.download_checkpoint(f"hub:{hub_repo_id}")  # as --resume_from_checkpoint passes it
    assert Path(latest).name == "checkpoint-12"
    saved = read_tree(tmp_path / "checkpoint-12")
    assert saved.pop(".lock") == b"" and read_tree(latest) == saved
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= set(saved)
    accelerator.load_state(latest)
    assert torch.all(model.weight == 12)
    accelerator.load_state(hub.download_checkpoint(f"{hub_repo_id}@{commits[3]}"))  # the newest at that commit
    assert torch.all(model.weight == 3)

    assert HfApi().list_repo_files(hub_repo_id) == [".gitattributes"]  # pickles stay off main
    with pytest.raises(ValueError, match="empty revision"):
        hub.download_checkpoint(f"{hub_repo_id}@")
    with pytest.raises(ValueError, match="Repo id must be in the form 'repo_name' or 'namespace/repo_name': 'a/b/c'"):
        hub.download_checkpoint("a/b/c@checkpoints")


def test_push_space_creates_a_gradio_space(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    space = tmp_path / "space"
    (space / "__pycache__").mkdir(parents=True)
    (space / "app.py").write_text("import gradio as gr\ngr.Interface(lambda x: x, 'text', 'text').launch()\n")
    (space / "README.md").write_text("---\ntitle: DDPM demo\nsdk: gradio\napp_file: app.py\n---\n# Demo\n")
    (space / "requirements.txt").write_text("hf-ddpm\n")
    (space / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (space / ".env").write_text("HF_TOKEN=secret\n")
    (space / ".git" / "refs" / "heads").mkdir(parents=True)
    (space / ".git" / "refs" / "heads" / "main").write_text("0" * 40)

    sha = hub.push_space(space, hub_repo_id)

    api = HfApi()
    info = api.space_info(hub_repo_id)
    assert (info.sdk, info.sha) == ("gradio", sha)
    files = api.list_repo_files(hub_repo_id, repo_type="space")
    assert set(files) == {".gitattributes", "app.py", "README.md", "requirements.txt"}

    (space / "README.md").write_text("---\ntitle: DDPM demo\nsdk: streamlit\n---\n")
    with pytest.raises(ValueError, match="must declare `sdk: gradio`"):
        hub.push_space(space, hub_repo_id)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

# Runs `hf-ddpm` commands through hf_ddpm.cli.main in one subprocess (one torch import for all of them); only the hub
# subcommands are registered, so these tests neither depend on nor pay for the training and evaluation modules.
CLI_DRIVER = """
    import contextlib, io, json, os, sys
    from hf_ddpm import cli

    cli.COMMAND_MODULES = ["hf_ddpm.hub"]
    results = []
    for env, argv in json.loads(sys.argv[1]):
        os.environ.update(env)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = cli.main(argv)
            except SystemExit as exit:  # argparse: --help and malformed command lines
                code = exit.code
        results.append({"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
    print(json.dumps(results))
"""


def test_cli_push_pull_card_and_errors(hub_server: HubServer, hub_repo_id: str, tmp_path: Path) -> None:
    folder, local = tmp_path / "pipeline", tmp_path / "pulled"
    save_tiny_pipeline(folder)
    wrong_token = {"HF_TOKEN": "hf_wrongwrongwrongwrongwrongwrong1234"}
    commands = [
        ({}, ["card", str(folder), "--repo-id", hub_repo_id]),
        ({}, ["push", str(folder), hub_repo_id, "--commit-message", "from the CLI"]),
        ({}, ["pull", hub_repo_id, "--local-dir", str(local)]),
        ({}, ["push", str(tmp_path / "missing"), hub_repo_id]),
        ({}, ["push", str(folder), "bad//id"]),
        ({}, ["push", str(folder), hub_repo_id, "--revision", "0" * 40]),
        ({}, ["pull", "a/b/c"]),
        ({}, ["card", str(tmp_path)]),
        ({}, ["push-space", str(folder), hub_repo_id]),
        ({}, ["push", str(folder)]),
        ({}, ["pull", "test-user/no-such-repo"]),
        (wrong_token, ["push", str(folder), hub_repo_id]),
        (wrong_token, ["pull", hub_repo_id]),
    ] + [({}, [command, "--help"]) for command in ("push", "pull", "card", "push-space")]
    truncated, space = tmp_path / "truncated", tmp_path / "space"
    save_tiny_pipeline(truncated)
    (truncated / WEIGHTS).write_bytes((truncated / WEIGHTS).read_bytes()[:-64])
    space.mkdir()
    (space / "app.py").write_text("import gradio\n")
    (space / "README.md").write_text("---\nsdk: gradio\n---\n")
    (space / "deploy.sh").write_text(f"HF_TOKEN={hub_server.token} hf upload\n")
    commands += [  # HF_TOKEN back to the valid token, the one in deploy.sh
        ({"HF_TOKEN": hub_server.token}, ["push", str(truncated), hub_server.new_repo_id()]),
        ({}, ["push-space", str(space), hub_server.new_repo_id()]),
        ({}, ["push-space", str(space), hub_server.new_repo_id(), "--include", "nowhere.txt"]),
        ({}, ["card", str(tmp_path / "missing")]),
        ({}, ["pull", str(folder)]),
    ]

    result = run_python(CLI_DRIVER, json.dumps(commands), env=hub_server.env())
    outcomes = json.loads(result.stdout.splitlines()[-1])

    codes = [outcome["code"] for outcome in outcomes]
    assert codes == [0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 2, 2], outcomes
    card, push, pull = outcomes[:3]
    assert card["stdout"].strip() == str(folder / "README.md")
    assert f'from_pretrained("{hub_repo_id}")' in (folder / "README.md").read_text()
    assert HfApi().list_repo_commits(hub_repo_id)[0].title == "from the CLI"
    assert HfApi().model_info(hub_repo_id).sha in push["stdout"]
    assert pull["stdout"].strip() == str(local)
    assert read_tree(local, PIPELINE_FILES) == read_tree(folder, PIPELINE_FILES)

    errors = [outcome["stderr"] for outcome in outcomes[3:13]]
    assert "missing" in errors[0] and "Repo id must be in the form" in errors[1] and "'bad//id'" in errors[1]
    assert "must name a branch" in errors[2] and "Repo id must be in the form" in errors[3] and "'a/b/c'" in errors[3]
    assert "model_index.json is missing" in errors[4]
    assert "app.py is missing" in errors[5] and "required: repo_id" in errors[6]
    assert "answered 404 Not Found: Repository not found" in errors[7]
    for message in errors[8:]:
        assert "answered 401 Unauthorized: Invalid credentials" in message
        assert wrong_token["HF_TOKEN"] not in message and len(message.strip().splitlines()) == 1
    for outcome in outcomes[13:17]:
        assert "Example:\n  hf-ddpm " in outcome["stdout"]
    refusals = [outcome["stderr"].strip() for outcome in outcomes[17:]]
    assert all(len(refusal.splitlines()) == 1 for refusal in refusals), refusals
    assert f"{truncated / WEIGHTS} is not a complete safetensors file" in refusals[0]
    assert f"{space / 'deploy.sh'} holds a Hugging Face access token" in refusals[1]
    assert hub_server.token not in refusals[1]
    assert "`include` names 'nowhere.txt', which is not a file inside" in refusals[2]
    assert f"{tmp_path / 'missing' / 'model_index.json'} is missing" in refusals[3]
    assert f"`repo_id` {str(folder)!r} is a local folder" in refusals[4]
