# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""The training loop: `train(args)` reads top to bottom; the pieces it calls are small functions around it.

Exact resume: every source of randomness is either restored from the checkpoint (model, optimizer, LR schedule, EMA,
timestep resampler and the global RNG of every process, by `accelerator.save_state`/`load_state`) or a pure function
of (seed, epoch, position): the data order (Accelerate's seedable sampler, reseeded each epoch; with --streaming,
`datasets`' seeded shuffle buffer, each process's position saved by `ProcessPositions`), the augmentations
(`data.ImageDataset`) and the evaluation noise (own generators). A run resumed at step k repeats a straight run's
steps k+1... bit for bit on the same hardware.
"""

import argparse
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .._errors import UsageError
from ..images import auto_scale, image_grid
from ..scheduling_ddpm_posterior import LEARNED_VARIANCE_TYPES, DDPMPosteriorScheduler
from . import checkpoints, data, outputs, presets, publish
from .args import resolve_device_type
from .flat_parameters import FlatParameters, can_flatten
from .lock import OutputDirLock
from .losses import training_losses
from .metrics import LossMeter, NonFiniteGuard
from .resample import UniformSampler, create_timestep_sampler

logger = get_logger(__name__)

# they shard or place the parameters themselves: no flat buffer under them
LAYOUT_OWNING_BACKENDS = (
    DistributedType.DEEPSPEED,
    DistributedType.FSDP,
    DistributedType.XLA,
    DistributedType.MEGATRON_LM,
)


@dataclass
class TrainingProgress:
    """Where the run is; saved with every checkpoint so a resumed run continues at the same batch."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, int(value))


class ProcessPositions:
    """
    The data position (epoch, batches_in_epoch) of every process, for --streaming: each process reads its own part of
    the stream, of its own length, so the processes go through epochs at their own pace (they still take one batch
    each per step). Saved in one checkpoint file (gathered from every process when the checkpoint is written);
    each process restores its own entry into its `TrainingProgress`.
    """

    def __init__(self, progress: TrainingProgress, accelerator: Accelerator):
        self.progress = progress
        self.accelerator = accelerator

    def state_dict(self) -> dict:
        from accelerate.utils import gather_object

        return {"positions": gather_object([(self.progress.epoch, self.progress.batches_in_epoch)])}

    def load_state_dict(self, state: dict) -> None:
        positions = state["positions"]
        if len(positions) != self.accelerator.num_processes:
            raise ValueError(
                f"the stream positions of {len(positions)} process(es) were saved, this run has"
                f" {self.accelerator.num_processes}"
            )
        epoch, batches_in_epoch = positions[self.accelerator.process_index]
        self.progress.epoch, self.progress.batches_in_epoch = int(epoch), int(batches_in_epoch)


@dataclass
class TrainingComponents:
    """Everything one training step needs (built by `build_components`, also used by the benchmark)."""

    accelerator: Accelerator
    unet: torch.nn.Module
    noise_scheduler: DDPMPosteriorScheduler
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    timestep_sampler: UniformSampler
    ema: EMAModel | None
    loss_type: str
    vlb_weight: float
    max_grad_norm: float
    parameters: list[torch.nn.Parameter]  # what AdamW, clipping and the EMA take: [flat.parameter] or the UNet's
    flat: FlatParameters | None = None
    nonfinite: NonFiniteGuard = field(default_factory=NonFiniteGuard)


# ----------------------------------------------------------------------------------------------------------------
# Setup
# ----------------------------------------------------------------------------------------------------------------


def build_accelerator(args: argparse.Namespace) -> Accelerator:
    """An Accelerator for the requested device; on a machine without GPUs, multi-process runs use gloo."""
    device_type = resolve_device_type(args.device)
    logging_dir = os.path.join(args.output_dir, args.logging_dir)
    return Accelerator(
        # with no GPU, `accelerate launch --multi_gpu` would start independent processes: cpu=True makes them
        # one data-parallel job over gloo (and a single process a plain CPU run)
        cpu=device_type == "cpu",
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
        # the data order is a function of (seed, epoch) on every process: needed to resume mid-epoch exactly
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed, non_blocking=True),
    )


