"""Tests of training at scale (issue 16): a step with no host sync, lazily decoded data, the GPU benchmark.

Real components of the real loop on a tiny UNet; the data-size tests run training as subprocesses and compare their
peak resident memory.
"""

import argparse
import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import test_training
import torch
from test_training import RESUME_FLAGS, free_port, kill_and_resume, subprocess_env, tensors_equal, train_command

from hf_ddpm.training import checkpoints, data, parse_args
from hf_ddpm.training.loop import build_accelerator, build_components, build_dataloader, train_step
from hf_ddpm.training.metrics import LossMeter

REPO = Path(__file__).resolve().parents[1]
TINY = [*test_training.TINY, "--max_train_steps", "8"]  # the last value of a flag wins

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_accelerate_state")


def build_step(tmp_path: Path, *flags: str):
    """The loop's components for `flags` and an endless iterator over its prepared dataloader."""
    args = parse_args([*TINY, "--output_dir", str(tmp_path), *flags])
    accelerator = build_accelerator(args)
    dataset, _, _ = data.load_data(args)
    dataloader = build_dataloader(args, dataset, accelerator.num_processes)
    components, dataloader = build_components(args, accelerator, dataloader)

    def batches():
        while True:
            yield from dataloader

    return args, components, batches()


# ----------------------------------------------------------------------------------------------------------------
# No host sync in a step
# ----------------------------------------------------------------------------------------------------------------

# every way a tensor's value reaches the host: each makes the host wait for the device's queue
HOST_READS = ["item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__format__"]


