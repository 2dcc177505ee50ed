"""Tests of training (issue 3): objectives, exact resume, data-parallel ranks, crash-safe checkpoints, bad flags, data.

Real runs of the real entry on a tiny UNet (`--model_preset tiny`, T=20): in-process through
`hf_ddpm.training.main`, and as subprocesses (`python train.py`, `accelerate launch --multi_gpu`) where a kill or
several processes are the point.
"""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler
from hf_ddpm.cli import UsageError
from hf_ddpm.training import checkpoints, data, finalize_args, main, parse_args
from hf_ddpm.training.losses import training_losses
from hf_ddpm.training.metrics import LossMeter
from hf_ddpm.training.outputs import image_grid
from hf_ddpm.training.resample import LossSecondMomentResampler, UniformSampler

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = str(REPO / "train.py")
TINY = [
    "--model_preset", "tiny",
    "--ddpm_num_steps", "20",
    "--ddpm_num_inference_steps", "4",
    "--eval_batch_size", "4",
    "--bpd_num_timesteps", "4",
    "--bpd_num_images", "16",
    "--train_batch_size", "16",
    "--max_train_steps", "4",
    "--lr_warmup_steps", "1",
    "--logger", "none",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def fresh_accelerate_state() -> Iterator[None]:
    """Each in-process run builds its own Accelerator; accelerate keeps its state in process-wide singletons."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run_main(output_dir: Path, *flags: str) -> int:
    """`hf_ddpm.training.main` in this process; the exit code (argparse errors exit through SystemExit)."""
    try:
        return main([*TINY, "--output_dir", str(output_dir), *flags])
    except SystemExit as exit_:
        return exit_.code


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_DATASETS_OFFLINE": "1"}


def train_command(output_dir: Path, *flags: str) -> list[str]:
    return [sys.executable, TRAIN_PY, *TINY, "--output_dir", str(output_dir), *flags]


def tensors_equal(path_a: Path, path_b: Path) -> bool:
    a, b = load_file(str(path_a)), load_file(str(path_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------------------------
# End to end: every objective trains, saves a pipeline that loads and samples, and writes its metrics
# ----------------------------------------------------------------------------------------------------------------

OBJECTIVES = {
    "simple-epsilon": ["--loss", "simple", "--variance_type", "fixed_small", "--prediction_type", "epsilon"],
    "simple-sample": ["--loss", "simple", "--variance_type", "fixed_large", "--prediction_type", "sample"],
    "simple-v": ["--loss", "simple", "--variance_type", "fixed_small", "--prediction_type", "v_prediction"],
    "hybrid": ["--loss", "hybrid", "--variance_type", "learned_range", "--beta_schedule", "cosine"],
    "vlb": ["--loss", "vlb", "--variance_type", "learned_range", "--beta_schedule", "linear"],
}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_each_objective_trains_saves_and_samples(tmp_path: Path, objective: str) -> None:
    out = tmp_path / objective
    assert run_main(out, *OBJECTIVES[objective]) == 0

    pipeline = DDPMPosteriorPipeline.from_pretrained(str(out))
    flags = dict(zip(OBJECTIVES[objective][::2], OBJECTIVES[objective][1::2], strict=True))
    config = pipeline.scheduler.config
    assert config.variance_type == flags["--variance_type"]
    assert config.prediction_type == flags.get("--prediction_type", "epsilon")
    assert config.beta_schedule == {"cosine": "squaredcos_cap_v2"}.get(
        flags.get("--beta_schedule"), flags.get("--beta_schedule", "squaredcos_cap_v2")
    )
    assert config.num_train_timesteps == 20
    learned = flags["--variance_type"] == "learned_range"
    assert pipeline.unet.config.out_channels == (2 if learned else 1)
    generator = torch.Generator().manual_seed(0)
    images = pipeline(batch_size=3, generator=generator, num_inference_steps=4, output_type="np").images
    assert images.shape == (3, 8, 8, 1) and np.isfinite(images).all()

    metrics = json.loads((out / "metrics.json").read_text())["bits_per_dim"]
    assert metrics["split"] == "held-out" and metrics["num_images"] == 16 and metrics["num_timesteps"] == 4
    # the bound of 8-bit images lies between 0 and 8 bits plus what an untrained model wastes; never NaN
    assert math.isfinite(metrics["value"]) and 0 < metrics["value"] < 100
    training_args = json.loads((out / "training_args.json").read_text())
    assert training_args["loss"] == flags["--loss"] and training_args["max_train_steps"] == 4
    assert PIL.Image.open(out / "samples.png").size == (2 * 64 + 2, 2 * 64 + 2)  # 4 samples, 8x8 upscaled x8
    assert [step for step, _ in checkpoints.list_checkpoints(str(out))] == [4]
    # the EMA weights are what was saved, not the training weights of the last checkpoint
    ema_weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    assert not tensors_equal(ema_weights, out / "checkpoint-4" / "model.safetensors")
    card = (out / "README.md").read_text()  # hf_ddpm.hub.save_model_card read the three files
    assert "samples.png" in card and f"value: {metrics['value']}" in card and "scikit-learn digits" in card


def test_tensorboard_logs_losses_per_quartile_and_bits_per_dim(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    flags = ["--logger", "tensorboard", "--logging_steps", "2", "--bpd_steps", "2", "--save_images_steps", "2"]
    assert run_main(out, *flags) == 0
    # the scalars and images are in the run's main event file (accelerate writes the hparams beside it)
    runs = [EventAccumulator(str(p)).Reload() for p in (out / "logs").rglob("events.out.tfevents.*")]
    (events,) = [run for run in runs if "train/loss" in run.Tags()["scalars"]]
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/mse", "train/vb", "lr", "bits_per_dim/heldout"} <= scalars
    assert {f"train/vb_q{q}" for q in range(4)} & scalars  # 32 timesteps over 2 steps: some quartiles seen
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert "samples" in events.Tags()["images"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]


# ----------------------------------------------------------------------------------------------------------------
# Exact resume: N steps straight == N/2 steps, kill -9, resume to N (bit for bit)
# ----------------------------------------------------------------------------------------------------------------

RESUME_FLAGS = [
    "--loss", "vlb",  # the loss-second-moment resampler warms up (T=20, 10 losses each) and is checkpointed
    "--train_batch_size", "32",
    "--gradient_accumulation_steps", "2",
    "--max_train_samples", "200",  # 6 batches an epoch: the run crosses epochs, and the kill lands mid-epoch
    "--random_flip",
    "--max_train_steps", "20",
    "--checkpointing_steps", "5",
    "--bpd_num_timesteps", "20",
]  # fmt: skip


def test_kill_and_resume_gives_bit_identical_weights(tmp_path: Path) -> None:
    env = subprocess_env()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    subprocess.run(train_command(straight, *RESUME_FLAGS), env=env, check=True, capture_output=True, timeout=300)

    # the same run, killed with SIGKILL as soon as the checkpoint of step 10 is complete
    process = subprocess.Popen(
        train_command(resumed, *RESUME_FLAGS), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (resumed / "checkpoint-10").is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (resumed / "model_index.json").exists()
    assert checkpoints.latest_checkpoint(str(resumed)).endswith(("checkpoint-10", "checkpoint-15"))

    # resume from the newest complete checkpoint; latest is 10 (or 15 if the kill came later): either must be exact
    result = subprocess.run(
        train_command(resumed, *RESUME_FLAGS, "--resume_from_checkpoint", "latest"),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from" in result.stderr

    for name in ("model.safetensors",):  # the training weights
        assert tensors_equal(straight / "checkpoint-20" / name, resumed / "checkpoint-20" / name)
    weights = Path("unet") / "diffusion_pytorch_model.safetensors"  # the EMA weights of the saved pipeline
    assert tensors_equal(straight / weights, resumed / weights)
    optimizer_a = torch.load(straight / "checkpoint-20" / "optimizer.bin", weights_only=False)["state"]
    optimizer_b = torch.load(resumed / "checkpoint-20" / "optimizer.bin", weights_only=False)["state"]
    assert all(torch.equal(optimizer_a[k]["exp_avg_sq"], optimizer_b[k]["exp_avg_sq"]) for k in optimizer_a)
    # the resampler: warm (uniform no more) and the same loss history
    sampler_a = torch.load(straight / "checkpoint-20" / "custom_checkpoint_1.pkl", weights_only=False)
    sampler_b = torch.load(resumed / "checkpoint-20" / "custom_checkpoint_1.pkl", weights_only=False)
    assert (sampler_a["loss_counts"] == 10).all()
    assert torch.equal(sampler_a["loss_history"], sampler_b["loss_history"])
    # and what came out of it: the same metrics
    assert json.loads((straight / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# Data parallel on CPU: accelerate launch --multi_gpu --num_processes 2 (gloo)
# ----------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_over_gloo_end_with_identical_weights(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_port", str(free_port())]
    flags = ["--loss", "vlb", "--train_batch_size", "8", "--max_train_steps", "6", "--save_rank_weight_hashes"]
    result = subprocess.run(
        [*launcher, TRAIN_PY, *TINY, "--output_dir", str(out), *flags],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Processes: 2 (DistributedType.MULTI_CPU" in result.stderr
    assert "16 per optimizer step" in result.stderr
    rank0, rank1 = ((out / f"weights-rank{i}.sha256").read_text() for i in (0, 1))
    assert rank0 == rank1 and rank0.startswith("model ") and "\nema " in rank0
    assert (out / "model_index.json").is_file() and [s for s, _ in checkpoints.list_checkpoints(str(out))] == [6]


# ----------------------------------------------------------------------------------------------------------------
# The Hub: --push_to_hub, and --resume_from_checkpoint hub:REPO (the local Hub-compatible server on 127.0.0.1)
# ----------------------------------------------------------------------------------------------------------------


def test_push_to_hub_and_exact_resume_from_a_hub_checkpoint(hub_server, hub_repo_id: str, tmp_path: Path) -> None:
    from hf_ddpm import hub

    first = tmp_path / "first"
    assert run_main(first, "--checkpointing_steps", "2", "--push_to_hub", "--hub_model_id", hub_repo_id) == 0
    pulled = DDPMPosteriorPipeline.from_pretrained(hub_repo_id)
    local = load_file(str(first / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(pulled.unet.state_dict()[name], tensor) for name, tensor in local.items())

    hub.push_checkpoint(str(first / "checkpoint-2"), hub_repo_id)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    second = tmp_path / "second"
    flags = ["--checkpointing_steps", "2", "--resume_from_checkpoint", f"hub:{hub_repo_id}"]
    assert run_main(second, *flags) == 0
    assert [s for s, _ in checkpoints.list_checkpoints(str(second))] == [4]  # it went on from step 2
    assert tensors_equal(first / "checkpoint-4" / "model.safetensors", second / "checkpoint-4" / "model.safetensors")


# ----------------------------------------------------------------------------------------------------------------
# Crash-safe checkpoints
# ----------------------------------------------------------------------------------------------------------------


def test_latest_skips_leftover_temp_folders_and_truncated_checkpoints(tmp_path: Path, caplog) -> None:
    out = tmp_path / "ckpt"
    assert run_main(out, "--checkpointing_steps", "2") == 0
    assert [s for s, _ in checkpoints.list_checkpoints(str(out))] == [2, 4]
    assert checkpoints.latest_checkpoint(str(out)) == str(out / "checkpoint-4")

    # a save killed mid-write leaves a temporary folder: never a candidate
    (out / ".tmp-checkpoint-6").mkdir()
    (out / ".tmp-checkpoint-6" / "model.safetensors").write_bytes(b"partial")
    # a checkpoint folder without a manifest (not finished, or not ours): skipped
    (out / "checkpoint-8").mkdir()
    (out / "checkpoint-8" / "model.safetensors").write_bytes(b"partial")
    # a truncated file in the newest real checkpoint: skipped with a warning
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert checkpoints.latest_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert "model.safetensors has" in caplog.text and "checkpoint-8" in caplog.text

    # resuming from latest continues from step 2 and saves a complete checkpoint 4 again; the temp folder is gone
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert run_main(out, "--checkpointing_steps", "2", "--resume_from_checkpoint", "latest") == 0
    assert checkpoints.checkpoint_problem(str(out / "checkpoint-4")) is None
    assert not (out / ".tmp-checkpoint-6").exists()
    # an explicit path to a broken checkpoint is refused before training
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert run_main(out, "--resume_from_checkpoint", str(out / "checkpoint-8")) == 2


def test_total_limit_keeps_the_newest_and_a_new_run_refuses_old_checkpoints(tmp_path: Path, capsys) -> None:
    out = tmp_path / "limit"
    assert run_main(out, "--checkpointing_steps", "1", "--checkpoints_total_limit", "2") == 0
    assert [s for s, _ in checkpoints.list_checkpoints(str(out))] == [3, 4]
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert run_main(out) == 2
    assert "--resume_from_checkpoint latest" in capsys.readouterr().err


def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path: Path, capsys) -> None:
    out = tmp_path / "nan"
    # lr 1e30: the first update sends the weights to ~1e30, so the second loss overflows
    code = run_main(out, "--learning_rate", "1e30", "--lr_warmup_steps", "0", "--lr_scheduler", "constant",
                    "--max_grad_norm", "0", "--checkpointing_steps", "1", "--loss", "simple",
                    "--variance_type", "fixed_small", "--max_train_steps", "10")  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "loss became" in err and "at step" in err
    latest = checkpoints.latest_checkpoint(str(out))
    assert latest is not None and checkpoints.checkpoint_problem(latest) is None
    assert not (out / "model_index.json").exists()


# ----------------------------------------------------------------------------------------------------------------
# Bad flags fail before training, with a message that names the flag
# ----------------------------------------------------------------------------------------------------------------

BAD_FLAGS = {
    "hybrid-fixed": (["--loss", "hybrid", "--variance_type", "fixed_small"], "--loss hybrid"),
    "vlb-fixed": (["--loss", "vlb", "--variance_type", "fixed_large"], "--loss vlb"),
    "simple-learned": (["--loss", "simple", "--variance_type", "learned_range"], "--variance_type learned_range"),
    "resolution": (["--resolution", "7"], "--resolution 7 is not divisible by 2"),
    "batch": (["--train_batch_size", "0"], "--train_batch_size must be at least 1"),
    "steps": (["--max_train_steps", "0"], "--max_train_steps must be at least 1"),
    "accumulation": (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1"),
    "epochs": (["--num_epochs", "0", "--max_train_steps", "3"], "--num_epochs must be at least 1"),
    "preset": (["--model_preset", "huge"], "--model_preset: invalid choice: 'huge'"),
    "column": (["--image_column", "pixels"], "--image_column 'pixels' is not a column"),
    "fp16-cpu": (["--mixed_precision", "fp16", "--device", "cpu"], "--mixed_precision fp16 needs a GPU"),
    "schedule": (["--beta_schedule", "quadratic"], "--ddpm_beta_schedule: invalid choice: 'quadratic'"),
    "batch-too-big": (["--train_batch_size", "5000"], "lower --train_batch_size"),
    "two-sources": (["--dataset_name", "x", "--train_data_dir", "."], "only one of --dataset_name and"),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flags_exit_2_naming_the_flag_and_write_nothing(tmp_path: Path, capsys, case: str) -> None:
    flags, message = BAD_FLAGS[case]
    out = tmp_path / "bad"
    assert run_main(out, *flags) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_hf_ddpm_train_subcommand_uses_the_same_flags(tmp_path: Path, capsys) -> None:
    from hf_ddpm.cli import build_parser
    from hf_ddpm.cli import main as hf_ddpm

    out = tmp_path / "cli"
    assert hf_ddpm(["train", *TINY, "--output_dir", str(out), "--loss", "simple"]) == 2
    assert "hf-ddpm train: error: --variance_type learned_range" in capsys.readouterr().err
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert hf_ddpm(["train", *TINY, "--output_dir", str(out)]) == 0
    assert (out / "model_index.json").is_file()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = capsys.readouterr().out
    assert (
        "Example:" in help_text and "hf-ddpm train --max_train_steps" in help_text and "--beta_schedule" in help_text
    )


def test_defaults_come_from_the_preset_and_aliases_resolve() -> None:
    args = parse_args([])
    assert (args.model_preset, args.resolution, args.channels, args.train_batch_size) == ("digits", 8, 1, 64)
    assert args.beta_schedule == "squaredcos_cap_v2" and args.loss == "hybrid"
    assert args.variance_type == "learned_range" and args.timestep_sampler == "uniform"
    assert args.output_dir == os.path.join("outputs", "ddpm-digits")
    args = parse_args(["--beta_schedule", "cosine", "--loss", "vlb", "--dataset_config", "c", "--num_epochs", "3"])
    assert args.beta_schedule == "squaredcos_cap_v2" and args.timestep_sampler == "loss-second-moment"
    assert args.dataset_config_name == "c" and args.max_train_steps is None  # computed from the epochs
    args = parse_args(["--model_preset", "cifar10", "--learning_rate", "1e-4"])
    assert (args.resolution, args.channels, args.learning_rate, args.lr_warmup_steps) == (32, 3, 1e-4, 5000)


def test_cifar10_preset_is_the_ddpm_paper_model() -> None:
    from hf_ddpm.training.presets import build_unet

    unet = build_unet("cifar10", 32, 3, learned_variance=False)
    assert sum(p.numel() for p in unet.parameters()) == 35_746_307  # Ho et al.: 35.7M
    assert unet.config.block_out_channels == (128, 256, 256, 256) and unet.config.layers_per_block == 2
    assert unet.config.dropout == 0.1


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def write_image_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        PIL.Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(folder / f"ok{i}.png")
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png at all")
    good = (folder / "ok0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path) -> None:
    import datasets

    write_image_folder(tmp_path / "images" / "train")
    dataset = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "images"), cache_dir=str(tmp_path / "c"))
    decoded = data.decode_images(dataset["train"], "image", resolution=8, channels=1, center_crop=True)
    assert decoded.num_skipped == 2 and len(decoded) == 6
    assert decoded.images.shape == (6, 1, 8, 8) and decoded.images.dtype == torch.uint8
    assert "garbage.png" in decoded.first_error or "truncated.png" in decoded.first_error


def test_training_on_an_imagefolder_with_corrupt_files_warns_and_trains(tmp_path: Path, caplog) -> None:
    write_image_folder(tmp_path / "images" / "train")
    flags = ["--train_data_dir", str(tmp_path / "images"), "--cache_dir", str(tmp_path / "c"), "--center_crop"]
    # 8 files, 2 held out: 3 steps of 2 read every training image once
    flags += ["--train_batch_size", "2", "--max_train_steps", "3", "--heldout_fraction", "0.25"]
    assert run_main(tmp_path / "out", *flags) == 0
    warnings = [r.getMessage() for r in caplog.records if "could not be read or decoded" in r.getMessage()]
    # held out: decoded up front, skipped and counted; training: decoded when read, each bad file named once
    heldout = sum(int(re.search(r"Skipped (\d+) of", w).group(1)) for w in warnings if "held-out" in w)
    training = {re.search(r"\((/\S+\.png)\)", w).group(1) for w in warnings if "Skipped training image" in w}
    assert heldout + len(training) == 2 and all(path.endswith(("garbage.png", "truncated.png")) for path in training)
    assert (tmp_path / "out" / "model_index.json").is_file()


def test_conversion_resize_and_crop() -> None:
    rgba = np.zeros((6, 12, 4), dtype=np.uint8)
    rgba[:, :6] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    image = data._convert(PIL.Image.fromarray(rgba, "RGBA"), 3)
    assert np.asarray(image)[0, 0].tolist() == [255, 0, 0] and np.asarray(image)[0, -1].tolist() == [255, 255, 255]
    gray = data._to_tensor(data._resize(data._convert(PIL.Image.fromarray(rgba, "RGBA"), 1), 3, center_crop=True))
    assert gray.shape == (1, 3, 3)
    wide = data._resize(PIL.Image.new("L", (40, 20)), 10, center_crop=False)
    assert wide.size == (20, 10)  # shorter side to the resolution; the random crop happens per epoch


def test_augmentations_are_a_function_of_seed_epoch_and_index() -> None:
    images = torch.arange(10 * 2 * 4, dtype=torch.uint8).reshape(10, 1, 2, 4)  # non-square: random crops
    dataset = data.ImageDataset(images, resolution=2, random_flip=True, seed=3)
    first = dataset.__getitems__(list(range(10)))
    assert first.shape == (10, 1, 2, 2)
    assert torch.equal(first, data.ImageDataset(images, 2, random_flip=True, seed=3).__getitems__(list(range(10))))
    assert torch.equal(first[4], dataset[4])  # batched and single access agree
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset.__getitems__(list(range(10))))
    u = data._hash_uniform(0, 0, np.arange(100_000), 0)
    assert 0.49 < u.mean() < 0.51 and u.min() >= 0 and u.max() < 1


def test_digits_dataset() -> None:
    digits = data.load_digits_dataset()
    assert (len(digits["train"]), len(digits["test"])) == (1617, 180)
    from sklearn.datasets import load_digits

    original = load_digits()
    image = np.asarray(digits["train"][0]["image"])
    assert image.dtype == np.uint8 and image.shape == (8, 8) and image.max() <= 255
    matches = np.flatnonzero((np.round(original.images * 255 / 16) == image).all(axis=(1, 2)))
    assert len(matches) >= 1 and digits["train"][0]["label"] == original.target[matches[0]]


# ----------------------------------------------------------------------------------------------------------------
# Objectives and the resampler, against closed forms and diffusers
# ----------------------------------------------------------------------------------------------------------------


def make_batch(prediction_type="epsilon", variance_type="learned_range", channels=1):
    scheduler = DDPMPosteriorScheduler(
        num_train_timesteps=50, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
        variance_type=variance_type,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    x_start = torch.rand(6, channels, 4, 4, generator=generator) * 2 - 1
    noise = torch.randn(6, channels, 4, 4, generator=generator)
    timesteps = torch.tensor([0, 1, 10, 25, 40, 49])
    x_t = scheduler.add_noise(x_start, noise, timesteps)
    out_channels = 2 * channels if variance_type in ("learned", "learned_range") else channels
    model_output = torch.randn(6, out_channels, 4, 4, generator=generator).requires_grad_()
    return scheduler, model_output, x_start, x_t, noise, timesteps


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_simple_loss_is_the_mse_to_the_diffusers_target(prediction_type: str) -> None:
    scheduler, output, x_start, x_t, noise, t = make_batch(prediction_type, "fixed_small")
    terms = training_losses(scheduler, output, x_start, x_t, noise, t, "simple")
    reference = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    target = {"epsilon": noise, "sample": x_start, "v_prediction": reference.get_velocity(x_start, noise, t)}
    expected = ((output - target[prediction_type]) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["loss"], expected, rtol=1e-5, atol=1e-6)


def test_hybrid_loss_adds_lambda_t_vlb_and_stops_its_gradient_on_the_mean() -> None:
    scheduler, output, x_start, x_t, noise, t = make_batch()
    terms = training_losses(scheduler, output, x_start, x_t, noise, t, "hybrid", vlb_weight=0.001)
    vb = scheduler.vb_terms_bpd(output.detach(), x_start, x_t, t)
    torch.testing.assert_close(terms["vb"], vb)
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.001 * 50 * vb)
    terms["loss"].sum().backward()
    mean_grad = output.grad[:, :1].clone()
    torch.testing.assert_close(mean_grad, 2 * (output[:, :1] - noise).detach() / 16)  # d mse / d eps_pred only
    assert output.grad[:, 1:].abs().sum() > 0  # the variance learns from L_vlb

    output.grad = None
    training_losses(scheduler, output, x_start, x_t, noise, t, "vlb")["loss"].sum().backward()
    assert output.grad[:, :1].abs().sum() > 0  # pure L_vlb trains the mean too


def test_loss_meter_splits_the_timestep_range_in_four() -> None:
    meter = LossMeter(num_train_timesteps=100)
    meter.add({"loss": torch.tensor([1.0, 2.0, 3.0])}, torch.tensor([0, 24, 25]))
    meter.add({"loss": torch.tensor([4.0, 5.0])}, torch.tensor([75, 99]))
    averages = meter.averages(prefix="train/")
    assert averages == {"train/loss": 3.0, "train/loss_q0": 1.5, "train/loss_q1": 3.0, "train/loss_q3": 4.5}
    meter.add({"loss": torch.tensor([7.0])}, torch.tensor([50]))  # the sums start over after each log line
    assert meter.averages() == {"loss": 7.0, "loss_q2": 7.0}


def test_loss_second_moment_resampler() -> None:
    sampler = LossSecondMomentResampler(num_timesteps=4, history_per_term=2, uniform_prob=0.1)
    np.testing.assert_allclose(sampler.probabilities(), 0.25)  # not warm: uniform
    sampler.update_with_all_losses(
        torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3]), torch.tensor([1.0, 1, 2, 2, 3, 3, 9, 4, 4])
    )
    assert sampler.warmed_up()  # t=3 kept its last two losses: 4, 4
    expected = np.array([1.0, 2.0, 3.0, 4.0]) / 10 * 0.9 + 0.1 / 4  # sqrt(E[L^2]) normalized, mixed with uniform
    np.testing.assert_allclose(sampler.probabilities(), expected)
    torch.manual_seed(0)
    timesteps, weights = sampler.sample(20_000, torch.device("cpu"))
    np.testing.assert_allclose(np.bincount(timesteps.numpy(), minlength=4) / 20_000, expected, atol=0.01)
    torch.testing.assert_close(weights, torch.from_numpy(1 / (4 * expected[timesteps.numpy()])).float())
    # unbiased: E_p[w L_t] equals the uniform mean of L_t
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert abs(float((weights * losses[timesteps]).mean()) - 2.5) < 0.05

    restored = LossSecondMomentResampler(num_timesteps=4)
    restored.load_state_dict(sampler.state_dict())
    np.testing.assert_array_equal(restored.probabilities(), sampler.probabilities())
    with pytest.raises(ValueError, match="T=4"):
        LossSecondMomentResampler(num_timesteps=5).load_state_dict(sampler.state_dict())
    uniform_t, uniform_w = UniformSampler(7).sample(5, torch.device("cpu"))
    assert uniform_t.max() < 7 and torch.equal(uniform_w, torch.ones(5))


def test_lerp_ema_matches_diffusers_ema_model() -> None:
    from diffusers.training_utils import EMAModel

    from hf_ddpm.training.loop import LerpEMAModel

    torch.manual_seed(0)
    parameters = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    kwargs = {"decay": 0.99, "use_ema_warmup": True, "inv_gamma": 1.0, "power": 0.75, "foreach": True}
    ours, reference = LerpEMAModel(parameters, **kwargs), EMAModel(parameters, **kwargs)
    for _ in range(30):
        with torch.no_grad():
            for parameter in parameters:
                parameter.add_(torch.randn_like(parameter))
        ours.step(parameters)
        reference.step(parameters)
    assert ours.cur_decay_value == reference.cur_decay_value and ours.optimization_step == 30
    for a, b in zip(ours.shadow_params, reference.shadow_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert ours.state_dict().keys() == reference.state_dict().keys()


def test_image_grid_layout() -> None:
    images = np.zeros((5, 8, 8, 1))
    images[4] = 1.0
    grid = np.asarray(image_grid(images))
    assert grid.shape == (2 * 64 + 2, 3 * 64 + 2 * 2)  # 5 images: 2 rows of 3 cells, 8x8 upscaled x8, 2px gaps
    assert grid[66:130, 66:130].min() == 255 and grid[:64, :64].max() == 0  # image 4: row 1, column 1
    assert (grid[64:66, :] == 128).all() and (grid[130 - 64 :, 196 - 64 :] == 128).all()  # gaps, empty cell


def test_finalize_args_rejects_unknown_preset_set_programmatically() -> None:
    args = parse_args([])
    args.model_preset = "huge"
    with pytest.raises(UsageError, match="--model_preset"):
        finalize_args(args)