def build_noise_scheduler(args: argparse.Namespace) -> DDPMPosteriorScheduler:
    return DDPMPosteriorScheduler(
        num_train_timesteps=args.ddpm_num_steps,
        beta_schedule=args.beta_schedule,
        variance_type=args.variance_type,
        prediction_type=args.prediction_type,
        clip_sample=True,
        # Improved DDPM's "ddimN" respacing: schedulers swapped in with `from_config` then start at t = 960 for 25
        # steps, not at t = 999 where the cosine alpha-bar is 2.4e-9 (benchmarks/fast_samplers.py)
        timestep_spacing="leading",
    )


def load_data(args: argparse.Namespace, show_progress: bool, rank: int = 0, world_size: int = 1):
    """
    The training dataset, the held-out images ([N x C x R x R] in [-1, 1]) and a description.

    The built-in digits are decoded into memory; any other dataset is decoded batch by batch as training reads it
    (`data.LazyImageDataset`), so datasets larger than memory train. The held-out images (--bpd_num_images) are
    decoded once. With --streaming, the dataset is a stream (`load_streaming_data`).
    """
    if args.streaming:
        return load_streaming_data(args, show_progress, rank, world_size)
    dataset_dict = data.load_image_dataset(
        args.dataset_name, args.dataset_config_name, args.train_data_dir, args.cache_dir
    )
    train, heldout, heldout_name = data.split_train_heldout(dataset_dict, args.heldout_fraction)
    column = data.find_image_column(train, args.image_column)
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    heldout = heldout.select(range(min(args.bpd_num_images, len(heldout))))

    decode = {"resolution": args.resolution, "channels": args.channels, "show_progress": show_progress}
    heldout_images = data.decode_images(heldout, column, center_crop=True, desc="Decoding held-out", **decode)
    decoded = {"held-out": (heldout_images, len(heldout))}
    augment = {"random_flip": args.random_flip, "seed": args.seed}
    if args.dataset_name is None and args.train_data_dir is None:  # the digits: 1.6k images of 8x8, in memory
        train_images = data.decode_images(train, column, center_crop=args.center_crop, desc="Decoding", **decode)
        decoded["training"] = (train_images, len(train))
        dataset = data.ImageDataset(train_images, args.resolution, **augment)
    else:
        dataset = data.LazyImageDataset(
            train, column, args.resolution, args.channels, center_crop=args.center_crop, **augment
        )
    for split, (images, total) in decoded.items():
        if images.num_skipped:
            logger.warning(
                f"Skipped {images.num_skipped} of {total} {split} images that could not be read or decoded"
                f" (first: {images.first_error}).",
                main_process_only=True,
            )
    if len(dataset) == 0:
        raise UsageError("The training split has no image.")
    heldout_x = data.to_model_space(heldout_images.images) if len(heldout_images) else None
    info = {
        "num_train_images": len(dataset),
        "num_heldout_images": len(heldout_images),
        "heldout_split": heldout_name,
        "num_skipped_images": sum(images.num_skipped for images, _ in decoded.values()),
        "image_column": column,
        "decoding": "lazy" if isinstance(dataset, data.LazyImageDataset) else "in memory",
    }
    return dataset, heldout_x, info


