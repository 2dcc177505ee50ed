"""Saving and loading as users do: our layout, remote code without hf_ddpm, diffusers' own DDPM folders."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_UNET, make_tiny_unet
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
from hf_ddpm.sampling import with_variance_type


def _sample(pipe):
    return pipe(
        batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np"
    ).images


def _files(folder):
    return sorted(os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files)


def test_save_writes_the_standard_layout_and_reloads_identically(tiny_pipeline, tmp_path):
    folder = str(tmp_path / "pipe")
    tiny_pipeline.save_pretrained(folder)
    assert _files(folder) == [
        "model_index.json",
        "pipeline_ddpm_posterior.py",
        "scheduler/scheduler_config.json",
        "scheduler/scheduling_ddpm_posterior.py",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_posterior", "DDPMPosteriorPipeline"]
    assert index["scheduler"] == ["scheduling_ddpm_posterior", "DDPMPosteriorScheduler"]
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    # the modes a plain mkdir/open give (umask 022 here), not the private ones of mkdtemp and safetensors
    umask = os.umask(0o022)
    try:
        tiny_pipeline.save_pretrained(folder)
    finally:
        os.umask(umask)
    assert oct(os.stat(folder).st_mode & 0o777) == oct(0o755)
    assert {oct(os.stat(os.path.join(folder, f)).st_mode & 0o777) for f in _files(folder)} == {oct(0o644)}
    reloaded = DDPMPosteriorPipeline.from_pretrained(folder)
    assert isinstance(reloaded.scheduler, DDPMPosteriorScheduler)
    np.testing.assert_array_equal(_sample(reloaded), _sample(tiny_pipeline))
    # saving again over the folder leaves no staging folders behind
    tiny_pipeline.save_pretrained(folder)
    assert sorted(os.listdir(tmp_path)) == ["pipe"] and len(_files(folder)) == 6


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_ddpm"] = None  # hf_ddpm must not be importable in this process
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(pipe).__name__ == "DDPMPosteriorPipeline", type(pipe)
    assert type(pipe.scheduler).__name__ == "DDPMPosteriorScheduler", type(pipe.scheduler)
    assert not type(pipe).__module__.startswith("hf_ddpm")
    generator = torch.Generator().manual_seed(0)
    images = pipe(batch_size=2, generator=generator, num_inference_steps=10, output_type="np").images
    np.save(sys.argv[2], images)
    """
)


def test_remote_code_loading_without_hf_ddpm_gives_the_same_images(tiny_pipeline, tmp_path):
    folder = str(tmp_path / "pipe")
    tiny_pipeline.save_pretrained(folder)
    script = tmp_path / "load.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), folder, str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), _sample(tiny_pipeline))


def test_remote_code_needs_trust_remote_code(tiny_pipeline, tmp_path):
    folder = str(tmp_path / "pipe")
    tiny_pipeline.save_pretrained(folder)
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(folder)


def test_learned_range_pipeline_round_trip(tmp_path):
    scheduler = DDPMPosteriorScheduler(
        num_train_timesteps=50, variance_type="learned_range", beta_schedule="squaredcos_cap_v2"
    )
    pipe = DDPMPosteriorPipeline(unet=make_tiny_unet(learned_variance=True), scheduler=scheduler)
    pipe.save_pretrained(str(tmp_path))
    reloaded = DDPMPosteriorPipeline.from_pretrained(str(tmp_path))
    assert reloaded.scheduler.config.variance_type == "learned_range"
    np.testing.assert_array_equal(_sample(reloaded), _sample(pipe))


def test_diffusers_ddpm_folder_loads_and_gives_diffusers_images(tmp_path):
    unet = make_tiny_unet(in_channels=3)
    theirs = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50, variance_type="fixed_large"))
    theirs.save_pretrained(str(tmp_path))
    ours = DDPMPosteriorPipeline.from_pretrained(str(tmp_path))
    assert isinstance(ours.scheduler, DDPMPosteriorScheduler) and ours.scheduler.config.variance_type == "fixed_large"
    np.testing.assert_allclose(_sample(ours), _sample(theirs), atol=1e-5)
    scheduler = DDPMPosteriorScheduler.from_pretrained(str(tmp_path), subfolder="scheduler")
    assert scheduler.config.num_train_timesteps == 50


