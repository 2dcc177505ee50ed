"""DDPMPosteriorPipeline: same images as diffusers' DDPMPipeline, trajectories, callbacks, bits/dim, bad input."""

import ast
import importlib.util
import json
import logging
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import TINY_UNET, make_tiny_unet
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, ImagePipelineOutput, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
from hf_ddpm.evaluation.data import load_digits
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
    def run(**frames):
        generator = torch.Generator().manual_seed(0)
        return tiny_pipeline(
            batch_size=2,
            generator=generator,
            num_inference_steps=20,
            output_type="pt",
            return_trajectory=True,
            **frames,
        )

    out = run(trajectory_frames=5)
    assert out.trajectory.shape == (5, 2, 1, 8, 8) and out.pred_original_trajectory.shape == (5, 2, 1, 8, 8)
    chain = tiny_pipeline.scheduler.timesteps.tolist()
    assert out.trajectory_timesteps[0] == chain[0] and out.trajectory_timesteps[-1] == chain[-1]
    assert out.pred_original_trajectory.abs().max() <= 1  # clipped x_0 predictions
    full = run()
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


DATA_STD = 0.5


class GaussianDataOracle(UNet2DModel):
    """
    The exact noise prediction for data x_0 ~ N(0, DATA_STD^2 I): E[eps | x_t] = sqrt(1 - a) x_t / (a s^2 + 1 - a),
    a = alpha_bar_t, at any (also fractional) timestep, with alpha_bar interpolated in sigma = sqrt((1 - a) / a) as
    the Euler family of schedulers does. A correct sampler draws from N(0, DATA_STD^2); a sampler that skips
    `init_noise_sigma` or `scale_model_input` does not. With two output channels it also "learns" variances (v = 0).
    """

    def forward(self, sample, timestep, return_dict=True, **kwargs):
        train_sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)[:1].numpy()
        sigma = np.interp(t, np.arange(len(train_sigmas)), train_sigmas)[0]
        alpha_bar = 1 / (1 + sigma**2)
        eps = sample * ((1 - alpha_bar) ** 0.5 / (alpha_bar * DATA_STD**2 + 1 - alpha_bar))
        if self.config.out_channels == 2 * self.config.in_channels:
            eps = torch.cat([eps, torch.zeros_like(eps)], dim=1)
        return UNet2DOutput(sample=eps)


def _oracle_pipeline(learned_variance):
    unet = GaussianDataOracle(**make_tiny_unet(learned_variance=learned_variance).config)
    scheduler = DDPMPosteriorScheduler(variance_type="learned_range" if learned_variance else "fixed_small")
    unet.alphas_cumprod = scheduler._alphas_cumprod64
    return DDPMPosteriorPipeline(unet=unet, scheduler=scheduler)


COMPATIBLE_SCHEDULERS = [cls.__name__ for cls in DDPMPosteriorScheduler().compatibles]