def load_streaming_data(args: argparse.Namespace, show_progress: bool, rank: int, world_size: int):
    """
    `load_data` for --streaming: a `data.StreamingImageDataset` of this process's part of the stream; the held-out
    images are the first --bpd_num_images of the test/validation split (None without one: bits/dim is skipped).
    """
    dataset_dict = data.load_streaming_dataset(
        args.dataset_name, args.dataset_config_name, args.train_data_dir, args.cache_dir
    )
    train, heldout, heldout_name = data.split_train_heldout_stream(dataset_dict, args.bpd_num_images)
    column = data.find_image_column(train, args.image_column)
    if args.max_train_samples is not None:
        train = train.take(args.max_train_samples)
    dataset = data.StreamingImageDataset(
        train,
        column,
        args.train_batch_size,
        args.resolution,
        args.channels,
        center_crop=args.center_crop,
        random_flip=args.random_flip,
        seed=args.seed,
        shuffle_buffer_size=args.shuffle_buffer_size,
        rank=rank,
        world_size=world_size,
    )
    heldout_x, num_skipped = None, 0
    if heldout is None:
        logger.info(
            "--streaming: the dataset has no test or validation split, and a stream cannot be split by index:"
            " held-out bits/dim is skipped.",
            main_process_only=True,
        )
    else:
        decode = {"resolution": args.resolution, "channels": args.channels, "show_progress": show_progress}
        heldout_images = data.decode_images(heldout, column, center_crop=True, desc="Decoding held-out", **decode)
        num_skipped = heldout_images.num_skipped
        heldout_x = data.to_model_space(heldout_images.images) if len(heldout_images) else None
    info = {
        "num_train_images": None,  # a stream's length is unknown until it has been read
        "num_heldout_images": 0 if heldout_x is None else len(heldout_x),
        "heldout_split": heldout_name,
        "num_skipped_images": num_skipped,
        "image_column": column,
        "decoding": "streaming",
    }
    return dataset, heldout_x, info


def build_dataloader(args: argparse.Namespace, dataset, num_processes: int):
    if isinstance(dataset, data.StreamingImageDataset):
        # the dataset yields whole batches of this process's part of the stream (already split by node)
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=args.dataloader_num_workers,
            pin_memory=resolve_device_type(args.device) == "cuda",
            # the loader's own generator: creating an iterator must not draw from the global RNG (exact resume)
            generator=torch.Generator().manual_seed(args.seed),
        )
    if len(dataset) < args.train_batch_size * num_processes:
        raise UsageError(
            f"The dataset has {len(dataset)} images, fewer than --train_batch_size {args.train_batch_size} x"
            f" {num_processes} process(es): lower --train_batch_size."
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=True,  # equal batches on every step and process
        num_workers=args.dataloader_num_workers,
        collate_fn=data.identity_collate,
        # pinned batches: their copy to the GPU (non_blocking, see build_accelerator) does not wait for the device
        pin_memory=resolve_device_type(args.device) == "cuda",
        # the loader's own generator: creating an iterator must not draw from the global RNG (exact resume)
        generator=torch.Generator().manual_seed(args.seed),
    )


def build_optimizer(args: argparse.Namespace, parameters: list, device_type: str) -> torch.optim.Optimizer:
    implementation = args.adam_implementation
    if implementation == "auto":
        # fused AdamW: one kernel for all parameters instead of a loop over ~100 small tensors (CPU and CUDA)
        implementation = "fused" if device_type in ("cpu", "cuda") else "foreach"
    return torch.optim.AdamW(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
        fused=implementation == "fused" or None,
        foreach={"foreach": True, "for-loop": False}.get(implementation),
    )


def build_ema(args: argparse.Namespace, parameters: list) -> EMAModel | None:
    if not args.use_ema:
        return None
    return EMAModel(
        parameters,
        decay=args.ema_decay,
        use_ema_warmup=True,
        inv_gamma=args.ema_inv_gamma,
        power=args.ema_power,
        foreach=True,
    )


def build_flat_parameters(args: argparse.Namespace, accelerator: Accelerator, unet) -> FlatParameters | None:
    """
    --flat_parameters where it is safe: one process or data parallel (DeepSpeed, FSDP and XLA own the layout).
    `args.flat_parameters` becomes the layout in effect: checkpoint manifests and training_args.json record it.
    """
    flat = None
    if args.flat_parameters and accelerator.distributed_type not in LAYOUT_OWNING_BACKENDS:
        unet.to(accelerator.device)  # now: `prepare` moving it later would copy the parameters out of the buffer
        flat = FlatParameters(unet) if can_flatten(list(unet.parameters())) else None
    if args.flat_parameters and flat is None:
        logger.info(f"--flat_parameters: not used ({accelerator.distributed_type})", main_process_only=True)
    args.flat_parameters = flat is not None
    return flat