def count_host_reads(monkeypatch) -> Counter:
    """Wrap each host read of torch.Tensor with a counter (the real function still runs)."""
    counts = Counter()
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("objective", ["hybrid", "vlb"])  # vlb: the resampler learns from every step's losses
def test_training_steps_read_nothing_back_to_the_host(tmp_path: Path, monkeypatch, objective: str) -> None:
    flags = ["--loss", objective, "--variance_type", "learned_range", "--max_grad_norm", "1.0"]
    args, c, batches = build_step(tmp_path, *flags)
    meter = LossMeter(args.ddpm_num_steps)
    train_step(c, next(batches), 0)  # first step: lazily built state (scheduler terms on the device)
    counts = count_host_reads(monkeypatch)
    for step in range(1, 7):
        images = next(batches)
        timesteps, terms = train_step(c, images, step)
        meter.add(terms, timesteps)
    assert counts == Counter()  # the step, the NaN check, the resampler and the loss sums: no host read
    averages = meter.averages(prefix="train/")  # the log line reads them, once
    assert set(counts) == {"tolist"} and counts["tolist"] == 1
    assert averages["train/loss"] > 0 and c.nonfinite.first_bad_step.item() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_steps_never_synchronize_on_cuda(tmp_path: Path) -> None:
    args, c, batches = build_step(tmp_path, "--loss", "vlb", "--variance_type", "learned_range", "--device", "cuda")
    meter = LossMeter(args.ddpm_num_steps)
    batch = [next(batches) for _ in range(6)]  # loaded (and copied to the device) before the check
    train_step(c, batch[0], 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call raises
    try:
        for step in range(1, 6):
            timesteps, terms = train_step(c, batch[step], step)
            meter.add(terms, timesteps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert meter.averages()["loss"] > 0


# ----------------------------------------------------------------------------------------------------------------
# Speed switches: each takes effect, and a step with it trains
# ----------------------------------------------------------------------------------------------------------------


def test_adamw_is_fused_and_a_step_trains(tmp_path: Path) -> None:
    _, c, batches = build_step(tmp_path)
    assert c.optimizer.defaults["fused"] is True  # one kernel for all parameters
    train_step(c, next(batches), 0)  # the warmup's first learning rate is 0
    before = [p.detach().clone() for p in c.unet.parameters()]
    train_step(c, next(batches), 1)
    assert all(torch.isfinite(p).all() for p in c.unet.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, c.unet.parameters(), strict=True))


def test_a_checkpoint_with_flat_parameters_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    # what the releases with --flat_parameters (on by default, and recorded as False when off) wrote in every manifest
    out = tmp_path / "flat"
    assert test_training.run_main(out, "--checkpointing_steps", "4") == 0
    manifest_path = out / "checkpoint-4" / checkpoints.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["flags"]["flat_parameters"] = True
    manifest_path.write_text(json.dumps(manifest))
    test_training.reset_accelerate()
    capsys.readouterr()
    assert test_training.run_main(out, "--max_train_steps", "6", "--resume_from_checkpoint", "latest") == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("error: --resume_from_checkpoint latest: ")
    assert "was saved by hf-ddpm 09c7a14 or earlier (--flat_parameters" in line and "does not resume" in line
    assert not (out / "checkpoint-6").exists()


def test_the_throughput_benchmark_runs_one_round(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--model_preset", "tiny"]
    command += ["--rounds", "1", "--steps_per_round", "1", "--warmup_steps", "1", "--output", str(tmp_path / "bench")]
    command += ["--switches", "ours", "ours + channels_last"]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["rounds"] == 1 and len(set(results["share_outside_quartiles_over_rounds"])) == 1


def test_channels_last_and_torch_compile_switches(tmp_path: Path) -> None:
    _, c, batches = build_step(tmp_path, "--channels_last", "--torch_compile")
    unet = c.accelerator.unwrap_model(c.unet)
    convolution = unet.down_blocks[0].resnets[0].conv1.weight  # [8 x 8 x 3 x 3]
    assert convolution.is_contiguous(memory_format=torch.channels_last) and not convolution.is_contiguous()
    assert unet._compiled_call_impl is not None  # compiled in place: the parameters keep their names
    assert all(not name.startswith("_orig_mod") for name, _ in unet.named_parameters())


# ----------------------------------------------------------------------------------------------------------------
# Lazily decoded data: the same batches as decoding up front, memory that does not grow with the dataset
# ----------------------------------------------------------------------------------------------------------------


def write_png_folder(folder: Path, num_images: int, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> None:
    """`num_images` random PNGs of `size` (height, width) in folder/train (an imagefolder with one split)."""
    (folder / "train").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    for i in range(num_images):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        PIL.Image.fromarray(pixels, mode).save(folder / "train" / f"{i:05d}.png", compress_level=0)


def test_lazy_batches_equal_the_batches_of_images_decoded_up_front(tmp_path: Path) -> None:
    import datasets

    write_png_folder(tmp_path / "images", 12, (10, 14))  # wider than tall: random crops along the width
    train = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "images"), cache_dir=str(tmp_path / "c"))
    train = train["train"]
    flags = argparse.Namespace(resolution=8, channels=3, center_crop=False, random_flip=True, seed=3)
    in_memory = data.ImageDataset(train, "image", flags, in_memory=True)
    lazy = data.ImageDataset(train, "image", flags)
    assert len(lazy) == len(in_memory) == 12
    for epoch in (0, 1):
        in_memory.set_epoch(epoch)
        lazy.set_epoch(epoch)
        batch = lazy.__getitems__([7, 0, 11, 3])
        assert batch.shape == (4, 3, 8, 8) and batch.dtype == torch.uint8
        assert torch.equal(batch, in_memory.__getitems__([7, 0, 11, 3]))
    lazy.set_epoch(0)
    first_epoch = lazy.__getitems__(list(range(12)))
    lazy.set_epoch(1)
    assert not torch.equal(first_epoch, lazy.__getitems__(list(range(12))))  # fresh crops and flips each epoch


def write_parquet_dataset(folder: Path, num_images: int, size: int, seed: int = 0, row_group_size: int = 100) -> None:
    """
    A local dataset of `num_images` random RGB PNGs (size x size), stored as bytes in parquet files of 500 images, in
    row groups of `row_group_size` images.
    """
    import datasets

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    features = datasets.Features({"image": datasets.Image()})
    for shard in range(0, num_images, 500):
        images = []
        for _ in range(min(500, num_images - shard)):
            png = io.BytesIO()
            PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                png, "PNG", compress_level=0
            )
            images.append({"bytes": png.getvalue(), "path": None})
        shard_dataset = datasets.Dataset.from_dict({"image": images}, features=features)
        shard_dataset.to_parquet(str(folder / f"train-{shard // 500:05d}.parquet"), batch_size=row_group_size)