@pytest.mark.parametrize("learned_variance", [True, False], ids=["learned_range", "fixed_small"])
@pytest.mark.parametrize("name", COMPATIBLE_SCHEDULERS)
def test_every_compatible_scheduler_samples_the_data_or_is_refused_by_name(name, learned_variance):
    pipe = _oracle_pipeline(learned_variance)
    scheduler_class = next(cls for cls in pipe.scheduler.compatibles if cls.__name__ == name)
    if name == "DPMSolverSDEScheduler" and importlib.util.find_spec("torchsde") is None:
        with pytest.raises(ImportError, match="DPMSolverSDEScheduler requires the torchsde library"):
            scheduler_class.from_config(pipe.scheduler.config)
        return
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    if name == "EDMEulerScheduler":  # EDM-preconditioned models only: refused before the first UNet call
        with pytest.raises(ValueError, match="EDMEulerScheduler samples models trained with EDM"):
            pipe(batch_size=2, num_inference_steps=5)
        return
    images = pipe(
        batch_size=32, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    x0 = images * 2 - 1  # back to model space
    # 2048 draws; first-order samplers at 50 steps land within 12% of the data's spread, a sampler that misses the
    # initial scale or the input scaling lands orders of magnitude off
    assert abs(float(x0.mean())) < 0.05 and abs(float(x0.std()) / DATA_STD - 1) < 0.15, (x0.mean(), x0.std())


@pytest.mark.parametrize("learned_variance", [True, False], ids=["learned_range", "fixed_small"])
def test_going_back_from_another_scheduler_restores_ours(learned_variance):
    pipe = _oracle_pipeline(learned_variance)
    original = pipe.scheduler.config
    before = _sample(pipe, num_inference_steps=10)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler = DDPMPosteriorScheduler.from_config(pipe.scheduler.config)
    assert {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")} == {
        k: v for k, v in original.items() if not k.startswith("_")
    }
    np.testing.assert_array_equal(_sample(pipe, num_inference_steps=10), before)


DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "spaces" / "ddpm-digits" / "model"


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("num_inference_steps", [25, 50])
@pytest.mark.parametrize("spacing", ["leading", "linspace"], ids=["as shipped", "as earlier versions saved it"])
def test_every_compatible_scheduler_draws_digits_from_the_cosine_model_or_is_refused_with_a_remedy_that_works(
    spacing, num_inference_steps
):
    """
    The shipped model (cosine schedule, learned variances): every scheduler swapped in gives digits (pixel mean and
    std within 0.05 of real digits'), or is refused before the first UNet call, and the option its refusal names
    gives digits. Samplers starting at t = 999 (alpha-bar 2.4e-9) gave saturated noise (std 0.47).
    """
    pipe = DDPMPosteriorPipeline.from_pretrained(DEFAULT_MODEL)
    pipe.set_progress_bar_config(disable=True)
    assert (
        pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2"
        and pipe.scheduler.config.timestep_spacing == "leading"
    )
    config = {**pipe.scheduler.config, "timestep_spacing": spacing}
    real = load_digits("all")[0] / 255.0
    unet_calls, refused = [], []
    pipe.unet.register_forward_pre_hook(lambda *args: unet_calls.append(1))
    for scheduler_class in [DDPMPosteriorScheduler, *pipe.scheduler.compatibles]:
        if scheduler_class.__name__ in ("DPMSolverSDEScheduler", "EDMEulerScheduler"):  # needs torchsde; EDM models
            continue
        pipe.scheduler = scheduler_class.from_config(config)
        generator = torch.Generator().manual_seed(0)
        try:
            images = pipe(
                batch_size=16, num_inference_steps=num_inference_steps, generator=generator, output_type="np"
            )
        except ValueError as refusal:
            assert unet_calls == [], f"{scheduler_class.__name__} was refused after calling the UNet"
            option = re.search(r"from_config\(pipe\.scheduler\.config, (\w+)=([^)]*)\)", str(refusal))
            assert "t=999" in str(refusal) and option, str(refusal)
            refused.append(scheduler_class.__name__)
            pipe.scheduler = scheduler_class.from_config(config, **{option[1]: ast.literal_eval(option[2])})
            images = pipe(
                batch_size=16, num_inference_steps=num_inference_steps, generator=generator, output_type="np"
            )
        unet_calls.clear()
        mean, std = float(images.images.mean()), float(images.images.std())
        assert abs(mean - real.mean()) < 0.05 and abs(std - real.std()) < 0.05, (scheduler_class.__name__, mean, std)
    if spacing == "leading":  # the one compatible scheduler without `timestep_spacing`
        assert refused == ["DPMSolverSinglestepScheduler"]
    else:  # all but DDPM's ancestral steps
        assert {"DDIMScheduler", "EulerDiscreteScheduler", "PNDMScheduler"} <= set(refused)
        assert not {"DDPMPosteriorScheduler", "DDPMScheduler"} & set(refused)


def test_swapping_a_scheduler_in_prints_no_warning_about_our_config(tmp_path, caplog):
    """A config saved with `"analytic_gamma": null` (as every save wrote it) made every other scheduler warn."""
    config = {**DDPMPosteriorScheduler(beta_schedule="squaredcos_cap_v2").config, "analytic_gamma": None}
    (tmp_path / "scheduler_config.json").write_text(json.dumps({k: v for k, v in config.items() if k[0] != "_"}))
    ours = DDPMPosteriorScheduler.from_pretrained(tmp_path)
    ours.save_pretrained(tmp_path / "saved")
    assert "analytic_gamma" not in (tmp_path / "saved" / "scheduler_config.json").read_text()
    with caplog.at_level(logging.WARNING, logger="diffusers"):
        for scheduler_class in ours.compatibles:
            if scheduler_class.__name__ not in ("DPMSolverSDEScheduler", "EDMEulerScheduler"):
                scheduler_class.from_config(ours.config)
    assert caplog.records == []


def test_output_is_diffusers_image_pipeline_output(tiny_pipeline):
    assert isinstance(tiny_pipeline(batch_size=1, num_inference_steps=2), ImagePipelineOutput)


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


def test_readmes_scheduler_swap_example_runs_verbatim(monkeypatch):
    """The README's swap example, as written, on the default model (run from the repo root, as a reader would)."""
    root = DEFAULT_MODEL.parent.parent.parent
    blocks = re.findall(r"```python\n(.*?)```", (root / "README.md").read_text(), flags=re.S)
    (example,) = [block for block in blocks if "DDIMScheduler.from_config" in block]
    monkeypatch.chdir(root)
    namespace = {}
    exec(compile(example.replace("num_inference_steps=50", "num_inference_steps=10"), "README.md", "exec"), namespace)
    assert len(namespace["images"]) == 16 and type(namespace["pipe"].scheduler).__name__ == "DDPMPosteriorScheduler"
    assert namespace["pipe"].scheduler.config.variance_type == "learned_range"


def _conditional_pipeline():
    """A tiny class-conditional pipeline: 3 classes."""
    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET, sample_size=8, in_channels=1, out_channels=1, num_class_embeds=3)
    return DDPMPosteriorPipeline(unet=unet, scheduler=DDPMPosteriorScheduler(num_train_timesteps=50))


