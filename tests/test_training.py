"""Tests of training (issue 3): objectives, exact resume, data-parallel ranks, crash-safe checkpoints, bad flags, data.

Real runs of the real entry on a tiny UNet (`--model_preset tiny`, T=20): in-process through
`hf_ddpm.training.main`, and as subprocesses (`python train.py`, `accelerate launch --multi_gpu`) where a kill or
several processes are the point.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import make_tiny_unet
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from hf_ddpm import DDPMPosteriorPipeline, DDPMPosteriorScheduler, _datasets
from hf_ddpm.cli import UsageError
from hf_ddpm.images import image_grid
from hf_ddpm.training import checkpoints, data, main, parse_args
from hf_ddpm.training.losses import training_losses
from hf_ddpm.training.metrics import LossMeter
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


pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_accelerate_state")


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
    assert PIL.Image.open(out / "samples.png").size == (2 * 64 + 3, 2 * 64 + 3)  # 4 samples, 8x8 upscaled x8
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
    assert sorted(p.name for p in (out / "training_samples").iterdir()) == ["step-000002.png", "step-000004.png"]


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


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of an uninterrupted run with RESUME_FLAGS, shared by the resume tests of this module."""
    straight = tmp_path_factory.mktemp("straight") / "run"
    command = train_command(straight, *RESUME_FLAGS)
    subprocess.run(command, env=subprocess_env(), check=True, capture_output=True, timeout=300)
    return straight


def assert_same_final_weights(straight: Path, resumed: Path) -> None:
    """The training weights of the last checkpoint and the EMA weights of the saved pipeline, bit for bit."""
    assert tensors_equal(
        straight / "checkpoint-20" / "model.safetensors", resumed / "checkpoint-20" / "model.safetensors"
    )
    weights = Path("unet") / "diffusion_pytorch_model.safetensors"
    assert tensors_equal(straight / weights, resumed / weights)


def kill_at_checkpoint(command: list[str], env: dict[str, str], checkpoint: Path) -> None:
    """
    Run `command` and kill -9 it, its data-loader worker too, as soon as `checkpoint` exists. (Killing the main
    process alone leaves the worker holding the output folder's lock until it notices, up to 5 s later.)
    """
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not checkpoint.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (checkpoint.parent / "model_index.json").exists()