def _write_flat_google_layout(folder, unet):
    """The layout of google/ddpm-cifar10-32: every file at the repo root."""
    unet.save_pretrained(str(folder))
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "DDPMPipeline",
                "_diffusers_version": "0.0.4",
                "scheduler": ["diffusers", "DDPMScheduler"],
                "unet": ["diffusers", "UNet2DModel"],
            }
        )
    )
    (folder / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "DDPMScheduler",
                "_diffusers_version": "0.1.1",
                "beta_end": 0.02,
                "beta_schedule": "linear",
                "beta_start": 0.0001,
                "clip_sample": True,
                "num_train_timesteps": 1000,
                "trained_betas": None,
                "variance_type": "fixed_large",
            }
        )
    )


def test_flat_google_ddpm_layout_loads_like_diffusers(tmp_path):
    _write_flat_google_layout(tmp_path, make_tiny_unet(in_channels=3))
    assert sorted(os.listdir(tmp_path)) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "model_index.json",
        "scheduler_config.json",
    ]
    ours = DDPMPosteriorPipeline.from_pretrained(str(tmp_path))
    theirs = DDPMPipeline.from_pretrained(str(tmp_path))
    assert ours.scheduler.config.variance_type == "fixed_large" and ours.scheduler.config.num_train_timesteps == 1000
    np.testing.assert_allclose(_sample(ours), _sample(theirs), atol=1e-5)