def build_components(args: argparse.Namespace, accelerator: Accelerator, dataloader):
    """
    The UNet, optimizer, LR schedule, EMA and timestep sampler, prepared by `accelerator` together with `dataloader`.

    Returns:
        `tuple`: ([`TrainingComponents`], the prepared dataloader).
    """
    set_seed(args.seed)  # the same initial weights on every process
    learned_variance = args.variance_type in LEARNED_VARIANCE_TYPES
    unet = presets.build_unet(args.model_preset, args.resolution, args.channels, learned_variance)
    apply_speed_flags(args, unet, accelerator.device.type)
    flat = build_flat_parameters(args, accelerator, unet)
    trained = [flat.parameter] if flat is not None else list(unet.parameters())
    optimizer = build_optimizer(args, trained, accelerator.device.type)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        # Accelerate steps the schedule once per process on each optimizer step
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    # flat: the UNet is already on the device, and accelerate's `.to(accelerator.device)` would copy every parameter
    # out of the buffer (a multi-process CPU run's device is cpu:0, and `tensor.to("cpu:0")` copies a CPU tensor)
    place_unet = None if flat is None else False
    if isinstance(dataloader.dataset, data.StreamingImageDataset):
        # not through accelerate: it would have process 0 read and decode every batch and send each process its
        # part (dispatch_batches), or every process decode every batch and keep its own (IterableDatasetShard);
        # the stream is already split by node, each process decoding its own images
        placement = [place_unet, None, None]
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler, device_placement=placement)
    else:
        placement = [place_unet, None, None, None]
        prepared = accelerator.prepare(unet, optimizer, dataloader, lr_scheduler, device_placement=placement)
        unet, optimizer, dataloader, lr_scheduler = prepared
    if flat is not None:
        flat.check_views()
    if args.torch_compile:
        # in place (nn.Module.compile): parameter names, checkpoints and the EMA see the plain UNet
        accelerator.unwrap_model(unet).compile()
    ema = build_ema(args, trained)
    components = TrainingComponents(
        accelerator=accelerator,
        unet=unet,
        noise_scheduler=build_noise_scheduler(args),
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        timestep_sampler=create_timestep_sampler(args.timestep_sampler, args.ddpm_num_steps),
        ema=ema,
        loss_type=args.loss,
        vlb_weight=args.vlb_weight,
        max_grad_norm=args.max_grad_norm,
        parameters=trained,
        flat=flat,
    )
    set_seed(args.seed, device_specific=True)  # from here on, every process draws its own noise and timesteps
    return components, dataloader


def apply_speed_flags(args: argparse.Namespace, unet: torch.nn.Module, device_type: str) -> None:
    """--channels_last and --allow_tf32 (--torch_compile and --adam_implementation apply where they belong)."""
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)  # the convolutions' outputs follow their weights' layout
    if args.allow_tf32 and device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def resolve_schedule_length(args: argparse.Namespace, batches_per_epoch: int | None) -> int | float:
    """
    Set `args.max_train_steps` (from --num_epochs when not given); returns the number of epochs (a stream's
    `batches_per_epoch` is None: as many epochs as --max_train_steps takes, `math.inf`).
    """
    if batches_per_epoch is None:
        return math.inf
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_epochs * steps_per_epoch
    return math.ceil(args.max_train_steps / steps_per_epoch)


# ----------------------------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------------------------


def compute_losses(c: TrainingComponents, images: torch.Tensor):
    """
    The weighted loss of a batch of uint8 images [B x C x H x W].

    Returns:
        `tuple`: (the scalar loss to backpropagate, the [B] loss terms, the [B] timesteps).
    """
    x_start = data.to_model_space(images)
    timesteps, weights = c.timestep_sampler.sample(x_start.shape[0], x_start.device)
    noise = torch.randn_like(x_start)
    x_t = c.noise_scheduler.add_noise(x_start, noise, timesteps)  # q(x_t | x_0), Ho et al. eq. 4
    model_output = c.unet(x_t, timesteps).sample
    terms = training_losses(c.noise_scheduler, model_output, x_start, x_t, noise, timesteps, c.loss_type, c.vlb_weight)
    return (terms["loss"] * weights).mean(), terms, timesteps


