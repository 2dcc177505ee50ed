# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The training loop: `train(args)` reads top to bottom; the pieces it calls are small functions around it.

Exact resume: every source of randomness is either restored from the checkpoint (model, optimizer, LR schedule, EMA,
timestep sampler and the global RNG of every process, by `accelerator.save_state`/`load_state`) or a pure function
of (seed, epoch, position): the data order (`data.EpochShuffle`; with --streaming, `datasets`' seeded shuffle buffer,
each process's position saved by `TrainingProgress`), the augmentations (`data.augment`) and the evaluation noise
(own generators). A run resumed at step k repeats a straight run's steps k+1... bit for bit on the same hardware.
"""

import argparse
import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator, PartialState, skip_first_batches
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object, set_seed
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .._devices import resolve_device
from .._errors import UsageError
from ..files import atomic_save, atomic_write_text
from ..hub import push_checkpoint, push_pipeline, save_model_card
from ..images import auto_scale, image_grid
from ..pipeline_ddpm_posterior import DDPMPosteriorPipeline
from ..scheduling_ddpm_posterior import LEARNED_VARIANCE_TYPES, DDPMPosteriorScheduler
from . import checkpoints, data, presets
from .losses import training_losses
from .metrics import LossMeter, NonFiniteGuard
from .resample import LossSecondMomentResampler, UniformSampler

logger = get_logger(__name__)


@dataclass
class TrainingProgress:
    """
    Where the run is, saved with every checkpoint. The data position (epoch, batches_in_epoch) is saved for every
    process: with --streaming each process reads its own part of the stream, of its own length, so the processes go
    through epochs at their own pace (taking one batch each per step).
    """

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "positions": gather_object([(self.epoch, self.batches_in_epoch)])}

    def load_state_dict(self, state: dict) -> None:
        positions, process = state["positions"], PartialState()
        if len(positions) != process.num_processes:
            raise ValueError(f"it was saved by {len(positions)} process(es), this run has {process.num_processes}")
        self.global_step = int(state["global_step"])
        self.epoch, self.batches_in_epoch = (int(value) for value in positions[process.process_index])


@dataclass
class TrainingComponents:
    """Everything one training step needs (built by `build_components`)."""

    accelerator: Accelerator
    unet: torch.nn.Module
    noise_scheduler: DDPMPosteriorScheduler
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    timestep_sampler: UniformSampler
    ema: EMAModel | None
    args: argparse.Namespace  # --loss, --vlb_weight, --max_grad_norm
    nonfinite: NonFiniteGuard = field(default_factory=NonFiniteGuard)


def build_accelerator(args: argparse.Namespace) -> Accelerator:
    return Accelerator(
        # with no GPU, `accelerate launch --multi_gpu` would start independent processes: cpu=True makes them one
        # data-parallel job over gloo (and a single process a plain CPU run)
        cpu=resolve_device(args.device).type == "cpu",
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        # pinned batches (see build_dataloader) copied to the GPU without waiting for the device
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
    )


def build_dataloader(args: argparse.Namespace, dataset, num_processes: int) -> torch.utils.data.DataLoader:
    """Whole batches in `EpochShuffle`'s order (drop_last: equal batches on every process), or a stream's batches."""
    streaming = isinstance(dataset, data.StreamingImageDataset)
    if not streaming and len(dataset) < args.train_batch_size * num_processes:
        raise UsageError(
            f"The dataset has {len(dataset)} images, fewer than --train_batch_size {args.train_batch_size} x"
            f" {num_processes} process(es): lower --train_batch_size."
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None if streaming else args.train_batch_size,
        sampler=None if streaming else data.EpochShuffle(len(dataset), args.seed),
        drop_last=not streaming,
        num_workers=args.dataloader_num_workers,
        collate_fn=torch.utils.data.default_convert,  # the dataset returns whole batches (`__getitems__`)
        pin_memory=resolve_device(args.device).type == "cuda",
        # the loader's own generator: creating an iterator must not draw from the global RNG (exact resume)
        generator=torch.Generator().manual_seed(args.seed),
    )


def build_components(args: argparse.Namespace, accelerator: Accelerator, dataloader):
    """The UNet, optimizer, LR schedule, EMA and timestep sampler, prepared with `dataloader`; returns both."""
    set_seed(args.seed)  # the same initial weights on every process
    learned_variance = args.variance_type in LEARNED_VARIANCE_TYPES
    unet = UNet2DModel(**presets.unet_config(args.model_preset, args.resolution, args.channels, learned_variance))
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)  # the convolutions' outputs follow their weights' layout
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
        # one kernel for all parameters instead of a loop over ~100 small tensors; elsewhere torch picks foreach
        fused=accelerator.device.type in ("cpu", "cuda") or None,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        # Accelerate steps the schedule once per process on each optimizer step
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    if isinstance(dataloader.dataset, data.StreamingImageDataset):
        # not through accelerate: it would have process 0 decode every batch and send each process its part
        # (dispatch_batches), or every process decode every batch and keep its own; the stream is already split
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    else:
        unet, optimizer, dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, dataloader, lr_scheduler)
    if args.torch_compile:
        # in place (nn.Module.compile): parameter names, checkpoints and the EMA see the plain UNet
        accelerator.unwrap_model(unet).compile()
    ema = None
    if args.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=args.ema_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            foreach=True,
        )
    noise_scheduler = DDPMPosteriorScheduler(
        num_train_timesteps=args.ddpm_num_steps,
        beta_schedule=args.beta_schedule,
        variance_type=args.variance_type,
        prediction_type=args.prediction_type,
        clip_sample=True,
        # Improved DDPM's "ddimN" respacing: schedulers swapped in with `from_config` then start at t = 960 for 25
        # steps, not at t = 999 where the cosine alpha-bar is 2.4e-9 (benchmarks/fast_samplers.py)
        timestep_spacing="leading",
    )
    if args.timestep_sampler == "loss-second-moment":
        sampler = LossSecondMomentResampler(args.ddpm_num_steps, device=accelerator.device)
    else:
        sampler = UniformSampler(args.ddpm_num_steps)
    c = TrainingComponents(accelerator, unet, noise_scheduler, optimizer, lr_scheduler, sampler, ema, args)
    set_seed(args.seed, device_specific=True)  # from here on, every process draws its own noise and timesteps
    return c, dataloader


def compute_losses(c: TrainingComponents, images: torch.Tensor):
    """The weighted loss of uint8 images [B x C x H x W] to backpropagate, the [B] loss terms and [B] timesteps."""
    x_start = data.to_model_space(images)
    timesteps, weights = c.timestep_sampler.sample(x_start.shape[0], x_start.device)
    noise = torch.randn_like(x_start)
    x_t = c.noise_scheduler.add_noise(x_start, noise, timesteps)  # q(x_t | x_0), Ho et al. eq. 4
    model_output = c.unet(x_t, timesteps).sample
    loss_type, vlb_weight = c.args.loss, c.args.vlb_weight
    terms = training_losses(c.noise_scheduler, model_output, x_start, x_t, noise, timesteps, loss_type, vlb_weight)
    return (terms["loss"] * weights).mean(), terms, timesteps


def train_step(c: TrainingComponents, images: torch.Tensor, global_step: int):
    """
    Forward, backward and (once every `gradient_accumulation_steps` batches) an optimizer and EMA step; returns this
    process's [B] timesteps and [B] loss terms. Nothing is read back to the host (no `.item()`, `.cpu()` or branch on
    a tensor's value), so a GPU never idles waiting for it: the non-finite check is recorded on the device, and the
    loss-second-moment sampler learns from the losses of all processes on the device (a collective).
    """
    accelerator = c.accelerator
    with accelerator.accumulate(c.unet):
        loss, terms, timesteps = compute_losses(c, images)
        c.nonfinite.observe(terms["loss"], global_step + 1)
        if isinstance(c.timestep_sampler, LossSecondMomentResampler):
            gathered = accelerator.gather(torch.stack([timesteps.float(), terms["loss"].detach().float()], dim=1))
            c.timestep_sampler.update_with_all_losses(gathered[:, 0].long(), gathered[:, 1])  # [B_all] each
        accelerator.backward(loss)
        if accelerator.sync_gradients and c.args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(c.unet.parameters(), c.args.max_grad_norm)
        c.optimizer.step()
        c.lr_scheduler.step()
        c.optimizer.zero_grad()
    if accelerator.sync_gradients and c.ema is not None:
        c.ema.step(c.unet.parameters())
    return timesteps, {name: term.detach() for name, term in terms.items()}


def train(args: argparse.Namespace) -> str:
    """Train as `args` say; returns the output folder holding the saved pipeline."""
    accelerator = build_accelerator(args)
    # the data first: a missing column or an empty dataset fails before anything is written
    dataset, heldout_x, data_info = data.load_data(args, accelerator.process_index, accelerator.num_processes)
    dataloader = build_dataloader(args, dataset, accelerator.num_processes)
    lock = prepare_output_dir(args, accelerator)
    try:
        return _train_in_output_dir(args, accelerator, dataset, heldout_x, data_info, dataloader)
    finally:
        lock.release()


def _train_in_output_dir(args, accelerator: Accelerator, dataset, heldout_x, data_info: dict, dataloader) -> str:
    is_main = accelerator.is_main_process
    streaming = isinstance(dataset, data.StreamingImageDataset)
    num_epochs = math.inf  # a stream: as many epochs as --max_train_steps takes
    if not streaming:
        # each process gets every num_processes-th batch (drop_last: the same number on every process)
        steps_per_epoch = math.ceil(len(dataloader) // accelerator.num_processes / args.gradient_accumulation_steps)
        args.max_train_steps = args.max_train_steps or args.num_epochs * steps_per_epoch
        num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    c, dataloader = build_components(args, accelerator, dataloader)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress, c.timestep_sampler, *([c.ema] if c.ema else []))
    keep = resume(args, accelerator, progress)  # newer checkpoints: never pruned before this run rewrites them
    evaluator = EvaluationModel(c) if is_main else None
    if args.logger != "none":  # TensorBoard takes scalars and strings only
        flags = {name: value for name, value in public_flags(args).items() if isinstance(value, (int, float, str))}
        accelerator.init_trackers("train", config=flags)
    _log_run_summary(args, accelerator, data_info, num_epochs)

    bar = tqdm(
        total=args.max_train_steps,
        initial=progress.global_step,
        desc="Training",
        disable=not accelerator.is_local_main_process,
    )
    meter = LossMeter(args.ddpm_num_steps)
    images_per_step = args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    window_start, window_step = time.perf_counter(), progress.global_step
    while progress.global_step < args.max_train_steps and progress.epoch < num_epochs:
        dataset.set_epoch(progress.epoch)  # the flips and crops (and a stream's order)
        # a resumed run skips the batches this epoch already used, in the same order as before
        if streaming:
            dataset.skip_batches(progress.batches_in_epoch)  # before the iterator copies the dataset to its worker
            batches = (images.to(accelerator.device, non_blocking=True) for images in dataloader)
        else:
            dataloader.set_epoch(progress.epoch)  # the order
            batches = dataloader
            if progress.batches_in_epoch:
                batches = skip_first_batches(dataloader, progress.batches_in_epoch)
        for images in batches:
            timesteps, terms = train_step(c, images, progress.global_step)
            progress.batches_in_epoch += 1
            meter.add(terms, timesteps)
            if not accelerator.sync_gradients:
                continue
            progress.global_step += 1
            step = progress.global_step
            bar.update(1)
            # the host reads the device's numbers here, every --logging_steps steps, and before anything is saved
            if step % args.logging_steps == 0:
                c.nonfinite.check(accelerator)
                logs = meter.averages(accelerator, prefix="train/")
                images_per_second = images_per_step * (step - window_step) / (time.perf_counter() - window_start)
                window_start, window_step = time.perf_counter(), step
                logs.update({"lr": c.lr_scheduler.get_last_lr()[0], "images_per_second": images_per_second})
                accelerator.log(logs, step=step)
                bar.set_postfix(
                    loss=f"{logs['train/loss']:.4f}", lr=f"{logs['lr']:.2e}", img_s=f"{images_per_second:.0f}"
                )
            saving = args.checkpointing_steps and step % args.checkpointing_steps == 0
            sampling = is_main and args.save_images_steps and step % args.save_images_steps == 0
            scoring = is_main and heldout_x is not None and args.bpd_steps and step % args.bpd_steps == 0
            if saving or sampling or scoring:
                c.nonfinite.check(accelerator if saving else None)  # sampling and scoring: the main process alone
            if saving:
                save_training_state(args, accelerator, step, keep)
            if sampling:
                grid = evaluator.sample_grid(os.path.join(args.output_dir, "training_samples", f"step-{step:06d}.png"))
                _log_grid(accelerator, grid, step)
            if scoring:
                bpd = evaluator.bits_per_dim(heldout_x, step)
                bar.write(f"step {step}: held-out bits/dim {bpd['value']:.4f} +- {bpd['standard_error']:.4f}")
            if step >= args.max_train_steps:
                break
        else:  # the epoch ran out (not a break): the next one starts from its first batch
            progress.epoch += 1
            progress.batches_in_epoch = 0
    bar.close()

    c.nonfinite.check(accelerator)  # before the last checkpoint and the saved pipeline
    last_checkpoint = checkpoints.checkpoint_path(args.output_dir, progress.global_step)
    if args.checkpointing_steps and (not os.path.isdir(last_checkpoint) or progress.global_step in keep):
        save_training_state(args, accelerator, progress.global_step, keep)
    if is_main:
        finish(args, accelerator, evaluator, heldout_x, data_info)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return args.output_dir


def prepare_output_dir(args: argparse.Namespace, accelerator: Accelerator) -> checkpoints.OutputDirLock:
    """Create and lock the output folder (one run per folder); refuse to mix a run with an older run's checkpoints."""
    existing = checkpoints.list_checkpoints(args.output_dir)
    if existing and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
        raise UsageError(
            f"{args.output_dir} already holds checkpoints of an earlier run ({os.path.basename(existing[-1][1])});"
            " pass --resume_from_checkpoint latest to continue it, or --overwrite_output_dir to start over."
        )
    lock = checkpoints.OutputDirLock(args.output_dir)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        lock.acquire()  # before anything in the folder is deleted: another run may be using it
        if args.resume_from_checkpoint is None:  # --overwrite_output_dir
            for _, folder in checkpoints.list_checkpoints(args.output_dir):
                checkpoints.remove_folder(folder)
    accelerator.wait_for_everyone()
    return lock


def resume(args: argparse.Namespace, accelerator: Accelerator, progress: TrainingProgress) -> set[int]:
    """
    Restore the training state of `--resume_from_checkpoint`, or say in one line why it cannot be restored exactly
    (`UsageError`). Returns the steps of newer checkpoints in `--output_dir`: pruning keeps them until rewritten.
    """
    spec = args.resume_from_checkpoint
    with hub_token(args.hub_token):
        folder = checkpoints.resolve_resume_checkpoint(spec, args.output_dir, args.allow_inexact_resume)
    if folder is None:
        if spec == "latest":
            logger.info(f"No checkpoint in {args.output_dir}: starting a new run.")
        return set()
    logger.info(f"Resuming from {folder}")
    # the schedule and the prediction change no tensor: a state that loads would go on with another recipe
    changed = checkpoints.changed_flags(folder, {name: getattr(args, name) for name in RECIPE_FLAGS})
    if changed:
        raise UsageError(f"--resume_from_checkpoint {spec}: {folder} was saved with {changed}; resume with its flags.")
    try:
        accelerator.load_state(folder)
    except (RuntimeError, ValueError, KeyError) as error:  # another model, EMA, timestep sampler, number of processes
        # torch names the first tensor that does not fit on its second line
        lines = [line.strip() for line in str(error).strip().splitlines()] or [type(error).__name__]
        reason = " ".join(lines[:2]) + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
        changed = checkpoints.changed_flags(folder, state_flags(args))
        saved_with = f"; it was saved with {changed}" if changed else ""
        raise UsageError(
            f"--resume_from_checkpoint {spec}: {folder} could not be restored ({reason}){saved_with}."
        ) from error
    problem = checkpoints.checkpoint_problem(folder) if args.allow_inexact_resume else None
    if problem is not None:
        logger.warning(
            f"{folder}: {problem}. RESUMING ANYWAY (--allow_inexact_resume): the random states were not restored, and"
            " this run will NOT repeat an uninterrupted one bit for bit."
        )
    if progress.global_step > args.max_train_steps:
        raise UsageError(
            f"--max_train_steps {args.max_train_steps} is below the step of the checkpoint to resume from ({folder}:"
            f" step {progress.global_step}): pass --max_train_steps above {progress.global_step} to train further."
        )
    return {step for step, _ in checkpoints.list_checkpoints(args.output_dir) if step > progress.global_step}


RECIPE_FLAGS = ["beta_schedule", "prediction_type"]


def state_flags(args: argparse.Namespace) -> dict:
    """The flags that shape the saved training state (recorded in each checkpoint's manifest, compared on resume)."""
    names = "model_preset resolution channels variance_type use_ema timestep_sampler ddpm_num_steps".split()
    names += RECIPE_FLAGS
    return {name: getattr(args, name) for name in names}


def save_training_state(args: argparse.Namespace, accelerator: Accelerator, step: int, keep: set[int]) -> None:
    """Save checkpoint-`step` (pruning spares the steps in `keep`) and push it when asked."""
    keep.discard(step)  # from now on checkpoint-<step> is this run's own
    limit = args.checkpoints_total_limit
    folder = checkpoints.save_checkpoint(accelerator, args.output_dir, step, state_flags(args), limit, frozenset(keep))
    logger.info(f"Saved {folder}")
    if args.push_checkpoints_to_hub and accelerator.is_main_process:
        target = f"{hub_repo_id(args)}@{args.hub_checkpoint_revision}"
        try:
            with hub_token(args.hub_token):
                branch, private = args.hub_checkpoint_revision, args.hub_private_repo
                sha = push_checkpoint(folder, hub_repo_id(args), branch=branch, private=private)
        except Exception as error:  # a network or Hub failure must not end a long run: the checkpoint is on disk
            logger.error(f"Could not push {folder} to {target}: {error}")
        else:
            logger.info(f"Pushed {os.path.basename(folder)} to {target} (commit {sha})")


class EvaluationModel:
    """
    A copy of the UNet holding the EMA weights (the training ones without EMA) for the sample grids, bits/dim and the
    saved pipeline: evaluation never touches the training weights, and it draws from its own generators.
    """

    def __init__(self, c: TrainingComponents):
        self.args, self.c = c.args, c
        with torch.random.fork_rng(devices=[]):  # its random init must not shift the training RNG (exact resume)
            unet = UNet2DModel.from_config(c.accelerator.unwrap_model(c.unet).config)
        unet = unet.to(c.accelerator.device).eval().requires_grad_(False)
        scheduler = DDPMPosteriorScheduler.from_config(c.noise_scheduler.config)
        self.pipeline = DDPMPosteriorPipeline(unet=unet, scheduler=scheduler)
        self.pipeline.set_progress_bar_config(disable=True)

    def updated_pipeline(self) -> DDPMPosteriorPipeline:
        if self.c.ema is None:
            self.pipeline.unet.load_state_dict(self.c.accelerator.unwrap_model(self.c.unet).state_dict())
        else:
            self.c.ema.copy_to(self.pipeline.unet.parameters())
        return self.pipeline

    def sample_grid(self, path: str):
        """A grid of --eval_batch_size samples (always of the same noise, to compare across steps), saved as `path`."""
        generator = torch.Generator().manual_seed(self.args.seed)
        steps = self.args.ddpm_num_inference_steps
        pipeline = self.updated_pipeline()
        images = pipeline(
            batch_size=self.args.eval_batch_size, generator=generator, num_inference_steps=steps, output_type="np"
        ).images
        grid = image_grid(images, scale=auto_scale(max(images.shape[1:3])))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_save(path, lambda temporary: grid.save(temporary, format="PNG"))
        return grid

    def bits_per_dim(self, images: torch.Tensor, step: int) -> dict:
        """The bound of the held-out `images` [N x C x H x W] in bits/dim (strided over timesteps), logged."""
        strided = self.args.bpd_num_timesteps if self.args.bpd_num_timesteps < self.args.ddpm_num_steps else None
        result = self.updated_pipeline().bits_per_dim(
            images.to(self.c.accelerator.device),
            generator=torch.Generator().manual_seed(0),
            batch_size=512,
            num_timesteps=strided,
            show_progress=False,
        )
        bpd = {
            "value": float(result.bpd.mean()),
            "standard_error": result.standard_error,
            "num_images": int(images.shape[0]),
            "num_timesteps": int(result.timesteps.shape[1]),
        }
        self.c.accelerator.log({"bits_per_dim/heldout": bpd["value"]}, step=step)
        return bpd


def _log_grid(accelerator: Accelerator, grid, step: int) -> None:
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": np.asarray(grid.convert("RGB"))[None]}, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({"samples": [grid]}, step)


def finish(args, accelerator: Accelerator, evaluator: EvaluationModel, heldout_x, data_info: dict) -> None:
    """Save the EMA pipeline, training_args.json, metrics.json, samples.png and the model card; push if asked."""
    # save_pretrained replaces only the pipeline's own files (checkpoints and logs stay)
    evaluator.updated_pipeline().save_pretrained(args.output_dir)
    for name in ("eval_results.json", "eval_samples.png"):  # hf-ddpm eval's, of the weights just replaced
        if os.path.isfile(os.path.join(args.output_dir, name)):
            os.remove(os.path.join(args.output_dir, name))
    record = {
        **public_flags(args),
        "dataset": args.dataset_name or args.train_data_dir or "scikit-learn digits (8x8, built in)",
        "num_processes": accelerator.num_processes,
        "total_batch_size": args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes,
        **data_info,
    }
    _write_json(record, os.path.join(args.output_dir, "training_args.json"))
    metrics = {}
    if heldout_x is not None:
        metrics["bits_per_dim"] = {"split": "held-out", **evaluator.bits_per_dim(heldout_x, args.max_train_steps)}
        logger.info(f"Held-out bits/dim: {metrics['bits_per_dim']['value']:.4f} ({data_info['heldout_split']})")
    _write_json(metrics, os.path.join(args.output_dir, "metrics.json"))
    evaluator.sample_grid(os.path.join(args.output_dir, "samples.png"))
    save_model_card(args.output_dir)
    if args.push_to_hub:
        with hub_token(args.hub_token):
            push_pipeline(args.output_dir, hub_repo_id(args), private=args.hub_private_repo)


def _write_json(record: dict, path: str) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def public_flags(args: argparse.Namespace) -> dict:
    """The flags, without the token (never written, tracked or logged) and without the `hf-ddpm` handler."""
    return {name: value for name, value in vars(args).items() if name != "hub_token" and not callable(value)}


def hub_repo_id(args: argparse.Namespace) -> str:
    """`--hub_model_id`, or the output folder's name (as diffusers' scripts do)."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


@contextlib.contextmanager
def hub_token(token: str | None):
    """`HF_TOKEN` set to `token` inside the block: huggingface_hub, and hf_ddpm.hub's secret scan, read it there."""
    previous = {"HF_TOKEN": os.environ["HF_TOKEN"]} if "HF_TOKEN" in os.environ else {}
    os.environ.update({} if token is None else {"HF_TOKEN": token})
    try:
        yield
    finally:
        os.environ.pop("HF_TOKEN", None)
        os.environ.update(previous)


def _log_run_summary(args, accelerator: Accelerator, data_info: dict, num_epochs: int | float) -> None:
    num_train = data_info["num_train_images"]
    logger.info(
        f"***** Training *****\n"
        f"  Images: {'a stream of' if num_train is None else num_train} train,"
        f" {data_info['num_heldout_images']} held out ({data_info['heldout_split'] or 'none'})\n"
        f"  Processes: {accelerator.num_processes} ({accelerator.distributed_type}, {accelerator.device})\n"
        f"  Batch: {args.train_batch_size} per process,"
        f" {args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes} per optimizer step\n"
        f"  Steps: {args.max_train_steps}" + ("" if num_epochs == math.inf else f" ({num_epochs} epochs)"),
    )


def configure_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    noisy = ("httpx", "urllib3", "filelock", "fsspec", "datasets", "huggingface_hub", "accelerate.checkpointing")
    for name in (*noisy, "accelerate.accelerator"):
        logging.getLogger(name).setLevel(logging.WARNING)