def test_broken_folders_fail_naming_the_file(tiny_pipeline, tmp_path):
    with pytest.raises(OSError, match="model_index.json"):
        DDPMPosteriorPipeline.from_pretrained(str(tmp_path))
    folder = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(str(folder))
    index = folder / "model_index.json"
    good = index.read_text()

    index.write_text("{not json")
    with pytest.raises(OSError, match=r"model_index\.json' is not a valid JSON file"):
        DDPMPosteriorPipeline.from_pretrained(str(folder))

    index.write_text(json.dumps({**json.loads(good), "unet": None}))
    with pytest.raises(ValueError, match="unet"):
        DDPMPosteriorPipeline.from_pretrained(str(folder))

    index.write_text(json.dumps({**json.loads(good), "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ValueError, match="UNet2DModel"):
        DDPMPosteriorPipeline.from_pretrained(str(folder))

    index.write_text(good)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(OSError, match=r"unet/diffusion_pytorch_model\.safetensors"):
        DDPMPosteriorPipeline.from_pretrained(str(folder))

    torch.save({}, folder / "unet" / "diffusion_pytorch_model.bin")  # pickles are never loaded
    weights.unlink()
    with pytest.raises(OSError, match=r"no file named diffusion_pytorch_model\.safetensors"):
        DDPMPosteriorPipeline.from_pretrained(str(folder))


def test_interrupted_save_keeps_the_previous_pipeline(tiny_pipeline, tmp_path, monkeypatch):
    folder = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(str(folder))
    before = {f: (folder / f).read_bytes() for f in _files(folder)}

    def fail(self, staging):
        raise OSError("disk full")

    monkeypatch.setattr(DDPMPosteriorPipeline, "_write_remote_code", fail)
    with pytest.raises(OSError, match="disk full"):
        tiny_pipeline.save_pretrained(str(folder))
    assert {f: (folder / f).read_bytes() for f in _files(folder)} == before
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


def test_unsafe_save_and_load_options_are_refused(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="safe_serialization"):
        tiny_pipeline.save_pretrained(str(tmp_path), safe_serialization=False)
    assert os.listdir(tmp_path) == []
    tiny_pipeline.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="use_safetensors"):
        DDPMPosteriorPipeline.from_pretrained(str(tmp_path), use_safetensors=False)


# --------------------------------------------------------------------------------------------------------------
# Saving into a folder that holds other things
# --------------------------------------------------------------------------------------------------------------


def test_save_replaces_only_the_pipelines_files_and_keeps_everything_else(tmp_path):
    """A training output folder: checkpoints, notes and logs beside the pipeline survive every save."""
    folder = tmp_path / "run"
    others = {
        "checkpoint-5/model.safetensors": b"weights of step 5",
        "checkpoint-5/random_states_0.pkl": b"rng",
        "notes.txt": b"lr 1e-4 diverged",
        "logs/events.out.tfevents": b"\x00\x01",
        "unet/my_notes.md": b"kept too",
        "README.md": b"my card",
    }
    for path, content in others.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(content)
    first = DDPMPosteriorPipeline(
        unet=make_tiny_unet(seed=0), scheduler=DDPMPosteriorScheduler(num_train_timesteps=50)
    )
    second = DDPMPosteriorPipeline(
        unet=make_tiny_unet(seed=1), scheduler=DDPMPosteriorScheduler(num_train_timesteps=50)
    )
    first.save_pretrained(folder)
    second.save_pretrained(folder)
    assert {path: (folder / path).read_bytes() for path in others} == others
    assert not [name for name in os.listdir(folder) if name.startswith(".")]  # no staging folder left
    np.testing.assert_array_equal(_sample(DDPMPosteriorPipeline.from_pretrained(folder)), _sample(second))


def test_save_removes_stale_weights_of_its_variant_and_keeps_other_variants(tiny_pipeline, tmp_path):
    folder = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(folder, max_shard_size="20KB")  # sharded
    shards = [name for name in os.listdir(folder / "unet") if "-of-" in name]
    assert len(shards) > 1 and (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    tiny_pipeline.save_pretrained(folder, variant="fp16")
    tiny_pipeline.save_pretrained(folder)  # whole again: the old shards and their index go, the fp16 variant stays
    assert sorted(os.listdir(folder / "unet")) == [
        "config.json",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.safetensors",
    ]
    # a scheduler that is not ours: its module file, which model_index.json no longer names, goes too
    tiny_pipeline.scheduler = DDIMScheduler.from_config(tiny_pipeline.scheduler.config)
    tiny_pipeline.save_pretrained(folder)
    assert sorted(os.listdir(folder / "scheduler")) == ["scheduler_config.json"]
    assert isinstance(DDPMPosteriorPipeline.from_pretrained(folder).scheduler, DDIMScheduler)


def _snapshot(folder):
    return {path: (folder / path).read_bytes() for path in _files(folder)}, sorted(
        os.path.relpath(root, folder) for root, _, _ in os.walk(folder)
    )


def test_a_save_that_fails_while_moving_files_in_leaves_every_file_as_it_was(tmp_path, monkeypatch):
    """Each rename of the save fails in turn: the folder keeps every byte of the old pipeline, and nothing new."""
    folder = tmp_path / "run"
    old = DDPMPosteriorPipeline(unet=make_tiny_unet(seed=0), scheduler=DDPMPosteriorScheduler(num_train_timesteps=50))
    old.save_pretrained(folder, max_shard_size="20KB")  # shards and an index, which the new save replaces
    (folder / "notes.txt").write_text("kept")
    new = DDPMPosteriorPipeline(unet=make_tiny_unet(seed=1), scheduler=DDIMScheduler(num_train_timesteps=50))
    before = _snapshot(folder)
    real_replace, calls = os.replace, []

    def counting_replace(source, destination):
        calls.append(destination)
        if len(calls) == failing_call:
            raise OSError("injected rename failure")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", counting_replace)
    failing_call = 0  # a successful save into a copy counts the renames
    shutil.copytree(folder, tmp_path / "copy")
    new.save_pretrained(tmp_path / "copy")
    assert len(calls) > 10
    for failing_call in range(1, len(calls) + 1):
        calls.clear()
        with pytest.raises(OSError, match="injected rename failure"):
            new.save_pretrained(folder)
        assert _snapshot(folder) == before, f"rename {failing_call} failed: the folder changed"


def test_a_failed_first_save_leaves_no_folder(tiny_pipeline, tmp_path, monkeypatch):
    def fail(self, staging):
        raise OSError("disk full")

    monkeypatch.setattr(DDPMPosteriorPipeline, "_write_remote_code", fail)
    with pytest.raises(OSError, match="disk full"):
        tiny_pipeline.save_pretrained(tmp_path / "pipe")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------------------------
# diffusers' loading arguments
# --------------------------------------------------------------------------------------------------------------


def test_variant_loads_that_variants_weights(tiny_pipeline, tmp_path):
    folder = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(folder)
    half = DDPMPosteriorPipeline(unet=make_tiny_unet(seed=3).to(torch.bfloat16), scheduler=tiny_pipeline.scheduler)
    half.save_pretrained(folder, variant="bf16")
    assert (folder / "unet" / "diffusion_pytorch_model.bf16.safetensors").is_file()
    loaded = DDPMPosteriorPipeline.from_pretrained(folder, variant="bf16", torch_dtype=torch.bfloat16)
    assert loaded.unet.dtype == torch.bfloat16
    for name, tensor in half.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor), name
    # as in diffusers, the variant names the file; the dtype of the model is torch_dtype's (float32 by default)
    as_float = DDPMPosteriorPipeline.from_pretrained(folder, variant="bf16")
    assert torch.equal(as_float.unet.conv_in.weight, half.unet.conv_in.weight.float())
    default = DDPMPosteriorPipeline.from_pretrained(folder)
    assert default.unet.dtype == torch.float32
    np.testing.assert_array_equal(_sample(default), _sample(tiny_pipeline))
    with pytest.raises(OSError, match=r"diffusion_pytorch_model\.fp16\.safetensors"):
        DDPMPosteriorPipeline.from_pretrained(folder, variant="fp16")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(OSError, match=r"no file named diffusion_pytorch_model\.safetensors"):
        DDPMPosteriorPipeline.from_pretrained(folder)


@pytest.mark.parametrize(
    "kwargs", [dict(low_cpu_mem_usage=False), dict(low_cpu_mem_usage=True), dict(device_map="cpu")]
)
def test_low_cpu_mem_usage_and_device_map_load_the_same_weights(tiny_pipeline, tmp_path, kwargs):
    tiny_pipeline.save_pretrained(tmp_path)
    loaded = DDPMPosteriorPipeline.from_pretrained(tmp_path, **kwargs)
    assert loaded.unet.device.type == "cpu"
    if "device_map" in kwargs:  # diffusers' loader dispatched the UNet
        assert loaded.unet.hf_device_map == {"": torch.device("cpu")}
    np.testing.assert_array_equal(_sample(loaded), _sample(tiny_pipeline))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(device_map="auto"), ["device_map='auto'"]),
        (dict(device_map="cpu", low_cpu_mem_usage=False), ["low_cpu_mem_usage"]),
    ],
)
def test_loading_arguments_go_to_diffusers_whose_errors_name_them(tiny_pipeline, tmp_path, kwargs, words):
    tiny_pipeline.save_pretrained(tmp_path)
    with pytest.raises(ValueError) as info:
        DDPMPosteriorPipeline.from_pretrained(tmp_path, **kwargs)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_save_pretrained_push_to_hub_is_one_commit_of_the_files_the_save_wrote(tiny_pipeline, tmp_path, hub_repo_id):
    from huggingface_hub import HfApi, hf_hub_download

    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "notes.txt").write_text("private notes")
    (folder / "README.md").write_text("my own draft card")
    tiny_pipeline.save_pretrained(folder, push_to_hub=True, repo_id=hub_repo_id)
    commits = HfApi().list_repo_commits(hub_repo_id)
    assert [c.title for c in commits] == ["Upload DDPMPosteriorPipeline", "initial commit"]
    # the save's files and diffusers' model card; never the folder's other files
    written = set(_files(folder)) - {"notes.txt", "README.md"}
    assert set(HfApi().list_repo_files(hub_repo_id)) - {".gitattributes"} == written | {"README.md"}
    card = open(hf_hub_download(hub_repo_id, "README.md")).read()
    assert "library_name: diffusers" in card and "my own draft card" not in card
    pulled = DDPMPosteriorPipeline.from_pretrained(hub_repo_id)
    np.testing.assert_array_equal(_sample(pulled), _sample(tiny_pipeline))


