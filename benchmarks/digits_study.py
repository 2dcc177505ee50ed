# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
The digits study, end to end in one command: four trainings side by side, samples at several step counts, fd-digits
with bootstrap standard errors, held-out bits/dim, and the report.

    python benchmarks/digits_study.py                                  # work dir outputs/bench, ~1.5-2 h on 2 cores
    python benchmarks/digits_study.py --work_dir /work/outputs/bench   # the same, elsewhere
    python benchmarks/digits_study.py --quick --work_dir /tmp/bench-quick  # 20 training steps, n = 64: a smoke run

Stages (each is cached: a stage or job whose output file exists is skipped, so a rerun resumes where it stopped;
`--stages score report` rescored whatever has finished so far):

 1. train    four runs at once, one CPU thread each (OMP_NUM_THREADS=1), same DDPM training split, seed 0:
             W/ours-hybrid         `python train.py` (the default run: L_hybrid, learned_range), 2,500 steps
             W/ours-simple         `python train.py --loss simple --variance_type fixed_small`, 2,500 steps
             W/diffusers-recipe    the same recipe as ours-simple through diffusers' own components (UNet2DModel,
                                   DDPMScheduler, EMAModel, AdamW, get_cosine_schedule_with_warmup), 2,500 steps
             W/diffusers-tutorial  the loop of diffusers' "Train a diffusion model" tutorial (linear betas, lr 1e-4,
                                   500 warmup steps of a 100k-step cosine, no EMA), trained until ours-hybrid finishes
 2. sample   n samples a setting (same seed, so the same x_T, for every setting), saved as uint8 .npz in W/samples;
             at most --jobs processes at once
 3. bpd      held-out bits/dim: the full bound (all 1,000 terms) and the 50-timestep stratified estimate (3 seeds)
 4. score    fd-digits with a bootstrap standard error (the generated samples' classifier features resampled with
             replacement, B = 200, seeded) against all 1,797 digits, the training split and the held-out split; the
             real-data floor at the same n; classifier confidence and class coverage
 5. report   benchmarks/results/digits_study.{md,json}, digits_study_quality.png, digits_study_samples.png

The sampling and bits/dim jobs run as subprocesses of this script (`_sample`, `_bpd`, `_train_diffusers`), each
with its own log in W/logs/.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("train", "sample", "bpd", "score", "report")
MODEL_NAMES = ("ours-hybrid", "ours-simple", "diffusers-recipe", "diffusers-tutorial")
OUR_TRAIN_FLAGS = {"ours-hybrid": [], "ours-simple": ["--loss", "simple", "--variance_type", "fixed_small"]}
REFERENCES = ("digits", "digits-train", "digits-test")
BOOTSTRAP_ROUNDS = 200
FLOOR_SEEDS = (0, 1, 2, 3, 4)
BPD_SEEDS = (0, 1, 2)
TRAIN_DONE = "study_train.json"  # written into a model folder when its training has finished


# ----------------------------------------------------------------------------------------------------------------
# The plan: which trainings, samples and bounds, by name
# ----------------------------------------------------------------------------------------------------------------


def sampling_plan(args) -> list[dict]:
    """Every sample set: model, sampler, variance and steps; ordered short chains first, so partial runs report."""
    steps = args.sample_steps
    plan = [("ours-hybrid", "hf_ddpm", "learned_range", s) for s in steps]
    plan += [("diffusers-recipe", "diffusers", "fixed_small", s) for s in steps]
    tutorial_steps = (steps[0], steps[-3 if len(steps) > 2 else -1])  # its own 1000, and 100
    plan += [("diffusers-tutorial", "diffusers", "fixed_small", s) for s in tutorial_steps]
    plan += [("ours-simple", "hf_ddpm", v, s) for v in ("fixed_small", "fixed_large") for s in steps[-2:]]
    jobs = [
        {"name": f"{m}_{v}_{s}", "model": m, "sampler": sampler, "variance_type": v, "steps": s}
        for m, sampler, v, s in plan
    ]
    return sorted({job["name"]: job for job in jobs}.values(), key=lambda job: job["steps"])


def bpd_plan(args) -> list[dict]:
    """The full bound of each variance we ship, then the 50-timestep stratified estimate over 3 seeds."""
    full = [
        ("ours-hybrid", "learned_range"),
        ("ours-simple", "fixed_small"),
        ("ours-simple", "fixed_large"),
        ("diffusers-recipe", "fixed_small"),
    ]
    jobs = [
        {"name": f"{m}_{v}_full", "model": m, "variance_type": v, "num_timesteps": None, "seed": 0} for m, v in full
    ]
    jobs += [
        {"name": f"ours-hybrid_learned_range_k{args.bpd_strata}_seed{seed}", "model": "ours-hybrid",
         "variance_type": "learned_range", "num_timesteps": args.bpd_strata, "seed": seed}
        for seed in BPD_SEEDS
    ]  # fmt: skip
    return jobs


# ----------------------------------------------------------------------------------------------------------------
# Stage 1: training
# ----------------------------------------------------------------------------------------------------------------