def peak_anonymous_kib(tmp_path: Path, name: str, dataset: Path, *more_flags: str) -> int:
    """Train 3 steps on the dataset in a fresh process; its peak anonymous resident memory (KiB)."""
    flags = [*TINY, "--resolution", "64", "--channels", "3", "--max_train_steps", "3", "--dataset_name", str(dataset)]
    flags += ["--cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / name)]
    flags += ["--bpd_num_images", "8", "--eval_batch_size", "2", "--checkpointing_steps", "0", *more_flags]
    # glibc: one arena and a fixed mmap threshold, so freed tensors go back to the system at once and the peak is
    # what is alive (spread 2 MiB between runs, against 20 MiB with glibc's defaults)
    env = {**subprocess_env(), "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    command = [sys.executable, str(REPO / "benchmarks" / "peak_memory.py"), *flags]  # prints: peak_kib ANONYMOUS RSS
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split("peak_kib")[-1].split()[0])  # the peak anonymous resident memory


def test_peak_memory_does_not_grow_with_the_dataset(tmp_path: Path) -> None:
    # 3,000 vs 300 RGB images of 64x64: 36.9 MB vs 3.7 MB of decoded pixels (twice that while stacked, up front).
    # Parquet, a few files: an image folder adds what `datasets` spends listing each file (~2-8 kB a file here).
    import datasets

    for name, size, seed in (("large", 3000, 0), ("small", 300, 1)):
        write_parquet_dataset(tmp_path / name, size, 64, seed=seed)
        datasets.load_dataset(str(tmp_path / name), cache_dir=str(tmp_path / "cache"))  # the one-time Arrow cache
    small = peak_anonymous_kib(tmp_path, "small-run", tmp_path / "small")
    large = peak_anonymous_kib(tmp_path, "large-run", tmp_path / "large")
    assert abs(large - small) < 8 * 1024, f"peak memory {small} KiB (300 images) vs {large} KiB (3,000)"


def write_saved_dataset(folder: Path, num_images: int) -> None:
    """A `save_to_disk` folder of `num_images` copies of one 8x8 RGB PNG (no test split), in 100-image batches."""
    import datasets
    import pyarrow as pa

    png = io.BytesIO()
    PIL.Image.new("RGB", (8, 8), (200, 30, 90)).save(png, "PNG")
    images = pa.array([{"bytes": png.getvalue(), "path": None}] * num_images)
    table = pa.Table.from_arrays([images], schema=datasets.Features({"image": datasets.Image()}).arrow_schema)
    datasets.DatasetDict({"train": datasets.Dataset(table)}).save_to_disk(str(folder))


# What a run holds once its data is open and its first batch read: RssAnon, as read by the kernel (KiB)
DATA_MEMORY_PROBE = """
import sys
from hf_ddpm.training import data, parse_args
from hf_ddpm.training.loop import build_dataloader

args = parse_args(["--model_preset", "tiny", "--train_batch_size", "8", "--bpd_num_images", "16",
                   "--dataset_name", sys.argv[1], "--output_dir", sys.argv[2], "--logger", "none"])
dataset, _, _ = data.load_data(args)
next(iter(build_dataloader(args, dataset, 1)))
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("RssAnon")))
"""


def test_a_saved_dataset_costs_few_bytes_an_image_and_nothing_is_written_into_it(tmp_path: Path) -> None:
    # Issue 21: per image, the sampler's permutation as a Python list (36 bytes) and `train_test_split`'s indices
    # (in cache files it wrote into the dataset's own folder): 45 bytes an image here. What stays is `datasets`' own
    # index of the table's record batches (~20 bytes an image at 100 images a batch) and the training split's rows
    # and the epoch's order (8 bytes an image each): 29 here.
    env = {**subprocess_env(), "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    anonymous_kib = {}
    for num_images in (2_000, 250_000):
        folder = tmp_path / f"saved-{num_images}"
        write_saved_dataset(folder, num_images)
        before = sorted(path.name for path in folder.rglob("*"))
        command = [sys.executable, "-c", DATA_MEMORY_PROBE, str(folder), str(tmp_path / "out")]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        anonymous_kib[num_images] = int(result.stdout.split()[-1])
        assert sorted(path.name for path in folder.rglob("*")) == before  # nothing written into the dataset
    growth = (anonymous_kib[250_000] - anonymous_kib[2_000]) * 1024 / 248_000
    assert growth < 38, f"{growth:.0f} bytes an image ({anonymous_kib} KiB)"


# ----------------------------------------------------------------------------------------------------------------
# Exact resume on lazily decoded data: N steps straight == N/2 steps, kill -9, resume to N (bit for bit)
# ----------------------------------------------------------------------------------------------------------------


def test_kill_and_resume_on_an_image_folder_gives_bit_identical_weights(tmp_path: Path) -> None:
    write_png_folder(tmp_path / "images", 220, (9, 12), mode="L")  # random crops, flips, epochs crossed mid-run
    flags = [*RESUME_FLAGS, "--train_data_dir", str(tmp_path / "images"), "--cache_dir", str(tmp_path / "cache")]
    flags += ["--dataloader_num_workers", "1"]  # decoding in a worker process, as a large run would
    env = subprocess_env()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    subprocess.run(train_command(straight, *flags), env=env, check=True, capture_output=True, timeout=300)
    assert json.loads((straight / "training_args.json").read_text())["decoding"] == "lazy"

    kill_and_resume(straight, resumed, flags, env)
    assert json.loads((straight / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# Streaming (--streaming): a dataset read as a stream trains, splits across processes and resumes exactly
# ----------------------------------------------------------------------------------------------------------------


def test_streaming_run_trains_and_scores_the_first_images_of_the_test_split(tmp_path: Path) -> None:
    dataset = tmp_path / "parquet"
    write_parquet_dataset(dataset, 64, 10)  # train-00000.parquet
    write_parquet_dataset(tmp_path / "heldout", 12, 10, seed=1)
    (tmp_path / "heldout" / "train-00000.parquet").rename(dataset / "test-00000.parquet")
    out = tmp_path / "run"
    flags = ["--dataset_name", str(dataset), "--streaming", "--shuffle_buffer_size", "16", "--channels", "3"]
    flags += ["--bpd_num_images", "8", "--cache_dir", str(tmp_path / "cache")]
    result = subprocess.run(
        train_command(out, *flags, "--max_train_steps", "6"), env=subprocess_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "training_args.json").read_text())
    assert record["decoding"] == "streaming" and record["heldout_split"] == "first 8 of test"
    assert record["num_heldout_images"] == 8
    assert json.loads((out / "metrics.json").read_text())["bits_per_dim"]["value"] > 0
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list((tmp_path / "cache").rglob("*.arrow"))  # a stream: no Arrow copy in the datasets cache


def test_streaming_processes_read_disjoint_parts_of_the_stream(tmp_path: Path) -> None:
    import datasets

    write_parquet_dataset(tmp_path / "parquet", 24, 8)
    train = datasets.load_dataset(str(tmp_path / "parquet"), streaming=True)["train"]

    flags = argparse.Namespace(
        train_batch_size=4,
        resolution=8,
        channels=3,
        center_crop=False,
        random_flip=False,
        seed=5,
        shuffle_buffer_size=1000,
    )

    def pixels(rank: int, world_size: int) -> set[bytes]:
        stream = data.StreamingImageDataset(train, "image", flags, rank, world_size)
        stream.set_epoch(1)
        return {image.numpy().tobytes() for batch in stream for image in batch}

    whole = pixels(0, 1)
    assert len(whole) == 24
    first, second = pixels(0, 2), pixels(1, 2)
    assert len(first) == len(second) == 12 and first | second == whole


def test_kill_and_resume_of_a_streaming_run_gives_bit_identical_weights(tmp_path: Path) -> None:
    write_png_folder(tmp_path / "images", 220, (9, 12), mode="L")  # random crops, flips, epochs crossed mid-run
    flags = [*RESUME_FLAGS, "--train_data_dir", str(tmp_path / "images"), "--streaming"]
    flags += ["--shuffle_buffer_size", "64", "--dataloader_num_workers", "1"]  # decoding in a worker process
    env = subprocess_env()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    subprocess.run(train_command(straight, *flags), env=env, check=True, capture_output=True, timeout=300)
    record = json.loads((straight / "training_args.json").read_text())
    assert record["decoding"] == "streaming" and record["heldout_split"] is None  # no test split: bits/dim skipped

    kill_and_resume(straight, resumed, flags, env)


def test_streaming_peak_memory_does_not_grow_with_the_dataset(tmp_path: Path) -> None:
    # 3,000 vs 300 RGB PNGs of 64x64 (12 kB each) in files of 500, row groups of 25: both have at least the 10 row
    # groups the shuffle reads from at once, so both hold the same: 10 row groups and the 64-image buffer. (Before
    # resharding by row group, Arrow read each of up to 10 open files whole: 521 vs 596 MiB here.)
    for name, size, seed in (("large", 3000, 0), ("small", 300, 1)):
        write_parquet_dataset(tmp_path / name, size, 64, seed=seed, row_group_size=25)
    stream = ["--streaming", "--shuffle_buffer_size", "64"]
    small = peak_anonymous_kib(tmp_path, "small-run", tmp_path / "small", *stream)
    large = peak_anonymous_kib(tmp_path, "large-run", tmp_path / "large", *stream)
    assert abs(large - small) < 8 * 1024, f"peak memory {small} KiB (300 images) vs {large} KiB (3,000)"
    assert not list((tmp_path / "cache").rglob("*.arrow"))  # read as a stream, not converted to Arrow first


@pytest.mark.slow  # four processes started by accelerate launch: about a minute on two busy cores
def test_two_processes_streaming_unequal_shards_resume_exactly(tmp_path: Path) -> None:
    # two parquet shards of 40 and 24 images, one per process: 5 and 3 batches an epoch, so the processes are in
    # different epochs at the checkpoint, and each must resume at its own position
    dataset = tmp_path / "parquet"
    dataset.mkdir()
    for shard, size in enumerate((40, 24)):
        write_parquet_dataset(tmp_path / f"shard{shard}", size, 10, seed=shard)
        (tmp_path / f"shard{shard}" / "train-00000.parquet").rename(dataset / f"train-{shard:05d}.parquet")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    flags = ["--dataset_name", str(dataset), "--streaming", "--channels", "3", "--shuffle_buffer_size", "8"]
    flags += ["--train_batch_size", "8", "--max_train_steps", "10", "--checkpointing_steps", "8", "--random_flip"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    def train(output_dir: Path, *more: str) -> None:
        command = [*launcher, "--main_process_port", str(free_port()), str(REPO / "train.py"), *TINY]
        command += ["--output_dir", str(output_dir), *flags, *more]
        result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    train(straight)
    positions = torch.load(straight / "checkpoint-8" / "custom_checkpoint_0.pkl", weights_only=False)["positions"]
    assert positions[0] != positions[1]  # (epoch, batches in the epoch) of each process
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-8", resumed / "checkpoint-8")
    train(resumed, "--resume_from_checkpoint", "latest")
    assert tensors_equal(
        straight / "checkpoint-10" / "model.safetensors", resumed / "checkpoint-10" / "model.safetensors"
    )


STREAMING_BAD_FLAGS = {
    "digits": ([], "--streaming reads --dataset_name or --train_data_dir"),
    "epochs": (["--train_data_dir", ".", "--num_epochs", "2"], "--num_epochs needs the dataset's length"),
    "workers": (["--train_data_dir", ".", "--dataloader_num_workers", "2"], "--dataloader_num_workers must be 0"),
    "buffer": (["--train_data_dir", ".", "--shuffle_buffer_size", "0"], "--shuffle_buffer_size: must be at least 1"),
}


@pytest.mark.parametrize("case", list(STREAMING_BAD_FLAGS))
def test_bad_streaming_flags_exit_2_with_one_line(tmp_path: Path, capsys, case: str) -> None:
    from hf_ddpm.training import main

    flags, message = STREAMING_BAD_FLAGS[case]
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as exit_:
        main([*TINY, "--output_dir", str(out), "--streaming", *flags])
    assert exit_.value.code == 2
    error_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error_line
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# The GPU benchmark runs end to end (tiny, on the CPU)
# ----------------------------------------------------------------------------------------------------------------


def test_gpu_benchmark_runs_tiny_on_the_cpu(tmp_path: Path) -> None:
    output = tmp_path / "gpu_train"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_train.py"), "--tiny", "--output", str(output)],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.with_suffix(".json").read_text())
    assert set(results["loops"]) == {"ours", "plain"} and results["device"] == "cpu"
    for loop in results["loops"].values():
        assert loop["images_per_second"] > 0 and loop["flops_per_step"] > 0 and loop["mfu"] is None
    # the same UNet but for the variance channels: nearly the same FLOPs per step
    ours, plain = (results["loops"][name]["flops_per_step"] for name in ("ours", "plain"))
    assert 0.9 < ours / plain < 1.2
    assert results["sampling"]["num_samples"] == 4 and results["sampling"]["images_per_second"] > 0
    assert "| ours |" in result.stdout and "sampling: 4 images at 4 steps" in result.stdout