def train_step(c: TrainingComponents, images: torch.Tensor, global_step: int):
    """
    Forward, backward and (once every `gradient_accumulation_steps` batches) an optimizer and EMA step.

    The step only queues work on the device: nothing is read back to the host (no `.item()`, `.cpu()` or branch on
    a tensor's value), so a GPU never idles waiting for the host. The non-finite check is recorded on the device
    (`c.nonfinite`, read every few steps); the loss-second-moment resampler's history is updated on the device
    with the losses of all processes (a collective, not a host transfer).

    Returns:
        `tuple`: this process's [B] timesteps and [B] loss terms, detached, on the device.
    """
    accelerator = c.accelerator
    with accelerator.accumulate(c.unet):
        loss, terms, timesteps = compute_losses(c, images)
        c.nonfinite.observe(terms["loss"], global_step + 1)
        if c.timestep_sampler.needs_losses:
            c.timestep_sampler.update_with_all_losses(*_gather_losses(accelerator, timesteps, terms["loss"]))
        accelerator.backward(loss)
        if c.flat is not None:
            c.flat.collect_gradients()
        if accelerator.sync_gradients and c.max_grad_norm > 0:
            accelerator.clip_grad_norm_(c.parameters, c.max_grad_norm)
        c.optimizer.step()
        c.lr_scheduler.step()
        c.optimizer.zero_grad(set_to_none=c.flat is None)  # flat gradients: zeroed in place, one kernel
    if accelerator.sync_gradients and c.ema is not None:
        c.ema.step(c.parameters)
    return timesteps, {name: term.detach() for name, term in terms.items()}


def _gather_losses(accelerator: Accelerator, timesteps: torch.Tensor, losses: torch.Tensor):
    """The [B_all] timesteps and losses of every process, on the device (every process updates its resampler)."""
    stacked = accelerator.gather(torch.stack([timesteps.float(), losses.detach().float()], dim=1))  # [B_all x 2]
    return stacked[:, 0].long(), stacked[:, 1]


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> str:
    """Train as `args` say; returns the output folder holding the saved pipeline."""
    accelerator = build_accelerator(args)
    # the data first: a missing column or an empty dataset fails before anything is written
    dataset, heldout_x, data_info = load_data(
        args, accelerator.is_local_main_process, accelerator.process_index, accelerator.num_processes
    )
    dataloader = build_dataloader(args, dataset, accelerator.num_processes)
    lock = prepare_output_dir(args, accelerator)
    try:
        return _train_in_output_dir(args, accelerator, dataset, heldout_x, data_info, dataloader)
    finally:
        lock.release()  # (a killed process loses it with its file descriptors)


def _train_in_output_dir(args, accelerator: Accelerator, dataset, heldout_x, data_info: dict, dataloader) -> str:
    """`train` once the data is loaded and the output folder is locked for this run."""
    is_main = accelerator.is_main_process
    # each process gets every num_processes-th batch (drop_last: the same number on every process)
    streaming = isinstance(dataset, data.StreamingImageDataset)
    num_epochs = resolve_schedule_length(args, None if streaming else len(dataloader) // accelerator.num_processes)
    c, dataloader = build_components(args, accelerator, dataloader)

    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress, c.timestep_sampler)
    if c.ema is not None:
        accelerator.register_for_checkpointing(c.ema)
    if streaming:  # last: each process's own position replaces the main process's in `progress`
        accelerator.register_for_checkpointing(ProcessPositions(progress, accelerator))
    keep = resume(args, accelerator, c.unet, progress)  # newer checkpoints: never pruned before this run rewrites them

    evaluator = None
    if is_main:
        unet_config = dict(accelerator.unwrap_model(c.unet).config)
        evaluator = outputs.EvaluationModel(unet_config, c.noise_scheduler.config, accelerator.device)
    if args.logger != "none":
        accelerator.init_trackers("train", config=_tracker_config(args))
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
        dataset.set_epoch(progress.epoch)
        # a resumed run skips the batches this epoch already used, in the same order as before
        if streaming:
            dataset.skip_batches(progress.batches_in_epoch)  # before the iterator copies the dataset to its worker
            batches = (images.to(accelerator.device, non_blocking=True) for images in dataloader)
        else:
            dataloader.set_epoch(progress.epoch)
            batches = skip_used_batches(dataloader, progress.batches_in_epoch)
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
            sampling = is_main and _due(args.save_images_steps, step)
            scoring = is_main and heldout_x is not None and _due(args.bpd_steps, step)
            if saving or sampling or scoring:
                c.nonfinite.check(accelerator if saving else None)  # sampling and scoring: the main process alone
            if saving:
                save_training_state(args, accelerator, step, keep)
            if sampling:
                save_sample_grid(args, accelerator, evaluator, c, step)
            if scoring:
                bpd = evaluate_heldout_bpd(args, accelerator, evaluator, c, heldout_x, step)
                bar.write(f"step {step}: held-out bits/dim {bpd['value']:.4f} +- {bpd['standard_error']:.4f}")
            if step >= args.max_train_steps:
                break
        else:  # the epoch ran out (not a break): the next one starts from its first batch
            progress.epoch += 1
            progress.batches_in_epoch = 0
            if is_main and args.save_images_epochs and progress.epoch % args.save_images_epochs == 0:
                c.nonfinite.check()
                save_sample_grid(args, accelerator, evaluator, c, progress.global_step)
    bar.close()

    c.nonfinite.check(accelerator)  # before the last checkpoint and the saved pipeline
    final_checkpoint = checkpoints.checkpoint_path(args.output_dir, progress.global_step)
    if args.checkpointing_steps and (not os.path.isdir(final_checkpoint) or progress.global_step in keep):
        save_training_state(args, accelerator, progress.global_step, keep)
    finish(args, accelerator, c, evaluator, heldout_x, data_info)
    accelerator.end_training()
    return args.output_dir