def test_class_labels_reach_every_unet_call_and_are_drawn_from_the_generator_when_omitted():
    pipe = _conditional_pipeline()
    seen = []
    pipe.unet.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["class_labels"]), with_kwargs=True)
    chosen = _sample(pipe, class_labels=[0, 2])
    assert len(seen) == 10 and all(labels.tolist() == [0, 2] for labels in seen)
    assert not np.allclose(chosen, _sample(pipe, class_labels=torch.tensor([1, 1])))
    # omitted: a class per image from the caller's generator, drawn before the noise (as the originals' samplers do)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.randint(3, (2,), generator=generator)
    expected = pipe(batch_size=2, generator=generator, num_inference_steps=10, class_labels=drawn, output_type="np")
    np.testing.assert_array_equal(_sample(pipe), expected.images)
    generator = torch.Generator().manual_seed(0)
    output = pipe(batch_size=2, generator=generator, num_inference_steps=2)  # the drawn classes are returned
    assert output.class_labels.tolist() == torch.randint(3, (2,), generator=torch.Generator().manual_seed(0)).tolist()
    # one generator per image: each draws its own image's class
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 2)]
    one_each = pipe(batch_size=2, generator=generators, num_inference_steps=3, output_type="np").images
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 2)]
    drawn = [int(torch.randint(3, (1,), generator=generator)) for generator in generators]
    expected = pipe(batch_size=2, generator=generators, num_inference_steps=3, class_labels=drawn, output_type="np")
    np.testing.assert_array_equal(one_each, expected.images)
    # the bound: the images' classes in every UNet call, and they change it
    seen.clear()
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    bound = pipe.bits_per_dim(images, torch.Generator().manual_seed(0), num_timesteps=5, class_labels=[2, 0])
    assert seen and all(labels.tolist() == [2, 0] * (len(labels) // 2) for labels in seen)
    other = pipe.bits_per_dim(images, torch.Generator().manual_seed(0), num_timesteps=5, class_labels=[1, 1])
    assert torch.isfinite(bound.bpd).all() and not torch.allclose(bound.bpd, other.bpd)


def test_bad_class_labels_are_refused_in_one_line(tiny_pipeline):
    conditional, images = _conditional_pipeline(), torch.zeros(2, 1, 8, 8)
    calls = [
        (lambda: tiny_pipeline(class_labels=[0], num_inference_steps=2), "this UNet is not class-conditional"),
        (lambda: tiny_pipeline.bits_per_dim(images, class_labels=[0, 0]), "this UNet is not class-conditional"),
        (
            lambda: conditional(batch_size=2, class_labels=[0, 3]),
            "`class_labels` must be 2 ints in [0, 3), got [0, 3]",
        ),
        (lambda: conditional(batch_size=2, class_labels=[0]), "`class_labels` must be 2 ints in [0, 3), got [0]"),
        (lambda: conditional(batch_size=2, class_labels=[0.0, 1.0]), "`class_labels` must be 2 ints in [0, 3)"),
        (lambda: conditional.bits_per_dim(images), "`class_labels`, the images' classes, are needed"),
        # each of these was taken as classes 1 and 0, or raised torch's own error
        (lambda: conditional(batch_size=2, class_labels=[True, False]), "`class_labels` must be 2 ints in [0, 3)"),
        (lambda: conditional(batch_size=2, class_labels=["1", "2"]), "`class_labels` must be 2 ints in [0, 3)"),
        (lambda: conditional(batch_size=2, class_labels=[2**70, 1]), "`class_labels` must be 2 ints in [0, 3)"),
        (lambda: conditional(batch_size=2, class_labels=[None, 1]), "`class_labels` must be 2 ints in [0, 3)"),
        (
            lambda: conditional(batch_size=2, class_labels=np.array([1, 2**63 + 5], dtype=np.uint64)),
            "`class_labels` must be 2 ints in [0, 3)",
        ),
    ]
    for call, message in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
