"""DDPMPosteriorPipeline: same images as diffusers' DDPMPipeline, trajectories, callbacks, bits/dim, bad input."""

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_tiny_unet
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
from hf_ddpm.pipeline_ddpm_posterior import bound_strata_edges


def _sample(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", 10)
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("num_inference_steps", [10, 50])
def test_same_images_as_diffusers_ddpm_pipeline(variance_type, num_inference_steps):
    unet = make_tiny_unet()
    config = dict(num_train_timesteps=50, variance_type=variance_type)
    ours = DDPMPosteriorPipeline(unet=unet, scheduler=DDPMPosteriorScheduler(**config))
    theirs = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**config))
    images = _sample(ours, num_inference_steps=num_inference_steps)
    expected = _sample(theirs, num_inference_steps=num_inference_steps)
    assert images.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(images, expected, atol=1e-5)


def test_learned_range_model_samples_and_can_use_fixed_variances():
    unet = make_tiny_unet(learned_variance=True)
    pipe = DDPMPosteriorPipeline(
        unet=unet, scheduler=DDPMPosteriorScheduler(num_train_timesteps=50, variance_type="learned_range")
    )
    learned = _sample(pipe)
    assert learned.shape == (2, 8, 8, 1) and np.isfinite(learned).all()
    pipe.scheduler = DDPMPosteriorScheduler.from_config(pipe.scheduler.config, variance_type="fixed_small")
    fixed = _sample(pipe)
    assert np.isfinite(fixed).all() and not np.allclose(fixed, learned)


def test_output_types_and_determinism(tiny_pipeline):
    pil = tiny_pipeline(batch_size=3, generator=torch.Generator().manual_seed(1), num_inference_steps=5).images
    assert len(pil) == 3 and all(isinstance(im, PIL.Image.Image) and im.size == (8, 8) for im in pil)
    pt = tiny_pipeline(
        batch_size=3, generator=torch.Generator().manual_seed(1), num_inference_steps=5, output_type="pt"
    ).images
    assert pt.shape == (3, 1, 8, 8) and 0 <= pt.min() and pt.max() <= 1
    np.testing.assert_array_equal(
        np.stack([np.asarray(im) for im in pil]), (pt[:, 0].numpy() * 255).round().astype(np.uint8)
    )
    again = tiny_pipeline(
        batch_size=3, generator=torch.Generator().manual_seed(1), num_inference_steps=5, output_type="pt"
    )
    assert torch.equal(pt, again.images)
    (images,) = tiny_pipeline(batch_size=1, num_inference_steps=2, output_type="np", return_dict=False)
    assert images.shape == (1, 8, 8, 1)


def test_trajectory_frames_and_timesteps(tiny_pipeline):
    out = tiny_pipeline(
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=20,
        output_type="pt",
        return_trajectory=True,
        trajectory_frames=5,
    )
    assert out.trajectory.shape == (5, 2, 1, 8, 8) and out.pred_original_trajectory.shape == (5, 2, 1, 8, 8)
    chain = tiny_pipeline.scheduler.timesteps.tolist()
    assert out.trajectory_timesteps[0] == chain[0] and out.trajectory_timesteps[-1] == chain[-1]
    assert out.pred_original_trajectory.abs().max() <= 1  # clipped x_0 predictions
    full = tiny_pipeline(
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=20,
        output_type="pt",
        return_trajectory=True,
    )
    assert full.trajectory.shape[0] == 20
    # the first frame is the initial noise x_T, the same with and without recording
    torch.testing.assert_close(full.trajectory[0], out.trajectory[0])
    # the final images are the last step's output, mapped to [0, 1]
    torch.testing.assert_close(full.images, out.images)


def test_callback_on_step_end_sees_every_step_and_can_replace_the_image(tiny_pipeline):
    seen = []

    def callback(pipe, i, t, callback_kwargs):
        seen.append((i, int(t)))
        return {"image": torch.zeros_like(callback_kwargs["image"])} if i == 3 else {}

    out = tiny_pipeline(batch_size=1, num_inference_steps=4, callback_on_step_end=callback, output_type="pt")
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert [t for _, t in seen] == tiny_pipeline.scheduler.timesteps.tolist()
    assert torch.equal(out.images, torch.full_like(out.images, 0.5))  # zeros in [-1, 1] are 0.5 in [0, 1]