@pytest.mark.parametrize("passed", [False, True], ids=["this machine's token", "token="])
def test_save_pretrained_push_to_hub_refuses_files_that_hold_a_token(tiny_pipeline, tmp_path, hub_repo_id, passed):
    from huggingface_hub import HfApi, get_token

    token = "enterprise-token-0123456789abcdef" if passed else get_token()
    tiny_pipeline.unet.register_to_config(comment=f"trained by {token}")
    push = dict(push_to_hub=True, repo_id=hub_repo_id, **({"token": token} if passed else {}))
    with pytest.raises(ValueError, match=r"unet/config\.json holds a Hub token; nothing was uploaded"):
        tiny_pipeline.save_pretrained(tmp_path / "pipe", **push)
    assert not HfApi().repo_exists(hub_repo_id)
    assert (tmp_path / "pipe" / "unet" / "config.json").is_file()  # the local save itself is done


# --------------------------------------------------------------------------------------------------------------
# Errors that say what is wrong
# --------------------------------------------------------------------------------------------------------------


def test_a_missing_local_folder_is_reported_as_such(tmp_path, monkeypatch, hub_server):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    for missing in ["outputs/ddpm-digits", "./ddpm-digits", str(tmp_path / "nowhere"), "a/b/c"]:
        with pytest.raises(FileNotFoundError, match=f"No such folder: {missing}"):
            DDPMPosteriorPipeline.from_pretrained(missing)
    # a name that may be either: neither a folder here nor a repo on the Hub
    with pytest.raises(OSError, match="someone/ddpm-digits is not a local folder and is not a valid model identifier"):
        DDPMPosteriorPipeline.from_pretrained("someone/ddpm-digits")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("block_out_channels", 32, "/config.json: `block_out_channels` must be a list of at most 16, got 32"),
        ("block_out_channels", [8] * 17, "/config.json: `block_out_channels` must be a list of at most 16, got [8,"),
        ("layers_per_block", "2", "/config.json: `layers_per_block` must be an int, at most 64, got '2'"),
        ("layers_per_block", 10**6, "/config.json: `layers_per_block` must be an int, at most 64, got 1000000"),
        # what diffusers' loader refuses itself, named by the folder: a config it cannot build, and terabytes
        ("down_block_types", "DownBlock2D", ": Must provide the same number of `down_block_types`"),
        ("norm_num_groups", 3, ": num_channels (8) must be divisible by num_groups (3)"),
        ("block_out_channels", [2**20, 2**21], ": "),
    ],
)
def test_bad_unet_configs_are_refused_naming_the_file_and_field(tiny_pipeline, tmp_path, field, value, message):
    tiny_pipeline.save_pretrained(tmp_path)
    config_path = tmp_path / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config[field] = value
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError) as info:
        DDPMPosteriorPipeline.from_pretrained(tmp_path)
    assert f"{tmp_path / 'unet'}{message}" in str(info.value), str(info.value)