def skip_used_batches(dataloader, num_batches: int):
    """The dataloader without its first `num_batches` batches (Accelerate's `skip_first_batches`), for resuming."""
    if num_batches == 0:
        return dataloader
    from accelerate import skip_first_batches

    return skip_first_batches(dataloader, num_batches)


def _due(every: int | None, step: int) -> bool:
    return bool(every) and step % every == 0


def prepare_output_dir(args: argparse.Namespace, accelerator: Accelerator) -> OutputDirLock:
    """
    Create and lock the output folder (the main process holds the lock: one run per folder); refuse to mix a new run
    with an earlier run's checkpoints. Returns the lock, to release when the run ends.
    """
    existing = checkpoints.list_checkpoints(args.output_dir)
    if existing and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
        raise UsageError(
            f"{args.output_dir} already holds checkpoints of an earlier run ({os.path.basename(existing[-1][1])});"
            " pass --resume_from_checkpoint latest to continue it, or --overwrite_output_dir to start over."
        )
    lock = OutputDirLock(args.output_dir)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        lock.acquire()  # before anything in the folder is deleted: another run may be using it
    accelerator.wait_for_everyone()
    existing = checkpoints.list_checkpoints(args.output_dir)
    if existing and args.resume_from_checkpoint is None and accelerator.is_main_process:  # --overwrite_output_dir
        for _, folder in existing:
            shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    return lock