def child_env() -> dict:
    """One thread per process, and this checkout's sources first."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def training_command(name: str, args, folder: str, stop_file: str, tutorial_seconds: float | None) -> list[str]:
    if name in OUR_TRAIN_FLAGS:
        command = [sys.executable, os.path.join(ROOT, "train.py"), "--output_dir", folder, *OUR_TRAIN_FLAGS[name]]
        if args.quick:
            command += ["--max_train_steps", str(args.train_steps), "--checkpointing_steps", "0"]
            command += ["--save_images_steps", "0", "--bpd_steps", "0", "--logging_steps", "5"]
        return command
    command = [sys.executable, os.path.abspath(__file__), "_train_diffusers", "--kind", name.split("-")[1]]
    command += ["--output_dir", folder, "--max_train_steps", str(args.train_steps), "--stop_file", stop_file]
    if tutorial_seconds is not None:
        command += ["--seconds", str(tutorial_seconds)]
    return command


def stage_train(args) -> list[str]:
    """Train the missing models, all at once; returns the names of the runs that failed (the others are kept)."""
    pending = [name for name in MODEL_NAMES if not os.path.isfile(os.path.join(args.work_dir, name, TRAIN_DONE))]
    if not pending:
        log("train: all four models are trained (cached)")
        return []
    stop_file = os.path.join(args.work_dir, "ours-hybrid.finished")
    tutorial_seconds = None
    if "ours-hybrid" not in pending:  # the tutorial's budget is the finished run's wall time
        tutorial_seconds = read_json(os.path.join(args.work_dir, "ours-hybrid", TRAIN_DONE))["wall_seconds"]
    elif os.path.exists(stop_file):
        os.remove(stop_file)
    os.makedirs(os.path.join(args.work_dir, "logs"), exist_ok=True)
    running = {}
    for name in pending:
        folder = os.path.join(args.work_dir, name)
        shutil.rmtree(folder, ignore_errors=True)  # an unfinished run starts over: its wall time must be whole
        command = training_command(name, args, folder, stop_file, tutorial_seconds)
        log_path = os.path.join(args.work_dir, "logs", f"train-{name}.log")
        log(f"train: starting {name}: {' '.join(command)} (log {log_path})")
        log_file = open(log_path, "w")
        process = subprocess.Popen(command, env=child_env(), stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
        running[name] = (process, time.perf_counter(), log_file, log_path)
    log(f"train: {len(running)} runs share this machine's {os.cpu_count()} cores, one thread each")
    failed = []
    while running:
        time.sleep(2)
        for name, (process, started, log_file, log_path) in list(running.items()):
            if process.poll() is None:
                continue
            wall = time.perf_counter() - started
            log_file.close()
            del running[name]
            if name == "ours-hybrid":
                open(stop_file, "w").close()  # the tutorial loop stops now: the same wall time
            if process.returncode != 0:
                failed.append(name)
                log(f"train: {name} FAILED (exit {process.returncode}); see {log_path}")
                continue
            record_training(name, args, wall, log_path, concurrent=len(pending))
            log(f"train: {name} finished in {wall:.0f} s")
    return failed


def record_training(name: str, args, wall: float, log_path: str, concurrent: int) -> None:
    """W/<name>/study_train.json: wall seconds, steps, seconds a step (ours: from the log and TensorBoard)."""
    folder = os.path.join(args.work_dir, name)
    record = {"name": name, "wall_seconds": wall, "threads": 1, "concurrent_runs": concurrent}
    if name in OUR_TRAIN_FLAGS:
        run = read_json(os.path.join(folder, "training_args.json"))
        record |= {"command": f"python train.py --output_dir W/{name} {' '.join(OUR_TRAIN_FLAGS[name])}".strip()}
        record |= {"steps": run["max_train_steps"], "loop_seconds": tqdm_elapsed(log_path, "Training")}
        record["median_step_ms"] = tensorboard_median_step_ms(folder, run["train_batch_size"])
    else:
        record |= read_json(os.path.join(folder, "study_loop.json"))
    if record.get("loop_seconds"):
        record["mean_step_ms"] = 1000 * record["loop_seconds"] / record["steps"]
    write_json(record, os.path.join(folder, TRAIN_DONE))


def tqdm_elapsed(log_path: str, desc: str) -> float | None:
    """The elapsed time of the last tqdm bar `desc` in a log (tqdm prints `[MM:SS<` or `[H:MM:SS<`)."""
    with open(log_path, errors="replace") as f:
        text = f.read()
    matches = re.findall(rf"{desc}: 100%[^\[]*\[(?:(\d+):)?(\d+):(\d+)<", text)
    if not matches:
        return None
    hours, minutes, seconds = matches[-1]
    return 3600 * int(hours or 0) + 60 * int(minutes) + int(seconds)


def tensorboard_median_step_ms(folder: str, batch_size: int) -> float | None:
    """Median ms of a training step, from the images/s the loop logs (a step's own time, without the evaluations)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    rates = []
    for directory, _, files in os.walk(os.path.join(folder, "logs")):
        if any(f.startswith("events.out") for f in files):
            events = EventAccumulator(directory, size_guidance={"scalars": 0})
            events.Reload()
            if "images_per_second" in events.Tags()["scalars"]:
                rates += [event.value for event in events.Scalars("images_per_second")]
    return 1000 * batch_size / float(np.median(rates)) if rates else None


def train_images_model_space():
    """The DDPM training split (the same 1,617 digits as `python train.py`), [N x 1 x 8 x 8] in [-1, 1]."""
    import torch

    from hf_ddpm._digits import load_digits

    images, _ = load_digits("train")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_diffusers(argv) -> int:
    """Worker: the diffusers recipe or tutorial loop, saved as a `DDPMPipeline` folder."""
    parser = argparse.ArgumentParser(prog="digits_study.py _train_diffusers")
    parser.add_argument("--kind", choices=("recipe", "tutorial"), required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_train_steps", type=int, required=True, help="recipe: the steps")
    parser.add_argument("--stop_file", required=True, help="tutorial: stop when this file exists")
    parser.add_argument("--seconds", type=float, default=None, help="tutorial: stop after this many seconds")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    train = train_recipe if args.kind == "recipe" else train_tutorial
    pipeline, loop = train(args)
    pipeline.save_pretrained(args.output_dir)
    loop["process_seconds_to_save"] = time.perf_counter() - started
    write_json(loop, os.path.join(args.output_dir, "study_loop.json"))
    return 0


def train_recipe(args):
    """
    Our L_simple recipe through diffusers' components: every value from `train.py --loss simple --variance_type
    fixed_small` (hf_ddpm.training.args and the digits preset), nothing from hf_ddpm's own training code.
    """
    import torch
    from accelerate.utils import set_seed
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from hf_ddpm.training.args import parse_args
    from hf_ddpm.training.presets import unet_config

    ours = parse_args(["--loss", "simple", "--variance_type", "fixed_small", "--max_train_steps", "1"])
    steps = args.max_train_steps
    set_seed(ours.seed)  # as train.py does before building the UNet: the same initial weights as ours-simple
    unet = UNet2DModel(**unet_config(ours.model_preset, ours.resolution, ours.channels, learned_variance=False))
    scheduler = DDPMScheduler(
        num_train_timesteps=ours.ddpm_num_steps,
        beta_schedule=ours.beta_schedule,  # squaredcos_cap_v2
        variance_type=ours.variance_type,  # fixed_small
        prediction_type=ours.prediction_type,  # epsilon
        clip_sample=True,
    )
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=ours.learning_rate,
        betas=(ours.adam_beta1, ours.adam_beta2),
        weight_decay=ours.adam_weight_decay,
        eps=ours.adam_epsilon,
    )
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, ours.lr_warmup_steps, steps)
    ema = EMAModel(
        unet.parameters(),
        decay=ours.ema_decay,
        use_ema_warmup=True,
        inv_gamma=ours.ema_inv_gamma,
        power=ours.ema_power,
        model_cls=UNet2DModel,
        model_config=unet.config,
    )
    images = train_images_model_space()  # no augmentation: ours has --random_flip off and 8x8 crops of 8x8 images
    loader = torch.utils.data.DataLoader(
        images, batch_size=ours.train_batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(ours.seed),
    )  # fmt: skip
    step, durations = 0, []
    bar = tqdm(total=steps, desc="diffusers recipe")
    loop_started = time.perf_counter()
    while step < steps:
        for clean in loader:
            step_started = time.perf_counter()
            noise = torch.randn_like(clean)
            timesteps = torch.randint(0, ours.ddpm_num_steps, (clean.shape[0],))
            noisy = scheduler.add_noise(clean, noise, timesteps)
            loss = torch.nn.functional.mse_loss(unet(noisy, timesteps).sample, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), ours.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(unet.parameters())
            durations.append(time.perf_counter() - step_started)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if step >= steps:
                break
    loop_seconds = time.perf_counter() - loop_started
    bar.close()
    ema.copy_to(unet.parameters())  # the EMA weights are what gets saved and sampled, as in ours
    unet.eval()
    recipe = {
        "unet": "UNet2DModel, digits preset, out_channels 1",
        "scheduler": "DDPMScheduler(squaredcos_cap_v2, fixed_small, 1000, epsilon, clip_sample)",
        "ema": f"diffusers EMAModel(decay {ours.ema_decay}, warmup inv_gamma {ours.ema_inv_gamma},"
        f" power {ours.ema_power})",
        "optimizer": f"AdamW(lr {ours.learning_rate}, betas ({ours.adam_beta1}, {ours.adam_beta2}), weight decay"
        f" {ours.adam_weight_decay}, eps {ours.adam_epsilon}), grad clip {ours.max_grad_norm}",
        "lr_schedule": f"get_cosine_schedule_with_warmup({ours.lr_warmup_steps}, {steps})",
        "batch_size": ours.train_batch_size,
        "loss": "L_simple (MSE of epsilon), t uniform",
        "seed": ours.seed,
    }
    loop = {"steps": step, "loop_seconds": loop_seconds, "median_step_ms": 1000 * float(np.median(durations))}
    return DDPMPipeline(unet=unet, scheduler=scheduler), loop | {"recipe": recipe, "command": "diffusers recipe"}