def test_timestep_scale_scales_the_unets_time_embedding_and_is_saved(tmp_path):
    """improved-diffusion's rescaled timesteps: the pipeline's UNet sees t * timestep_scale, wherever it is called."""
    unet = make_tiny_unet()
    pipe = DDPMPosteriorPipeline(
        unet=unet, scheduler=DDPMPosteriorScheduler(num_train_timesteps=50), timestep_scale=0.25
    )
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        scaled = unet(x, torch.tensor([40])).sample
        plain = make_tiny_unet()(x, torch.tensor([10])).sample  # 40 * 0.25
    torch.testing.assert_close(scaled, plain, rtol=0, atol=0)
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["timestep_scale"] == 0.25
    reloaded = DDPMPosteriorPipeline.from_pretrained(tmp_path)
    assert reloaded.unet.time_proj.scale == reloaded.config.timestep_scale == 0.25
    np.testing.assert_array_equal(_sample(reloaded), _sample(pipe))
    # a pipeline rebuilt around the same UNet (another variance type, the Space's per-request pipelines) keeps it
    rebuilt = with_variance_type(reloaded, "fixed_large")
    assert rebuilt.config.timestep_scale == rebuilt.unet.time_proj.scale == 0.25
    assert DDPMPosteriorPipeline.from_pretrained(tmp_path, timestep_scale=1.0).unet.time_proj.scale == 1.0
    learned = UNet2DModel(
        **TINY_UNET,
        sample_size=8,
        in_channels=1,
        out_channels=1,
        time_embedding_type="learned",
        num_train_timesteps=50,
    )
    with pytest.raises(ValueError, match="`timestep_scale` needs a UNet with the sinusoidal time embedding"):
        DDPMPosteriorPipeline(unet=learned, scheduler=DDPMPosteriorScheduler(num_train_timesteps=50), timestep_scale=2)
