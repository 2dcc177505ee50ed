"""Saving and loading as users do: our layout, remote code without hf_ddpm, diffusers' own DDPM folders."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import make_tiny_unet
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler


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
    # saving again over the folder replaces it whole, leaving no staging folders behind
    tiny_pipeline.save_pretrained(folder)
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


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
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        DDPMPosteriorPipeline.from_pretrained(str(tmp_path))
    folder = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(str(folder))
    index = folder / "model_index.json"
    good = index.read_text()

    index.write_text("{not json")
    with pytest.raises(ValueError, match="model_index.json is not valid JSON"):
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
    with pytest.raises(ValueError, match="unet"):
        DDPMPosteriorPipeline.from_pretrained(str(folder))

    torch.save({}, folder / "unet" / "diffusion_pytorch_model.bin")  # pickles are never loaded
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
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


def test_unsafe_save_options_are_refused(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="safe_serialization"):
        tiny_pipeline.save_pretrained(str(tmp_path), safe_serialization=False)
    with pytest.raises(TypeError, match="Unexpected arguments"):
        DDPMPosteriorPipeline.from_pretrained(str(tmp_path), use_flashpack=True)