def train_tutorial(args):
    """The loop of diffusers' "Train a diffusion model" tutorial, until `--stop_file` appears (or `--seconds`)."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from tqdm.auto import tqdm

    from hf_ddpm.training.presets import unet_config

    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config("digits", 8, 1, learned_variance=False))
    scheduler = DDPMScheduler(num_train_timesteps=1000)  # linear betas, fixed_small
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=500, num_training_steps=100_000)
    images = train_images_model_space()
    generator = torch.Generator().manual_seed(0)
    batch_size, step, durations = 64, 0, []
    bar = tqdm(desc="diffusers tutorial loop (steps)")
    loop_started = time.perf_counter()

    def should_stop() -> bool:
        if args.seconds is not None:
            return time.perf_counter() - loop_started >= args.seconds
        return os.path.exists(args.stop_file)

    while not should_stop():
        step_started = time.perf_counter()
        clean = images[torch.randint(0, len(images), (batch_size,), generator=generator)]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (batch_size,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps).sample, noise)
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        durations.append(time.perf_counter() - step_started)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    loop_seconds = time.perf_counter() - loop_started
    bar.close()
    unet.eval()
    recipe = {
        "unet": "UNet2DModel, digits preset, out_channels 1",
        "scheduler": "DDPMScheduler(1000) (linear betas, fixed_small)",
        "ema": "none",
        "optimizer": "AdamW(lr 1e-4), no grad clipping",
        "lr_schedule": "get_cosine_schedule_with_warmup(500, 100000)",
        "batch_size": batch_size,
        "loss": "L_simple, batches drawn with replacement",
        "seed": 0,
        "stopped_by": "--seconds" if args.seconds is not None else "ours-hybrid finishing",
    }
    loop = {"steps": step, "loop_seconds": loop_seconds, "median_step_ms": 1000 * float(np.median(durations or [0]))}
    return DDPMPipeline(unet=unet, scheduler=scheduler), loop | {"recipe": recipe, "command": "diffusers tutorial"}


# ----------------------------------------------------------------------------------------------------------------
# Stages 2 and 3: sampling and bits/dim jobs, at most --jobs at once
# ----------------------------------------------------------------------------------------------------------------


def job_queue(args) -> list[dict]:
    """
    The sampling and bits/dim jobs of the requested stages, in the order they run: the short sampling chains first
    (so that a partial run already compares every model), the cheap stratified bounds, the 1000-step chains of the
    two like-for-like models, the full bounds, and the tutorial loop's 1000-step chain last (the longest job, and
    the least needed for the like-for-like comparison).
    """
    samples = [job | {"kind": "sample"} for job in sampling_plan(args)] if "sample" in args.stages else []
    bounds = [job | {"kind": "bpd"} for job in bpd_plan(args)] if "bpd" in args.stages else []
    longest = max(args.sample_steps)
    long_chains = [job for job in samples if job["steps"] == longest]
    return (
        [job for job in samples if job["steps"] < longest]
        + [job for job in bounds if job["num_timesteps"] is not None]
        + [job for job in long_chains if job["model"] != "diffusers-tutorial"]
        + [job for job in bounds if job["num_timesteps"] is None]
        + [job for job in long_chains if job["model"] == "diffusers-tutorial"]
    )


def output_of(args, job: dict) -> str:
    return samples_path(args, job) if job["kind"] == "sample" else bpd_path(args, job)


def run_jobs(args, jobs: list[dict]) -> list[str]:
    """
    Run the jobs whose output is missing as subprocesses of this script, at most `args.jobs` at a time; returns the
    names of the jobs that failed or could not run (their model is not trained).
    """
    kind = "jobs"
    todo = [job for job in jobs if not os.path.isfile(output_of(args, job))]
    trained = {name for name in MODEL_NAMES if os.path.isfile(os.path.join(args.work_dir, name, TRAIN_DONE))}
    untrained = [job["name"] for job in todo if job["model"] not in trained]
    if untrained:
        log(f"{kind}: skipped, their model is not trained: {', '.join(untrained)}")
    todo = [job for job in todo if job["name"] not in untrained]
    log(f"{kind}: {len(jobs) - len(todo)} of {len(jobs)} cached, {len(todo)} to run, {args.jobs} at a time")
    # jobs still running from an earlier, interrupted invocation: waited for (they hold a slot), not started again
    elsewhere = [job for job in todo if worker_alive(args, job)]
    if elsewhere:
        log(f"{kind}: still running from before, waiting for them: {', '.join(job['name'] for job in elsewhere)}")
    todo = [job for job in todo if job not in elsewhere]
    os.makedirs(os.path.join(args.work_dir, "logs"), exist_ok=True)
    running, failed = [], []
    while todo or running or elsewhere:
        for job in [job for job in elsewhere if not worker_alive(args, job)]:
            elsewhere.remove(job)
            if os.path.isfile(output_of(args, job)):
                log(f"{kind}: {job['name']} (started before) done")
            else:
                failed.append(job["name"])
                log(f"{kind}: {job['name']} (started before) ended without its output")
        while todo and len(running) + len(elsewhere) < args.jobs:
            job = todo.pop(0)
            command = [sys.executable, os.path.abspath(__file__), f"_{job['kind']}", "--job", json.dumps(job)]
            command += ["--work_dir", args.work_dir, "--num_samples", str(args.num_samples), "--seed", str(args.seed)]
            log_path = os.path.join(args.work_dir, "logs", f"{job['kind']}-{job['name']}.log")
            log_file = open(log_path, "w")
            process = subprocess.Popen(command, env=child_env(), stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
            running.append((job, process, time.perf_counter(), log_file, log_path))
            log(f"{kind}: started {job['name']} (log {log_path})")
        time.sleep(2)
        for entry in list(running):
            job, process, started, log_file, log_path = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            log_file.close()
            if process.returncode == 0:
                log(f"{kind}: {job['name']} done in {time.perf_counter() - started:.0f} s")
            else:
                failed.append(job["name"])
                log(f"{kind}: {job['name']} FAILED (exit {process.returncode}); see {log_path}")
    return failed + untrained


def pid_path(args, job: dict) -> str:
    return os.path.join(args.work_dir, "running", f"{job['name']}.pid")


def worker_alive(args, job: dict) -> bool:
    """Whether a worker process for `job` is running now (its pid file names a live process)."""
    try:
        with open(pid_path(args, job)) as f:
            os.kill(int(f.read().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def samples_path(args, job: dict) -> str:
    return os.path.join(args.work_dir, "samples", f"{job['name']}.npz")


def bpd_path(args, job: dict) -> str:
    return os.path.join(args.work_dir, "bpd", f"{job['name']}.json")


def load_pipeline(work_dir: str, model: str, sampler: str, variance_type: str):
    """Our models through `DDPMPosteriorPipeline`, the diffusers ones through `DDPMPipeline` (as they were saved)."""
    folder = os.path.join(work_dir, model)
    if sampler == "diffusers":
        from diffusers import DDPMPipeline

        return DDPMPipeline.from_pretrained(folder)
    from hf_ddpm import DDPMPosteriorPipeline
    from hf_ddpm.sampling import with_variance_type

    return with_variance_type(DDPMPosteriorPipeline.from_pretrained(folder), variance_type)


def sample_job(argv) -> int:
    """Worker: one sample set, saved as uint8 [N x 8 x 8 x 1] in W/samples/<name>.npz (written whole or not at all)."""
    job, args = parse_job(argv)
    import torch

    from hf_ddpm.sampling import generate_samples

    torch.set_num_threads(1)
    pipeline = load_pipeline(args.work_dir, job["model"], job["sampler"], job["variance_type"])
    started = time.perf_counter()
    samples = generate_samples(pipeline, args.num_samples, job["steps"], batch_size=500, seed=args.seed).images
    seconds = time.perf_counter() - started
    images = (samples.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    path = samples_path(args, job)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    meta = job | {"seed": args.seed, "num_samples": args.num_samples, "sampling_seconds": seconds, "threads": 1}
    meta["timestep_spacing"] = pipeline.scheduler.config.get("timestep_spacing")
    temporary = path + ".tmp.npz"
    np.savez_compressed(temporary, images=images, meta=json.dumps(meta))
    os.replace(temporary, path)
    print(f"wrote {path}: {images.shape} in {seconds:.1f} s")
    return 0


def bpd_job(argv) -> int:
    """Worker: held-out bits/dim of one model and variance, W/bpd/<name>.json."""
    job, args = parse_job(argv)
    import torch

    from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
    from hf_ddpm._digits import load_digits
    from hf_ddpm.evaluation.metrics import summarize_bits_per_dim
    from hf_ddpm.sampling import with_variance_type

    torch.set_num_threads(1)
    folder = os.path.join(args.work_dir, job["model"])
    if job["model"].startswith("diffusers"):  # a DDPMPipeline folder: its UNet with our scheduler of its config
        from diffusers import DDPMScheduler, UNet2DModel

        config = DDPMScheduler.from_pretrained(folder, subfolder="scheduler").config
        scheduler = DDPMPosteriorScheduler(
            num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
            variance_type=config.variance_type, prediction_type=config.prediction_type, clip_sample=True,
        )  # fmt: skip
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
        pipeline = DDPMPosteriorPipeline(unet=unet, scheduler=scheduler)
    else:
        pipeline = DDPMPosteriorPipeline.from_pretrained(folder)
    pipeline = with_variance_type(pipeline, job["variance_type"])
    heldout, _ = load_digits("test")
    if args.num_samples < 100:  # --quick: a handful of held-out digits
        heldout = heldout[:16]
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(job["seed"])
    output = pipeline.bits_per_dim(heldout, generator=generator, num_timesteps=job["num_timesteps"])
    summary = summarize_bits_per_dim(output)
    record = job | {"num_timesteps_requested": job["num_timesteps"], "bits_per_dim": summary.pop("value")} | summary
    record |= {"seconds": time.perf_counter() - started, "split": "digits-test (held out)"}
    record["per_image"] = output.bpd.tolist()  # the same images for every model: paired differences
    write_json(record, bpd_path(args, job))
    print(json.dumps(record, indent=2))
    return 0


def parse_job(argv):
    parser = argparse.ArgumentParser(prog="digits_study.py _job")
    parser.add_argument("--job", required=True)
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--num_samples", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    job = json.loads(args.job)
    # a pid file while the worker runs: an orchestrator restarted meanwhile waits for it instead of starting it again
    path = pid_path(args, job)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    atexit.register(lambda: os.path.exists(path) and os.remove(path))
    return job, args


# ----------------------------------------------------------------------------------------------------------------
# Stage 4: scoring (cheap, always rerun)
# ----------------------------------------------------------------------------------------------------------------


class FrechetScorer:
    """
    fd-digits against each reference, with a bootstrap standard error over the generated samples.

    Every sample set of the same size is resampled with the same indices (one seed), and sample i of every setting
    starts from the same x_T: the difference of two settings' bootstrap values gives the paired standard error of
    their difference (`paired_difference`), much smaller than either SE when the settings move together.
    """

    def __init__(self, seed: int):
        from hf_ddpm._digits import load_digits
        from hf_ddpm.evaluation.digits_classifier import DigitsClassifier, classify
        from hf_ddpm.evaluation.frechet import gaussian_statistics
        from hf_ddpm.evaluation.metrics import DIGITS_REFERENCES

        self.classifier = DigitsClassifier.from_asset()
        self.seed = seed
        self.bootstraps: dict[str, dict[str, np.ndarray]] = {}  # set name -> reference -> [B] fd-digits
        self.values: dict[str, dict[str, float]] = {}
        self.references = {}
        for name in REFERENCES:
            features, _ = classify(self.classifier, load_digits(DIGITS_REFERENCES[name])[0])
            self.references[name] = (len(features), gaussian_statistics(features))

    def score(self, images: np.ndarray, name: str | None = None) -> dict:
        """fd-digits of uint8 images against each reference; `name` keeps the bootstrap values (paired differences)."""
        from hf_ddpm.evaluation.digits_classifier import classify, digits_sample_statistics
        from hf_ddpm.evaluation.frechet import frechet_distance, gaussian_statistics

        features, probabilities = classify(self.classifier, images)
        statistics = digits_sample_statistics(probabilities)
        rng = np.random.default_rng(self.seed)
        resamples = [rng.integers(0, len(features), len(features)) for _ in range(BOOTSTRAP_ROUNDS)]
        resampled_statistics = [gaussian_statistics(features[index]) for index in resamples]
        result = {"num_samples": len(features), **statistics}
        for reference_name, (count, reference) in self.references.items():
            value = frechet_distance(*gaussian_statistics(features), *reference)
            boots = np.array([frechet_distance(*s, *reference) for s in resampled_statistics])
            result[reference_name] = {
                "fd_digits": value,
                "bootstrap_se": float(boots.std(ddof=1)),
                "bootstrap_mean": float(boots.mean()),
                "num_reference": count,
            }
            if name is not None:
                self.bootstraps.setdefault(name, {})[reference_name] = boots
                self.values.setdefault(name, {})[reference_name] = value
        return result

    def paired_difference(self, first: str, second: str, reference: str) -> dict:
        """fd-digits of `first` minus `second`, with the standard error of that difference (paired bootstrap)."""
        difference = self.values[first][reference] - self.values[second][reference]
        boots = self.bootstraps[first][reference] - self.bootstraps[second][reference]
        return {"difference": difference, "se": float(boots.std(ddof=1))}


def real_data_floor(args, scorer: FrechetScorer) -> dict:
    """n real training digits scored like a sample set, for several seeds: what a perfect sampler scores at this n."""
    from hf_ddpm._digits import load_digits

    train, _ = load_digits("train")
    count = min(args.num_samples, len(train))
    rows = []
    for seed in FLOOR_SEEDS:
        chosen = np.random.default_rng(seed).choice(len(train), count, replace=False)
        rows.append({"seed": seed} | scorer.score(train[chosen]))
    summary = {"num_images": count, "num_train_images": len(train), "seeds": list(FLOOR_SEEDS), "per_seed": rows}
    for name in REFERENCES:
        values = [row[name]["fd_digits"] for row in rows]
        summary[name] = {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}
    summary["note"] = (
        f"{count} of the {len(train)} training digits, drawn without replacement for each seed (the draws overlap"
        " between seeds); the training digits are part of the 'digits' and 'digits-train' references, which makes"
        " those floors optimistic; 'digits-test' (the 180 held-out digits) is disjoint from them."
    )
    return summary


def stage_score(args) -> dict:
    scorer = FrechetScorer(args.seed)
    scores = {}
    for job in sampling_plan(args):
        path = samples_path(args, job)
        if not os.path.isfile(path):
            log(f"score: {job['name']} has no samples yet: left out")
            continue
        with np.load(path) as data:
            images, meta = data["images"], json.loads(str(data["meta"]))
        scores[job["name"]] = meta | scorer.score(images, name=job["name"])
    bpd = {}
    for job in bpd_plan(args):
        if os.path.isfile(bpd_path(args, job)):
            bpd[job["name"]] = read_json(bpd_path(args, job))
    training = {}
    for name in MODEL_NAMES:
        path = os.path.join(args.work_dir, name, TRAIN_DONE)
        if os.path.isfile(path):
            training[name] = read_json(path)
    study = {
        "command": "python benchmarks/digits_study.py " + " ".join(args.argv),
        "work_dir": args.work_dir,
        "quick": args.quick,
        "num_samples": args.num_samples,
        "seed": args.seed,
        "bootstrap": {"rounds": BOOTSTRAP_ROUNDS, "seed": args.seed, "resampled": "the generated samples' features"},
        "machine": machine_description(),
        "training": training,
        "samples": scores,
        "paired_differences": paired_differences(scorer),
        "real_data_floor": real_data_floor(args, scorer),
        "bits_per_dim": bpd,
    }
    write_json(study, os.path.join(args.results_dir, f"{args.results_name}.json"))
    return study


def paired_differences(scorer: FrechetScorer) -> list[dict]:
    """Every pair of scored sample sets, each reference: fd-digits of the first minus the second, and its SE."""
    names = sorted(scorer.values)
    return [
        {"first": first, "second": second, "reference": reference} | scorer.paired_difference(first, second, reference)
        for i, first in enumerate(names)
        for second in names[i + 1 :]
        for reference in REFERENCES
    ]


def comparison_pairs(args) -> list[tuple[str, str, str]]:
    """The differences the report tabulates: (what it measures, first set, second set)."""
    steps = args.sample_steps  # descending: 1000, 100, 50, 25
    pairs = []
    for s in steps:
        pairs.append(("same L_simple recipe: ours vs through diffusers", f"ours-simple_fixed_small_{s}",
                      f"diffusers-recipe_fixed_small_{s}"))  # fmt: skip
    for s in steps:
        pairs.append(("default run vs the L_simple recipe through diffusers", f"ours-hybrid_learned_range_{s}",
                      f"diffusers-recipe_fixed_small_{s}"))  # fmt: skip
    for model, variance in (("ours-hybrid", "learned_range"), ("diffusers-recipe", "fixed_small")):
        for s in steps[1:]:
            pairs.append((f"respacing, {model}: {s} steps vs {steps[0]}", f"{model}_{variance}_{s}",
                          f"{model}_{variance}_{steps[0]}"))  # fmt: skip
    for s in steps:
        pairs.append(("L_simple: fixed_large vs fixed_small", f"ours-simple_fixed_large_{s}",
                      f"ours-simple_fixed_small_{s}"))  # fmt: skip
    for variance in ("fixed_small", "fixed_large"):
        for s in steps:
            pairs.append((f"default run (learned_range) vs L_simple {variance}", f"ours-hybrid_learned_range_{s}",
                          f"ours-simple_{variance}_{s}"))  # fmt: skip
    for s in steps:
        pairs.append(("default run vs the diffusers tutorial loop", f"ours-hybrid_learned_range_{s}",
                      f"diffusers-tutorial_fixed_small_{s}"))  # fmt: skip
    return pairs


def machine_description() -> dict:
    import platform

    import diffusers
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "threads_per_process": 1,
        "shared": "the machine's cores were shared with other jobs (other developers' tests and runs)",
    }


# ----------------------------------------------------------------------------------------------------------------
# Stage 5: the report
# ----------------------------------------------------------------------------------------------------------------

LABELS = {
    ("ours-hybrid", "learned_range"): "ours, default run (L_hybrid), learned_range",
    ("ours-simple", "fixed_small"): "ours, L_simple, fixed_small",
    ("ours-simple", "fixed_large"): "ours, L_simple, fixed_large",
    ("diffusers-recipe", "fixed_small"): "same recipe via diffusers (DDPMPipeline), fixed_small",
    ("diffusers-tutorial", "fixed_small"): "diffusers tutorial loop (DDPMPipeline), fixed_small",
}


def fd_cell(entry: dict | None) -> str:
    return "—" if entry is None else f"{entry['fd_digits']:.2f} ± {entry['bootstrap_se']:.2f}"


def stage_report(args, study: dict) -> None:
    lines = [f"# The digits study ({'QUICK smoke run' if args.quick else 'full run'})", ""]
    lines += [
        f"Scored by `{study['command']}` from the models, samples and bounds that `python benchmarks/digits_study.py"
        f" --work_dir W` trained and drew (cached in W = `{args.work_dir}`). Raw numbers: `{args.results_name}.json`.",
        "",
    ]
    lines += training_section(study)
    lines += quality_section(args, study)
    lines += differences_section(args, study)
    lines += bpd_section(study)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.results_dir, f"{args.results_name}.md"), "w") as f:
        f.write(text)
    print(text)
    plot_quality(args, study)
    sample_grids(args, study)


def training_section(study: dict) -> list[str]:
    training = study["training"]
    lines = ["## Training", ""]
    lines += [
        "All four runs were started at the same moment and ran at the same time, one CPU thread each, on one machine"
        f" with {study['machine']['cpu_count']} cores that they shared with each other (and with other jobs): the"
        " wall times include that contention. ours-hybrid, ours-simple and the diffusers recipe run a fixed number"
        " of steps; the tutorial loop ran until ours-hybrid's process finished (the same wall time).",
        "",
        "| run | steps | wall time (s) | training loop (s) | mean ms/step | median ms/step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in MODEL_NAMES:
        if name not in training:
            lines.append(f"| {name} | not finished | | | | |")
            continue
        r = training[name]
        lines.append(
            f"| {name} | {r['steps']} | {r['wall_seconds']:.0f} | {fmt(r.get('loop_seconds'), '.0f')} |"
            f" {fmt(r.get('mean_step_ms'), '.0f')} | {fmt(r.get('median_step_ms'), '.0f')} |"
        )
    lines += [
        "",
        "Wall time: the process, start to exit (ours: loading, the loop, the periodic sample grids and bits/dim"
        " estimates, saving). Training loop: ours from its progress bar (it includes the periodic sample grids every"
        " 500 steps and 50-timestep bits/dim every 1,000), the diffusers runs from their own clock (no evaluations)."
        " Median ms/step: one step alone (ours: from the images/s it logs every 10 steps).",
    ]
    if "ours-simple" in training and "diffusers-recipe" in training:
        ours, theirs = training["ours-simple"].get("median_step_ms"), training["diffusers-recipe"]["median_step_ms"]
        if ours and theirs:
            lines.append(
                f"Median step, the same L_simple recipe: ours {ours:.0f} ms, through diffusers' components"
                f" {theirs:.0f} ms (ratio ours/diffusers {ours / theirs:.2f})."
            )
    return lines + [""]


def quality_section(args, study: dict) -> list[str]:
    floor = study["real_data_floor"]
    samples = study["samples"]
    steps = sorted({job["steps"] for job in sampling_plan(args)}, reverse=True)
    lines = ["## Sample quality", ""]
    lines += [
        f"fd-digits (lower is better) ± its bootstrap standard error ({BOOTSTRAP_ROUNDS} resamples of the generated"
        f" samples' classifier features, seed {args.seed}; the reference is held fixed, so the SE does not cover the"
        f" reference's own finite size). n = {args.num_samples} samples a setting, seed {args.seed}: every setting"
        " starts from the same x_T. '—': not in the plan (or not finished).",
        "",
    ]
    for reference, title in (("digits", "all 1,797 digits (the reference used until now)"),
                             ("digits-test", "the 180 held-out digits (never trained on)")):  # fmt: skip
        f = floor[reference]
        lines += [
            f"### Against {title}",
            "",
            f"Real-data floor: {floor['num_images']} real training digits score {f['mean']:.2f} (seeds"
            f" {FLOOR_SEEDS[0]}-{FLOOR_SEEDS[-1]}: {f['min']:.2f} to {f['max']:.2f}).",
            "",
            "| setting | " + " | ".join(f"{s} steps" for s in steps) + " |",
            "|---|" + "---:|" * len(steps),
        ]
        for (model, variance), label in LABELS.items():
            cells = []
            for s in steps:
                entry = samples.get(f"{model}_{variance}_{s}")
                cells.append(fd_cell(entry[reference] if entry else None))
            if any(cell != "—" for cell in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "### Classifier confidence, class coverage, sampling time",
        "",
        "| setting | steps | mean confidence | classes covered | class entropy (bits) | sampling time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (model, variance), label in LABELS.items():
        for s in steps:
            entry = samples.get(f"{model}_{variance}_{s}")
            if entry:
                lines.append(
                    f"| {label} | {s} | {entry['mean_confidence']:.3f} | {entry['class_coverage']}/10 |"
                    f" {entry['class_entropy_bits']:.3f} | {entry['sampling_seconds']:.0f} |"
                )
    lines += [
        "",
        "Sampling: one thread a process, two processes at a time on the shared machine; DDPMPipeline uses its"
        " scheduler's default timestep spacing ('leading'), ours 'linspace' (Improved DDPM's respacing).",
        "",
    ]
    return lines


def differences_section(args, study: dict) -> list[str]:
    """The paired differences: resolved when the difference is more than 2 paired SEs from 0."""
    table = {(d["first"], d["second"], d["reference"]): d for d in study["paired_differences"]}
    lines = [
        "## Paired differences",
        "",
        "fd-digits of the first setting minus the second, ± the paired bootstrap SE of the difference (both sets"
        " resampled with the same indices; sample i of every setting starts from the same x_T, so the settings'"
        " noise partly cancels). 'resolved': |difference| > 2 SE.",
        "",
        "| comparison | first | second | vs all digits | vs held-out digits |",
        "|---|---|---|---:|---:|",
    ]
    for title, first, second in comparison_pairs(args):
        key = tuple(sorted((first, second)))
        cells = []
        for reference in ("digits", "digits-test"):
            entry = table.get((*key, reference))
            if entry is None:
                break
            sign = 1 if key[0] == first else -1
            value, se = sign * entry["difference"], entry["se"]
            cells.append(f"{value:+.2f} ± {se:.2f}{' (resolved)' if abs(value) > 2 * se else ''}")
        if len(cells) == 2:
            lines.append(f"| {title} | {first} | {second} | {cells[0]} | {cells[1]} |")
    return lines + [""]


def bpd_section(study: dict) -> list[str]:
    bpd = study["bits_per_dim"]
    lines = ["## Held-out bits/dim", "", "| model | variance | timesteps | seed | bits/dim ± SE | seconds |"]
    lines.append("|---|---|---:|---:|---:|---:|")
    for r in bpd.values():
        timesteps = "all (full bound)" if r["num_timesteps_requested"] is None else f"{r['num_timesteps']} stratified"
        lines.append(
            f"| {r['model']} | {r['variance_type']} | {timesteps} | {r['seed']} |"
            f" {r['bits_per_dim']:.4f} ± {r['standard_error']:.4f} | {r['seconds']:.0f} |"
        )
    stratified = [r["bits_per_dim"] for r in bpd.values() if r["num_timesteps_requested"] is not None]
    if stratified:
        span = f"{min(stratified):.3f} to {max(stratified):.3f}"
        lines += ["", f"Stratified estimates over {len(stratified)} seeds: {span}."]
    return lines + [""]


def plot_quality(args, study: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    samples, floor = study["samples"], study["real_data_floor"]
    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    panels = (("digits", "all 1,797 digits"), ("digits-test", "180 held-out digits"))
    for axis, (reference, title) in zip(axes, panels, strict=True):
        for (model, variance), label in LABELS.items():
            points = sorted(
                (entry["steps"], entry[reference]["fd_digits"], entry[reference]["bootstrap_se"])
                for entry in samples.values()
                if entry["model"] == model and entry["variance_type"] == variance
            )
            if points:
                x, y, se = zip(*points, strict=True)
                axis.errorbar(x, y, yerr=se, marker="o", capsize=3, label=label)
        f = floor[reference]
        axis.axhspan(f["min"], f["max"], color="gray", alpha=0.25, label=f"real digits, n={floor['num_images']}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(args.sample_steps)
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("sampling steps")
        axis.set_ylabel("fd-digits ± bootstrap SE (lower is better)")
        axis.set_title(f"against {title}")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"fd-digits vs sampling steps, n = {args.num_samples} a setting, seed {args.seed}")
    figure.tight_layout()
    figure.savefig(os.path.join(args.results_dir, f"{args.results_name}_quality.png"), dpi=110)
    plt.close(figure)


def sample_grids(args, study: dict) -> None:
    """The first 64 samples of a few settings side by side, each under its label."""
    import PIL.Image
    import PIL.ImageDraw

    from hf_ddpm.images import auto_scale, image_grid

    wanted = [("ours-hybrid", "learned_range"), ("diffusers-recipe", "fixed_small"),
              ("diffusers-tutorial", "fixed_small")]  # fmt: skip
    panels = []
    for model, variance in wanted:
        for s in sorted({job["steps"] for job in sampling_plan(args)}, reverse=True)[:2]:
            path = os.path.join(args.work_dir, "samples", f"{model}_{variance}_{s}.npz")
            if os.path.isfile(path):
                with np.load(path) as data:
                    images = data["images"][:64].astype(np.float32) / 255.0
                grid = image_grid(images, columns=8, scale=auto_scale(8, 32))
                panels.append((f"{model} {s} steps", grid))
    if not panels:
        return
    label_height, gap = 16, 8
    width = sum(grid.width for _, grid in panels) + gap * (len(panels) - 1)
    height = label_height + max(grid.height for _, grid in panels)
    canvas = PIL.Image.new("L", (width, height), 255)
    draw = PIL.ImageDraw.Draw(canvas)
    left = 0
    for label, grid in panels:
        draw.text((left + 2, 2), label, fill=0)
        canvas.paste(grid, (left, label_height))
        left += grid.width + gap
    canvas.save(os.path.join(args.results_dir, f"{args.results_name}_samples.png"))


# ----------------------------------------------------------------------------------------------------------------
# Helpers and the entry point
# ----------------------------------------------------------------------------------------------------------------


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())} UTC] {message}", flush=True)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def write_json(value, path: str) -> None:
    """Written to a temporary file and renamed: a reader never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2, default=str)
        f.write("\n")
    os.replace(path + ".tmp", path)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "outputs", "bench"), help="models, samples, logs")
    parser.add_argument("--results_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--results_name", default=None, help="file stem (default digits_study; quick: _quick)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run, in order")
    parser.add_argument("--num_samples", type=int, default=None, help="samples a setting (default 1000; quick 64)")
    parser.add_argument("--train_steps", type=int, default=None, help="steps of the fixed-step runs (default 2500)")
    parser.add_argument("--sample_steps", type=int, nargs="+", default=None, help="default 1000 100 50 25")
    parser.add_argument("--bpd_strata", type=int, default=50, help="timesteps of the stratified bits/dim estimate")
    parser.add_argument("--jobs", type=int, default=2, help="sampling / bits/dim processes at once (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples, the bootstrap and the floor")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 training steps, n = 64, few steps")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.num_samples is None:
        args.num_samples = 64 if args.quick else 1000
    if args.train_steps is None:
        args.train_steps = 20 if args.quick else 2500
    if args.sample_steps is None:
        args.sample_steps = [20, 10, 5, 3] if args.quick else [1000, 100, 50, 25]
    args.sample_steps = sorted(set(args.sample_steps), reverse=True)
    if len(args.sample_steps) < 2 or min(args.sample_steps) < 1:
        parser.error("--sample_steps needs at least two distinct values >= 1")
    if args.num_samples < 2 or args.jobs < 1 or args.train_steps < 1:
        parser.error("--num_samples must be >= 2, --jobs and --train_steps >= 1")
    if args.results_name is None:
        args.results_name = "digits_study_quick" if args.quick else "digits_study"
    args.work_dir = os.path.abspath(args.work_dir)
    return args


WORKERS = {"_train_diffusers": train_diffusers, "_sample": sample_job, "_bpd": bpd_job}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in WORKERS:
        return WORKERS[argv[0]](argv[1:])
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(args.results_dir, exist_ok=True)
    log(f"digits study: work dir {args.work_dir}, stages {' '.join(args.stages)}")
    failed = []
    if "train" in args.stages:
        failed += stage_train(args)
    if "sample" in args.stages or "bpd" in args.stages:
        failed += run_jobs(args, job_queue(args))
    study = None
    if "score" in args.stages or "report" in args.stages:
        study = stage_score(args)
    if "report" in args.stages:
        stage_report(args, study)
    if failed:
        log(f"digits study: finished WITHOUT {', '.join(failed)} (see W/logs); rerun the same command to retry them")
        return 1
    log("digits study: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