def resume(args: argparse.Namespace, accelerator: Accelerator, unet: torch.nn.Module, progress) -> set[int]:
    """
    Restore the training state of `--resume_from_checkpoint`, or say why it cannot be restored exactly (`UsageError`,
    exit code 2): a broken checkpoint, a model that does not fit it, RNG states that were not restored (a warning
    with `--allow_inexact_resume`), or a checkpoint past `--max_train_steps`.

    Returns:
        `set[int]`: the steps of the checkpoints in `--output_dir` newer than the one resumed from: pruning keeps
        them until this run has rewritten them.
    """
    spec = args.resume_from_checkpoint
    with publish.hub_token(args.hub_token):
        folder = checkpoints.resolve_resume_checkpoint(spec, args.output_dir, args.allow_inexact_resume)
    if folder is None:
        if spec == "latest":
            logger.info(f"No checkpoint in {args.output_dir}: starting a new run.", main_process_only=True)
        return set()
    logger.info(f"Resuming from {folder}", main_process_only=True)
    model = accelerator.unwrap_model(unet)
    mismatch = checkpoints.model_mismatch(folder, model, state_flags(args))
    if mismatch is not None:
        raise UsageError(f"--resume_from_checkpoint {spec}: {folder} does not fit this model: {mismatch}.")
    try:
        accelerator.load_state(folder)
    except (RuntimeError, ValueError, KeyError) as error:  # e.g. EMA or resampler state of another configuration
        changed = checkpoints.changed_flags(folder, state_flags(args))
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        saved_with = f"; it was saved with {changed}" if changed else ""
        if args.flat_parameters and "flat_parameters" not in checkpoints.read_manifest(folder).get("flags", {}):
            saved_with += "; it was saved before --flat_parameters existed: resume it with --no-flat_parameters"
        message = f"--resume_from_checkpoint {spec}: {folder} could not be restored ({reason}){saved_with}."
        raise UsageError(message) from error
    problem = checkpoints.random_state_problem(folder, accelerator.process_index, accelerator.num_processes)
    if problem is not None:
        message = f"The RNG states of {folder} were not restored: {problem}"
        if not args.allow_inexact_resume:
            raise UsageError(
                f"{message}. The resumed run would not repeat an uninterrupted one; pass --allow_inexact_resume to"
                " resume anyway."
            )
        logger.warning(
            f"{message}. RESUMING ANYWAY (--allow_inexact_resume): this run will NOT repeat an uninterrupted one"
            " bit for bit."
        )
    if progress.global_step > args.max_train_steps:
        raise UsageError(
            f"--max_train_steps {args.max_train_steps} is below the step of the checkpoint to resume from ({folder}:"
            f" step {progress.global_step}): pass --max_train_steps above {progress.global_step} to train further."
        )
    return checkpoints.newer_checkpoints(args.output_dir, progress.global_step)


def state_flags(args: argparse.Namespace) -> dict:
    """The flags that shape the saved training state (recorded in each checkpoint's manifest, compared on resume)."""
    names = ("model_preset", "resolution", "channels", "variance_type", "use_ema", "timestep_sampler")
    names += ("ddpm_num_steps", "flat_parameters")  # flat: one optimizer and EMA tensor instead of one per parameter
    return {name: getattr(args, name) for name in names}


def save_training_state(args: argparse.Namespace, accelerator: Accelerator, step: int, keep: set[int]) -> None:
    """Save checkpoint-`step` (pruning spares the steps in `keep`) and push it when asked."""
    keep.discard(step)  # from now on checkpoint-<step> is this run's own
    extra = {"flags": state_flags(args)}
    folder = checkpoints.save_checkpoint(
        accelerator, args.output_dir, step, args.checkpoints_total_limit, frozenset(keep), manifest_extra=extra
    )
    logger.info(f"Saved {folder}", main_process_only=True)
    if args.push_checkpoints_to_hub and accelerator.is_main_process:
        publish.push_checkpoint_of_run(args, folder)


def save_sample_grid(args, accelerator, evaluator: outputs.EvaluationModel, c: TrainingComponents, step: int):
    """A grid of EMA samples as output_dir/training_samples/step-NNNNNN.png and in the tracker."""
    evaluator.load_weights(c.ema, accelerator.unwrap_model(c.unet), c.flat)
    images = evaluator.sample(args.eval_batch_size, args.ddpm_num_inference_steps, seed=args.seed)
    grid = image_grid(images, scale=auto_scale(max(images.shape[1:3])))
    outputs.save_png(grid, os.path.join(args.output_dir, "training_samples", f"step-{step:06d}.png"))
    _log_image(accelerator, grid, step)
    return grid


def evaluate_heldout_bpd(args, accelerator, evaluator: outputs.EvaluationModel, c, heldout_x, step: int) -> dict:
    """Bits/dim of the held-out images under the EMA weights (strided over timesteps), logged to the tracker."""
    evaluator.load_weights(c.ema, accelerator.unwrap_model(c.unet), c.flat)
    bpd = evaluator.bits_per_dim(heldout_x.to(accelerator.device), args.bpd_num_timesteps)
    accelerator.log({"bits_per_dim/heldout": bpd["value"]}, step=step)
    return bpd