def test_ddim_scheduler_swaps_in_via_from_config(tiny_pipeline):
    tiny_pipeline.scheduler = DDIMScheduler.from_config(tiny_pipeline.scheduler.config)
    images = _sample(tiny_pipeline, num_inference_steps=5)
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()


def test_bits_per_dim_adds_up_and_strided_estimate_is_close(tiny_pipeline):
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    full = tiny_pipeline.bits_per_dim(
        images, generator=torch.Generator().manual_seed(0), batch_size=64, show_progress=False
    )
    assert full.vb_bpd.shape == (4, 50) and full.timesteps.shape == (4, 50)
    assert (full.timesteps == torch.arange(50)).all()
    torch.testing.assert_close(full.bpd, full.prior_bpd + full.vb_bpd.sum(1))
    assert torch.isfinite(full.bpd).all() and (full.vb_bpd[:, 1:] >= 0).all()  # KL terms are non-negative
    # the UNet batch size does not change the numbers while every call holds all the images (the same noise stream;
    # with fewer images a call, the draws go to other (image, timestep) pairs: one seed and batch size, one result)
    for batch_size in (4, 8, 200):
        again = tiny_pipeline.bits_per_dim(
            images, generator=torch.Generator().manual_seed(0), batch_size=batch_size, show_progress=False
        )
        torch.testing.assert_close(full.bpd, again.bpd)
    strided = tiny_pipeline.bits_per_dim(
        images, generator=torch.Generator().manual_seed(0), num_timesteps=11, show_progress=False
    )
    # the decoder term once; the 49 KL terms estimated by one timestep per image and stratum, weighted by its size
    edges = bound_strata_edges(50, 10)
    assert (strided.timesteps[:, 0] == 0).all() and strided.weights[0] == 1 and strided.weights.sum() == 50
    np.testing.assert_array_equal(strided.weights[1:].numpy(), np.diff(edges))
    kl_timesteps = strided.timesteps[:, 1:].numpy()
    assert ((edges[:-1] <= kl_timesteps) & (kl_timesteps < edges[1:])).all()
    assert len({tuple(row) for row in kl_timesteps.tolist()}) > 1  # each image draws its own
    # that the weighted sum is the bound is checked against closed forms and the recorded full bound of the shipped
    # model (test_evaluation.py, test_evidence.py), not by re-adding these fields here
    # unbiased: averaged over many draws of the strata, the weighted KL sum approaches the full one
    estimates = [
        tiny_pipeline.bits_per_dim(
            images[:1], generator=torch.Generator().manual_seed(s), num_timesteps=11, show_progress=False
        ).bpd
        for s in range(40)
    ]
    assert abs(torch.cat(estimates).mean() - full.bpd[0]) < 0.1 * full.bpd[0]
    uint8 = ((images[:, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
    from_pil = tiny_pipeline.bits_per_dim(
        [PIL.Image.fromarray(a) for a in uint8], num_timesteps=5, show_progress=False
    )
    assert from_pil.bpd.shape == (4,)


def test_bound_strata_start_with_single_timesteps_and_grow_geometrically():
    edges = bound_strata_edges(1000, 49)
    sizes = np.diff(edges)
    assert edges[0] == 1 and edges[-1] == 1000 and len(sizes) == 49
    assert (sizes[:10] == 1).all()  # the first KL terms, the largest, are evaluated exactly
    assert (np.diff(sizes) >= 0).all() and sizes[-1] > 100
    np.testing.assert_array_equal(bound_strata_edges(20, 19), np.arange(1, 21))  # K = T: every timestep
    for bad in (0, 20):
        with pytest.raises(ValueError, match="num_strata"):
            bound_strata_edges(20, bad)


def test_bad_calls_are_refused(tiny_pipeline):
    with pytest.raises(ValueError, match="batch_size"):
        tiny_pipeline(batch_size=0)
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipeline(output_type="jpg", num_inference_steps=2)
    with pytest.raises(ValueError, match="num_inference_steps"):
        tiny_pipeline(num_inference_steps=51)
    with pytest.raises(ValueError, match="generator"):
        tiny_pipeline(batch_size=2, generator=[torch.Generator()], num_inference_steps=2)
    with pytest.raises(ValueError, match="channels"):
        tiny_pipeline.bits_per_dim(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        tiny_pipeline.bits_per_dim(torch.full((2, 1, 8, 8), 2.0))
    with pytest.raises(ValueError, match="num_timesteps"):
        tiny_pipeline.bits_per_dim(torch.zeros(2, 1, 8, 8), num_timesteps=1)