def kill_and_resume(straight: Path, resumed: Path, flags: list[str], env: dict[str, str]) -> None:
    """
    Train into `resumed` with `flags`, kill -9 the run as soon as its checkpoint of step 10 is complete, resume it
    from the newest complete checkpoint (10, or 15 if the kill came later: either must be exact) and check that it
    ends with the weights of the uninterrupted run in `straight`, bit for bit.
    """
    kill_at_checkpoint(train_command(resumed, *flags), env, resumed / "checkpoint-10")
    assert checkpoints.latest_checkpoint(str(resumed)).endswith(("checkpoint-10", "checkpoint-15"))
    result = subprocess.run(
        train_command(resumed, *flags, "--resume_from_checkpoint", "latest"),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from" in result.stderr
    assert_same_final_weights(straight, resumed)


def test_kill_and_resume_gives_bit_identical_weights(tmp_path: Path, straight_run: Path) -> None:
    straight, resumed = straight_run, tmp_path / "resumed"
    kill_and_resume(straight, resumed, RESUME_FLAGS, subprocess_env())
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


# Runs `train` and then writes, from every process, its training and EMA weights as output_dir/rank<i>.safetensors
RANK_WEIGHTS_DRIVER = """
import sys
from safetensors.torch import save_file
from hf_ddpm.training import loop, parse_args

built = []
build_components = loop.build_components


def keep_components(*args):
    built.append(build_components(*args))
    return built[-1]


loop.build_components = keep_components
args = parse_args(sys.argv[1:])
loop.configure_logging()
loop.train(args)
c = built[0][0]
weights = dict(c.accelerator.unwrap_model(c.unet).state_dict())
weights.update({f"ema.{i}": tensor for i, tensor in enumerate(c.ema.shadow_params)})
save_file(weights, f"{args.output_dir}/rank{c.accelerator.process_index}.safetensors")
"""


def train_two_processes(out: Path, *flags: str) -> None:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_port", str(free_port())]
    driver = out.parent / "rank_weights.py"
    driver.write_text(RANK_WEIGHTS_DRIVER)
    flags = ["--loss", "vlb", "--train_batch_size", "8", "--max_train_steps", "6", *flags]
    result = subprocess.run(
        [*launcher, str(driver), *TINY, "--output_dir", str(out), *flags],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Processes: 2 (DistributedType.MULTI_CPU" in result.stderr
    assert "16 per optimizer step" in result.stderr


def test_two_processes_over_gloo_end_with_identical_weights(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ddp"
    train_two_processes(out, "--max_grad_norm", "0.05")  # a small norm: every step is clipped
    assert tensors_equal(out / "rank0.safetensors", out / "rank1.safetensors")  # the training and EMA weights
    assert (out / "model_index.json").is_file() and [s for s, _ in checkpoints.list_checkpoints(str(out))] == [6]
    # it trained: the weights moved away from the initial ones every process started from (seed 0)
    from diffusers import UNet2DModel

    from hf_ddpm.training.presets import unet_config

    torch.manual_seed(0)
    initial = UNet2DModel(**unet_config("tiny", 8, 1, learned_variance=True)).state_dict()
    trained = load_file(str(out / "checkpoint-6" / "model.safetensors"))
    assert trained.keys() == initial.keys() and any(not torch.equal(trained[n], initial[n]) for n in initial)
    # its checkpoint holds the data position of each process: one process cannot resume it exactly
    capsys.readouterr()
    assert run_main(out, "--loss", "vlb", "--max_train_steps", "8", "--resume_from_checkpoint", "latest") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: --resume_from_checkpoint latest: ") and "checkpoint-6 could not be restored" in line
    assert "it was saved by 2 process(es), this run has 1" in line


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


def test_checkpoints_pushed_during_training_resume_bit_exact_in_a_fresh_folder(
    hub_server, hub_repo_id: str, tmp_path: Path, straight_run: Path
) -> None:
    from huggingface_hub import HfApi

    env = subprocess_env()  # the hub_server fixture pointed HF_ENDPOINT, HF_TOKEN and the cache at the local server
    pushed = tmp_path / "pushed"
    hub_flags = ["--push_checkpoints_to_hub", "--hub_model_id", hub_repo_id]
    process = subprocess.Popen(
        train_command(pushed, *RESUME_FLAGS, *hub_flags), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def pushed_steps() -> set[int]:
        try:
            files = HfApi().list_repo_files(hub_repo_id, revision="checkpoints")
        except Exception:  # the repo or the branch does not exist yet
            return set()
        return {int(m.group(1)) for f in files if (m := re.fullmatch(r"checkpoint-(\d+)/checkpoint.json", f))}

    # killed with SIGKILL as soon as the Hub holds checkpoint-10
    deadline = time.monotonic() + 300
    while 10 not in pushed_steps() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    commits = [c.title for c in HfApi().list_repo_commits(hub_repo_id, revision="checkpoints")]
    assert commits[-3:] == ["Upload checkpoint-10", "Upload checkpoint-5", "initial commit"]  # one commit each
    assert "model_index.json" not in HfApi().list_repo_files(hub_repo_id)  # main: no pickles, no pipeline yet

    # another machine: a fresh folder, the newest checkpoint on the Hub
    fresh = tmp_path / "fresh"
    result = subprocess.run(
        train_command(fresh, *RESUME_FLAGS, "--resume_from_checkpoint", f"hub:{hub_repo_id}"),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"Resuming from \S+checkpoint-(10|15)", result.stderr)
    assert_same_final_weights(straight_run, fresh)


def test_hub_token_flag_is_used_and_never_written_logged_or_tracked(
    hub_server, hub_repo_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, caplog
) -> None:
    from huggingface_hub import HfApi, snapshot_download

    token = hub_server.token
    monkeypatch.delenv("HF_TOKEN")  # the flag is the only credential: anonymous pushes are refused
    out = tmp_path / "token"
    flags = ["--push_to_hub", "--hub_model_id", hub_repo_id, "--hub_token", token, "--hub_private_repo"]
    flags += ["--push_checkpoints_to_hub", "--checkpointing_steps", "2", "--logger", "tensorboard"]
    assert run_main(out, *flags) == 0
    assert "HF_TOKEN" not in os.environ  # restored after each push

    api = HfApi(token=token)
    assert api.repo_info(hub_repo_id).private
    assert "model_index.json" in api.list_repo_files(hub_repo_id)
    assert {"checkpoint-2/model.safetensors", "checkpoint-4/model.safetensors"} <= set(
        api.list_repo_files(hub_repo_id, revision="checkpoints")
    )
    secret = token.encode()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name.startswith("events.out.tfevents") for p in written) and (out / "README.md").is_file()
    assert [p for p in written if secret in p.read_bytes()] == []  # args, card, TensorBoard, checkpoints, logs
    training_args = json.loads((out / "training_args.json").read_text())
    assert "hub_token" not in training_args and training_args["hub_private_repo"] is True
    remote = Path(snapshot_download(hub_repo_id, token=token, local_dir=tmp_path / "remote"))
    assert [p for p in remote.rglob("*") if p.is_file() and secret in p.read_bytes()] == []
    captured = capfd.readouterr()
    assert token not in captured.out + captured.err and token not in caplog.text


def test_model_card_usage_runs_with_diffusers_alone(hub_server, hub_repo_id: str, tmp_path: Path) -> None:
    out = tmp_path / "card"
    assert run_main(out, "--push_to_hub", "--hub_model_id", hub_repo_id) == 0
    from huggingface_hub import hf_hub_download

    card = Path(hf_hub_download(hub_repo_id, "README.md")).read_text()
    install = re.search(r"```bash\n(pip install [^\n]*)\n```", card).group(1)
    assert install == "pip install diffusers torch"  # hf-ddpm is not on PyPI: `pip install hf-ddpm` would fail
    usage = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    assert "trust_remote_code=True" in usage and "hf_ddpm" not in usage
    # run it as a reader would, with hf_ddpm not importable: only diffusers, torch and the repo's own code
    script = 'import sys\nsys.modules["hf_ddpm"] = None\n' + usage
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert PIL.Image.open(tmp_path / "sample.png").size == (8, 8)


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
    assert "model.safetensors: " in caplog.text and "bytes instead of" in caplog.text and "checkpoint-8" in caplog.text

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


def reset_accelerate() -> None:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def damage(path: Path) -> None:
    """Flip bytes in the middle of `path`, keeping its size: what a size check cannot see."""
    content = bytearray(path.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 16] = bytes(255 - byte for byte in content[middle : middle + 16])
    path.write_bytes(bytes(content))


def test_manifest_records_the_size_and_sha256_of_every_file(tmp_path: Path) -> None:
    import hashlib

    out = tmp_path / "manifest"
    assert run_main(out, "--checkpointing_steps", "4") == 0
    folder = out / "checkpoint-4"
    manifest = json.loads((folder / checkpoints.MANIFEST_NAME).read_text())
    assert manifest["step"] == 4 and manifest["flags"]["model_preset"] == "tiny"
    on_disk = {p.name for p in folder.iterdir()} - {checkpoints.MANIFEST_NAME}
    assert set(manifest["files"]) == on_disk and "random_states_0.pkl" in on_disk
    for name, entry in manifest["files"].items():
        content = (folder / name).read_bytes()
        assert entry == {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    # the manifests of hf-ddpm before sha256 recorded sizes alone: such a checkpoint is broken, not a crash
    manifest["files"] = {name: entry["size"] for name, entry in manifest["files"].items()}
    (folder / checkpoints.MANIFEST_NAME).write_text(json.dumps(manifest))
    assert checkpoints.checkpoint_problem(str(folder)).startswith(
        f"{checkpoints.MANIFEST_NAME}: missing or unreadable"
    )


def test_all_checkpoints_broken_resume_stops_naming_them_and_deletes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "broken"
    assert run_main(out, "--checkpointing_steps", "2") == 0
    for step in (2, 4):
        damage(out / f"checkpoint-{step}" / "model.safetensors")
    reset_accelerate()
    flags = ["--checkpointing_steps", "1", "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest"]
    assert run_main(out, *flags) == 2  # not a new run from step 0
    err = capsys.readouterr().err
    assert "every checkpoint in" in err and "checkpoint-2 (" in err and "checkpoint-4 (" in err
    assert "model.safetensors: content differs from its sha256" in err
    assert [step for step, _ in checkpoints.list_checkpoints(str(out))] == [2, 4]


def test_resume_skips_a_broken_newest_checkpoint_and_pruning_keeps_newer_ones(tmp_path: Path, caplog) -> None:
    out = tmp_path / "fallback"
    assert run_main(out, "--checkpointing_steps", "2") == 0
    weights = out / "checkpoint-4" / "model.safetensors"
    straight = {name: tensor.clone() for name, tensor in load_file(str(weights)).items()}  # not the mapped file
    weights.write_bytes(weights.read_bytes()[:-100])
    reset_accelerate()
    # checkpoints every 3 steps, keep 1: step 3 is saved while the broken checkpoint-4 (newer than the resume point,
    # not written by this run) is still there; pruning by step number alone would delete step 3 and keep it
    flags = ["--checkpointing_steps", "3", "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest"]
    assert run_main(out, *flags) == 0
    assert [step for step, _ in checkpoints.list_checkpoints(str(out))] == [4]
    assert checkpoints.checkpoint_problem(str(out / "checkpoint-4")) is None  # rewritten by the resumed run
    resumed = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)  # and exact
    assert f"Resuming from {out / 'checkpoint-2'}, the newest good checkpoint" in caplog.text
    assert "checkpoint-4 (model.safetensors: " in caplog.text


def test_pruning_never_deletes_a_checkpoint_newer_than_the_resume_point(tmp_path: Path) -> None:
    out = tmp_path / "newer"
    assert run_main(out, "--checkpointing_steps", "2", "--max_train_steps", "6") == 0
    reset_accelerate()
    # resume from checkpoint-2 into a shorter schedule of checkpoints: 4 and 6 are another run's future
    flags = ["--checkpointing_steps", "1", "--checkpoints_total_limit", "1", "--max_train_steps", "3"]
    assert run_main(out, *flags, "--resume_from_checkpoint", str(out / "checkpoint-2")) == 0
    assert [step for step, _ in checkpoints.list_checkpoints(str(out))] == [3, 4, 6]


def test_pruning_removes_a_symlinked_checkpoint_but_not_what_it_points_to(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "links", tmp_path / "elsewhere"
    assert run_main(out, "--checkpointing_steps", "2", "--max_train_steps", "2") == 0
    elsewhere.mkdir()
    shutil.move(out / "checkpoint-2", elsewhere / "checkpoint-2")
    (out / "checkpoint-2").symlink_to(elsewhere / "checkpoint-2", target_is_directory=True)
    reset_accelerate()
    # resumed from the link, then pruned down to the newest checkpoint: the link goes, steps still to run
    flags = ["--checkpointing_steps", "1", "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest"]
    assert run_main(out, *flags) == 0
    assert [step for step, _ in checkpoints.list_checkpoints(str(out))] == [4]
    assert not os.path.lexists(out / "checkpoint-2") and (out / "model_index.json").is_file()
    assert checkpoints.checkpoint_problem(str(elsewhere / "checkpoint-2")) is None  # the target, whole


def test_a_damaged_rng_state_is_an_error_unless_inexact_resume_is_allowed(tmp_path: Path, capsys, caplog) -> None:
    out = tmp_path / "rng"
    assert run_main(out, "--checkpointing_steps", "4") == 0
    damage(out / "checkpoint-4" / "random_states_0.pkl")  # same size: only the hash can tell
    reset_accelerate()
    resume = ["--resume_from_checkpoint", str(out / "checkpoint-4"), "--max_train_steps", "6"]
    assert run_main(out, *resume) == 2
    err = capsys.readouterr().err
    assert "random_states_0.pkl: content differs from its sha256" in err and "checkpoint-4" in err
    assert not (out / "checkpoint-6").exists()
    reset_accelerate()
    assert run_main(out, *resume, "--allow_inexact_resume") == 0
    assert "random_states_0.pkl" in caplog.text and "will NOT repeat an uninterrupted one" in caplog.text
    assert (out / "checkpoint-6").is_dir()


def test_resume_with_another_model_or_past_max_train_steps_says_what_differs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mismatch"
    assert run_main(out, "--checkpointing_steps", "4") == 0
    reset_accelerate()
    other = ["--loss", "simple", "--variance_type", "fixed_small", "--max_train_steps", "6"]
    capsys.readouterr()
    assert run_main(out, *other, "--resume_from_checkpoint", "latest") == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]  # one line, after the progress bars
    assert "Traceback" not in err and line.startswith("error: --resume_from_checkpoint latest: ")
    assert "checkpoint-4 could not be restored (" in line  # torch's words, naming the first tensor that differs
    assert "size mismatch for conv_out.weight: copying a param with shape torch.Size([2, 8, 3, 3])" in line
    assert "it was saved with --variance_type learned_range (this run: fixed_small)" in line
    reset_accelerate()
    assert run_main(out, "--max_train_steps", "2", "--resume_from_checkpoint", "latest") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--max_train_steps 2 is below" in line and "step 4" in line
    reset_accelerate()
    assert run_main(out, "--no-use_ema", "--max_train_steps", "6", "--resume_from_checkpoint", "latest") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "could not be restored (Number of custom checkpoints" in err
    assert "it was saved with --use_ema True (this run: False)" in err.strip().splitlines()[-1]
    assert [step for step, _ in checkpoints.list_checkpoints(str(out))] == [4]
    # a schedule or prediction changes no tensor: the state loaded, and the run went on with another recipe
    reset_accelerate()
    assert (
        run_main(out, "--beta_schedule", "linear", "--max_train_steps", "6", "--resume_from_checkpoint", "latest") == 2
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "was saved with --beta_schedule squaredcos_cap_v2 (this run: linear); resume with its flags." in line
    assert [step for step, _ in checkpoints.list_checkpoints(str(out))] == [4]


def test_new_weights_drop_the_evaluation_of_the_old_ones(tmp_path: Path) -> None:
    """hf-ddpm eval's results measured the weights a resumed run replaces: the card and a push carried them on."""
    out = tmp_path / "run"
    assert run_main(out, "--checkpointing_steps", "4") == 0
    (out / "eval_results.json").write_text(json.dumps({"fd_digits": {"value": 123.25, "num_samples": 10}}))
    (out / "eval_samples.png").write_bytes((out / "samples.png").read_bytes())
    reset_accelerate()
    assert run_main(out, "--max_train_steps", "6", "--resume_from_checkpoint", "latest") == 0
    assert not (out / "eval_results.json").exists() and not (out / "eval_samples.png").exists()
    assert "123.25" not in (out / "README.md").read_text()


@pytest.mark.parametrize("output_dir", [".", "data", "data/run", "notes"])
def test_a_run_never_writes_into_the_current_data_or_a_foreign_folder(tmp_path, monkeypatch, capsys, output_dir):
    """`--output_dir .` wrote the model card over the user's README.md; `--output_dir` in the data folder wrote
    samples.png among the training images."""
    (tmp_path / "README.md").write_text("my project")
    (tmp_path / "data").mkdir()
    PIL.Image.new("L", (8, 8)).save(tmp_path / "data" / "0.png")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--train_data_dir", "data", "--output_dir", output_dir])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        f"--output_dir {output_dir!r}" in line or f"--output_dir {output_dir} " in line
    ) and "Traceback" not in line
    assert sorted(os.listdir(tmp_path)) == ["README.md", "data", "notes"] and os.listdir("data") == ["0.png"]
    if output_dir == "notes":  # a folder of other files: written into only when asked to
        assert "holds files of its own" in line
        parse_args(["--train_data_dir", "data", "--output_dir", "notes", "--overwrite_output_dir"])


def test_a_second_run_into_a_locked_output_dir_refuses_and_a_killed_run_leaves_no_lock(tmp_path: Path) -> None:
    from hf_ddpm.training.checkpoints import HOLDER_NAME

    out = tmp_path / "locked"
    env = subprocess_env()
    flags = ["--max_train_steps", "100000", "--checkpointing_steps", "1", "--checkpoints_total_limit", "2"]
    first = subprocess.Popen(train_command(out, *flags), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not checkpoints.list_checkpoints(str(out)) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended early"
        # the worst case: a second run that would delete the first one's checkpoints
        second = subprocess.run(
            train_command(out, "--overwrite_output_dir"), env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"--output_dir {out} is in use by another training run (pid {first.pid} on host" in second.stderr
        assert first.poll() is None and checkpoints.list_checkpoints(str(out))
        # tidying the folder deletes the file naming the holder: the lock (on the folder itself) holds all the same
        (out / HOLDER_NAME).unlink()
        third = subprocess.run(
            train_command(out, "--overwrite_output_dir"), env=env, capture_output=True, text=True, timeout=300
        )
        assert third.returncode == 2, third.stderr[-3000:]
        assert f"--output_dir {out} is in use by another training run (pid unknown)" in third.stderr
        assert first.poll() is None and checkpoints.list_checkpoints(str(out))
    finally:
        first.kill()
        first.wait(timeout=60)
    # the kernel dropped the lock with the killed process: the next run goes ahead
    assert run_main(out, "--overwrite_output_dir") == 0
    assert (out / HOLDER_NAME).is_file() and [step for step, _ in checkpoints.list_checkpoints(str(out))] == [4]


def test_a_forked_child_of_a_killed_run_does_not_keep_its_output_dir_locked(tmp_path: Path) -> None:
    """A DataLoader worker is a fork of the run: when the run is killed the worker lives on a moment, and must not
    hold the lock (flock is released only when every copy of the locked descriptor is closed)."""
    from hf_ddpm.training.checkpoints import OutputDirLock

    script = f"""
import os, sys, time
from hf_ddpm.training.checkpoints import OutputDirLock
OutputDirLock({str(tmp_path)!r}).acquire()
child = os.fork()
if child == 0:
    os.write(1, b"child ready\\n")  # past the fork handlers (one write each: the two lines cannot interleave)
    time.sleep(60)
    os._exit(0)
os.write(1, f"{{child}}\\n".encode())
time.sleep(60)
"""
    holder = subprocess.Popen([sys.executable, "-c", script], env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    lines = [holder.stdout.readline().strip() for _ in range(2)]  # the child's line and the parent's, in any order
    assert "child ready" in lines
    child = int(next(line for line in lines if line != "child ready"))
    try:
        with pytest.raises(UsageError, match="in use by another training run"):
            OutputDirLock(str(tmp_path)).acquire()
        holder.kill()  # the run alone, as kill -9 of its pid does; its forked child lives on
        holder.wait(timeout=30)
        os.kill(child, 0)  # still alive
        OutputDirLock(str(tmp_path)).acquire().release()
    finally:
        holder.kill()
        os.kill(child, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------------------------
# Bad flags fail before training, with a message that names the flag
# ----------------------------------------------------------------------------------------------------------------

BAD_FLAGS = {
    "hybrid-fixed": (["--loss", "hybrid", "--variance_type", "fixed_small"], "--loss hybrid"),
    "vlb-fixed": (["--loss", "vlb", "--variance_type", "fixed_large"], "--loss vlb"),
    "simple-learned": (["--loss", "simple", "--variance_type", "learned_range"], "--variance_type learned_range"),
    "resolution": (["--resolution", "7"], "--resolution 7 is not divisible by 2"),
    "batch": (["--train_batch_size", "0"], "argument --train_batch_size: must be at least 1, got '0'"),
    "steps": (["--max_train_steps", "0"], "argument --max_train_steps: must be at least 1, got '0'"),
    "accumulation": (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps: must be at least 1"),
    "epochs": (["--num_epochs", "0", "--max_train_steps", "3"], "--num_epochs: must be at least 1"),
    "not-a-number": (["--learning_rate", "fast"], "argument --learning_rate: must be a positive number, got 'fast'"),
    "lr": (["--learning_rate", "inf"], "argument --learning_rate: must be a positive number, got 'inf'"),
    "ema": (["--ema_decay", "1"], "argument --ema_decay/--ema_max_decay: must be in (0, 1), got '1'"),
    "bpd-timesteps": (["--bpd_num_timesteps", "1"], "--bpd_num_timesteps: must be at least 2 (the decoder and one"),
    "inference-steps": (["--ddpm_num_inference_steps", "30"], "--ddpm_num_inference_steps (30) cannot exceed"),
    "no-folder": (
        ["--train_data_dir", "/nonexistent"],
        "argument --train_data_dir: must be a folder, got '/nonexistent'",
    ),
    "preset": (["--model_preset", "huge"], "--model_preset: invalid choice: 'huge'"),
    "column": (["--image_column", "pixels"], "--image_column 'pixels' is not a column"),
    "fp16-cpu": (["--mixed_precision", "fp16", "--device", "cpu"], "--mixed_precision fp16 needs a GPU"),
    "schedule": (["--beta_schedule", "quadratic"], "--ddpm_beta_schedule: invalid choice: 'quadratic'"),
    "batch-too-big": (["--train_batch_size", "5000"], "lower --train_batch_size"),
    "two-sources": (["--dataset_name", "x", "--train_data_dir", "."], "--train_data_dir: not allowed with argument"),
    "push-no-checkpoints": (
        ["--push_checkpoints_to_hub", "--checkpointing_steps", "0"],
        "--push_checkpoints_to_hub needs checkpoints",
    ),
    "checkpoints-on-main": (["--hub_checkpoint_revision", "main"], "--hub_checkpoint_revision: must be a branch"),
    "empty-token": (["--hub_token", " "], "argument --hub_token: must be a token, not empty"),
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
    from diffusers import UNet2DModel

    from hf_ddpm.training.presets import unet_config

    unet = UNet2DModel(**unet_config("cifar10", 32, 3, learned_variance=False))
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


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path, caplog) -> None:
    import datasets

    write_image_folder(tmp_path / "images" / "train")
    dataset = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "images"), cache_dir=str(tmp_path / "c"))
    images, num_skipped = data.decode_images(dataset["train"], "image", resolution=8, channels=1)
    assert num_skipped == 2 and images.shape == (6, 1, 8, 8) and images.dtype == torch.uint8
    (warning,) = [r.getMessage() for r in caplog.records if "could not be read or decoded" in r.getMessage()]
    assert "Skipped 2 of 8 held-out images" in warning and ("garbage.png" in warning or "truncated.png" in warning)


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
    image = _datasets.decode_image(PIL.Image.fromarray(rgba, "RGBA"), 3)
    assert image.shape == (6, 12, 3) and image[0, 0].tolist() == [255, 0, 0] and image[0, -1].tolist() == [255] * 3
    gray = data.decode_image(PIL.Image.fromarray(rgba, "RGBA"), 3, channels=1, center_crop=True)
    assert gray.shape == (1, 3, 3) and gray.dtype == torch.uint8
    wide = _datasets.decode_image(PIL.Image.new("L", (40, 20)), 1, resolution=10)
    assert wide.shape == (10, 20, 1)  # shorter side to the resolution; the random crop happens per epoch


def test_augmentations_are_a_function_of_seed_epoch_and_index() -> None:
    import datasets

    images = np.arange(10 * 2 * 4, dtype=np.uint8).reshape(10, 2, 4)  # non-square: random crops
    stored = datasets.Dataset.from_dict({"image": [PIL.Image.fromarray(image) for image in images]})

    flags = argparse.Namespace(resolution=2, channels=1, center_crop=False, random_flip=True, seed=3)

    def dataset(**kwargs):
        return data.ImageDataset(stored, "image", flags, **kwargs)

    first = dataset().__getitems__(list(range(10)))
    assert first.shape == (10, 1, 2, 2)
    assert torch.equal(first, dataset(in_memory=True).__getitems__(list(range(10))))
    assert torch.equal(first[4], dataset()[4])  # batched and single access agree
    # each a 2x2 window of its own image, at offsets that differ between images
    assert all(
        set(crop.flatten().tolist()) <= set(image.flatten().tolist())
        for crop, image in zip(first, images, strict=True)
    )
    assert len({int(crop.min()) - int(image.min()) for crop, image in zip(first, images, strict=True)}) > 1
    later = dataset()
    later.set_epoch(1)
    assert not torch.equal(first, later.__getitems__(list(range(10))))
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
    assert (sampler.losses_seen >= 2).all()  # warm; t=3 kept its last two losses: 4, 4
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


def test_image_grid_layout() -> None:
    images = np.zeros((5, 8, 8, 1))
    images[4] = 1.0
    grid = np.asarray(image_grid(images, scale=8))
    assert grid.shape == (2 * 64 + 3, 3 * 64 + 4)  # 5 images: 2 rows of 3 cells, 8x8 upscaled x8, 1px gaps and border
    assert grid[66:130, 66:130].min() == 255 and grid[1:65, 1:65].max() == 0  # image 4: row 1, column 1
    assert (grid[65, :] == 128).all() and (grid[0, :] == 128).all() and (grid[66:130, 131:195] == 128).all()


def test_vlb_loss_with_importance_sampling_estimates_the_uniform_average_over_timesteps() -> None:
    """
    Nichol & Dhariwal eq. 18: drawing t with p_t ~ sqrt(E[L_t^2]) and weighting each L_t by 1 / (T p_t) keeps the
    training loss an unbiased estimate of L_vlb's uniform average. Without the weights the loss would overweight the
    large-loss timesteps: the sum of p_t L_t, several standard errors away.
    """
    from hf_ddpm.training.loop import TrainingComponents, compute_losses

    T = 20
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T, variance_type="learned_range")
    unet = make_tiny_unet(learned_variance=True).requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=generator)

    # the reference, independent of the sampler and of compute_losses: each L_t averaged over 128 noise draws
    x_start = data.to_model_space(images).repeat(T * 8, 1, 1, 1)  # [T*128 x 1 x 8 x 8]
    timesteps = torch.arange(T).repeat_interleave(128)
    noise = torch.randn(x_start.shape, generator=generator)
    x_t = scheduler.add_noise(x_start, noise, timesteps)
    with torch.no_grad():
        losses = training_losses(scheduler, unet(x_t, timesteps).sample, x_start, x_t, noise, timesteps, "vlb")
    per_t = losses["loss"].reshape(T, 128).double()
    uniform_average = per_t.mean()
    reference_se = float(per_t.var(dim=1).sum().sqrt() / (T * math.sqrt(128)))

    sampler = LossSecondMomentResampler(T)
    for _ in range(10):  # warm: p_t from the second moments of the measured losses
        sampler.update_with_all_losses(torch.arange(T), per_t.mean(dim=1))
    p = sampler.probabilities()
    components = TrainingComponents(
        accelerator=None, unet=unet, noise_scheduler=scheduler, optimizer=None, lr_scheduler=None,
        timestep_sampler=sampler, ema=None, args=argparse.Namespace(loss="vlb", vlb_weight=0.001),
    )  # fmt: skip
    torch.manual_seed(1)
    batch = images.repeat(256, 1, 1, 1)  # 4096 draws of (t, noise)
    with torch.no_grad():
        loss, terms, drawn = compute_losses(components, batch)
    weighted = terms["loss"].double() / (T * p[drawn])
    tolerance = 4 * math.sqrt(reference_se**2 + float(weighted.var()) / len(batch))
    assert abs(float(loss) - float(uniform_average)) < tolerance
    unweighted_expectation = float((p * per_t.mean(dim=1)).sum())
    assert abs(unweighted_expectation - float(uniform_average)) > 3 * tolerance  # the test can tell


def test_defaults_are_the_recipe_of_the_shipped_model() -> None:
    """The flags of `accelerate launch train.py` with no flags are those the Space's model was trained with."""
    shipped = json.loads((REPO / "spaces" / "ddpm-digits" / "model" / "training_args.json").read_text())
    found_by_the_run = {"dataset", "heldout_split", "num_heldout_images", "num_processes", "num_skipped_images"}
    found_by_the_run |= {"num_train_images", "total_batch_size", "image_column"}  # image_column: detected
    removed = {"save_images_epochs", "save_rank_weight_hashes"}  # flags removed since, unset by the recipe
    assert all(shipped[name] in (None, False) for name in removed)
    flags = {name: value for name, value in shipped.items() if name not in found_by_the_run | removed}
    defaults = vars(parse_args([]))
    assert {name: defaults[name] for name in flags} == flags
    assert (defaults["loss"], defaults["vlb_weight"], defaults["learning_rate"]) == ("hybrid", 0.001, 0.002)