def _log_image(accelerator: Accelerator, grid, step: int) -> None:
    import numpy as np

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            array = np.asarray(grid.convert("RGB"))[None]  # [1 x H x W x 3]
            tracker.log_images({"samples": array}, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({"samples": [grid]}, step)


def finish(args, accelerator: Accelerator, c: TrainingComponents, evaluator, heldout_x, data_info: dict) -> None:
    """Save the EMA pipeline, training_args.json, metrics.json, samples.png and the model card; push if asked."""
    accelerator.wait_for_everyone()
    if args.save_rank_weight_hashes:
        write_rank_hashes(args, accelerator, c)
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    evaluator.load_weights(c.ema, accelerator.unwrap_model(c.unet), c.flat)
    # the EMA weights; save_pretrained replaces only the pipeline's own files (checkpoints and logs stay)
    evaluator.pipeline.save_pretrained(args.output_dir)
    outputs.write_json(run_record(args, accelerator, data_info), os.path.join(args.output_dir, "training_args.json"))
    metrics = {}
    if heldout_x is not None:
        bpd = evaluate_heldout_bpd(args, accelerator, evaluator, c, heldout_x, args.max_train_steps)
        metrics["bits_per_dim"] = {"split": "held-out", **bpd}
        logger.info(f"Held-out bits/dim: {bpd['value']:.4f} ({data_info['heldout_split']})", main_process_only=True)
    outputs.write_json(metrics, os.path.join(args.output_dir, "metrics.json"))
    images = evaluator.sample(args.eval_batch_size, args.ddpm_num_inference_steps, seed=args.seed)
    grid = image_grid(images, scale=auto_scale(max(images.shape[1:3])))
    outputs.save_png(grid, os.path.join(args.output_dir, "samples.png"))

    from ..hub import save_model_card

    save_model_card(args.output_dir)
    if args.push_to_hub:
        publish.push_pipeline_of_run(args)
    accelerator.wait_for_everyone()


def run_record(args: argparse.Namespace, accelerator: Accelerator, data_info: dict) -> dict:
    """training_args.json: every flag, plus what the run found (dataset, image counts, processes)."""
    dataset = args.dataset_name or args.train_data_dir or "scikit-learn digits (8x8, built in)"
    total_batch = args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    flags = publish.public_flags(args)  # no token, no `hf-ddpm` handler
    return {
        **flags,
        "dataset": dataset,
        "num_processes": accelerator.num_processes,
        "total_batch_size": total_batch,
        **data_info,
    }


def write_rank_hashes(args, accelerator: Accelerator, c: TrainingComponents) -> None:
    """output_dir/weights-rank<i>.sha256: hashes of this process's training weights and EMA weights."""
    lines = [f"model {outputs.weights_sha256(accelerator.unwrap_model(c.unet))}"]
    if c.ema is not None:
        lines.append(f"ema {outputs.tensors_sha256(c.ema.shadow_params)}")
    path = os.path.join(args.output_dir, f"weights-rank{accelerator.process_index}.sha256")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _tracker_config(args: argparse.Namespace) -> dict:
    """The flags as tracker hyperparameters (TensorBoard accepts only scalars and strings)."""
    return {k: v for k, v in publish.public_flags(args).items() if isinstance(v, (int, float, str, bool))}


def _log_run_summary(args, accelerator: Accelerator, data_info: dict, num_epochs: int) -> None:
    total_batch = args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    num_train = data_info["num_train_images"]
    logger.info(
        f"***** Training *****\n"
        f"  Images: {'a stream of' if num_train is None else num_train} train,"
        f" {data_info['num_heldout_images']} held out ({data_info['heldout_split'] or 'none'})\n"
        f"  Processes: {accelerator.num_processes} ({accelerator.distributed_type}, {accelerator.device})\n"
        f"  Batch: {args.train_batch_size} per process, {total_batch} per optimizer step\n"
        f"  Steps: {args.max_train_steps}" + ("" if num_epochs == math.inf else f" ({num_epochs} epochs)"),
        main_process_only=True,
    )


def configure_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    noisy_loggers = ("httpx", "urllib3", "filelock", "fsspec", "datasets", "huggingface_hub")
    for noisy in noisy_loggers + ("accelerate.checkpointing", "accelerate.accelerator"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
