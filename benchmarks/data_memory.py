# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Peak memory of training against the size of the dataset: lazily decoded data should not grow with it.

Writes local datasets of random RGB PNGs (parquet shards of encoded images, what a Hub image dataset is), converts
each once to `datasets`' Arrow cache, then trains `--steps` steps of the tiny UNet on each in a fresh process and
reports that process's peak anonymous resident memory (sampled every millisecond: the memory decoded images would
take) and its peak RSS (`ru_maxrss`, which also counts the pages of the memory-mapped Arrow files read so far; the
kernel can drop those at any time).

    python benchmarks/data_memory.py --num_images 2000 170000 --resolution 64 --workdir /tmp/data_memory \\
        --output benchmarks/results/data_memory

170,000 images of 64x64 RGB are 2.0 GB of decoded pixels (the case issue 16 measured at a 7.0 GB peak).
"""

import argparse
import io
import os
import subprocess
import sys
import time

import numpy as np
import PIL.Image
from _results import write_results  # benchmarks/ is on sys.path: these run as scripts

PEAK_MEMORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_memory.py")  # the probe


def parse_benchmark_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, nargs="+", default=[2000, 20000], help="Dataset sizes to compare.")
    parser.add_argument("--resolution", type=int, default=64, help="Image side (the images are stored at it).")
    parser.add_argument("--steps", type=int, default=20, help="Training steps on each dataset.")
    parser.add_argument("--workdir", default="/tmp/hf_ddpm_data_memory", help="Where the datasets are written.")
    parser.add_argument("--output", default=None, help="Write OUTPUT.json and OUTPUT.md too.")
    return parser.parse_args()


def write_dataset(folder: str, num_images: int, size: int, shard_size: int = 5000) -> None:
    import datasets

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image()})
    for shard, start in enumerate(range(0, num_images, shard_size)):
        images = []
        for _ in range(min(shard_size, num_images - start)):
            png = io.BytesIO()
            PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                png, "PNG", compress_level=0
            )
            images.append({"bytes": png.getvalue(), "path": None})
        part = datasets.Dataset.from_dict({"image": images}, features=features)
        part.to_parquet(os.path.join(folder, f"train-{shard:05d}.parquet"), batch_size=500)


def train_and_measure(bench: argparse.Namespace, dataset: str, output_dir: str) -> dict:
    flags = ["--model_preset", "tiny", "--resolution", str(bench.resolution), "--channels", "3", "--logger", "none"]
    flags += ["--dataset_name", dataset, "--cache_dir", os.path.join(bench.workdir, "cache"), "--output_dir"]
    flags += [output_dir, "--overwrite_output_dir", "--max_train_steps", str(bench.steps), "--train_batch_size", "64"]
    flags += ["--ddpm_num_steps", "100", "--ddpm_num_inference_steps", "4", "--eval_batch_size", "4"]
    flags += ["--bpd_num_images", "16", "--bpd_num_timesteps", "4", "--checkpointing_steps", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, PEAK_MEMORY, *flags], env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    anonymous_kib, rss_kib = (int(v) for v in result.stdout.split("peak_kib")[-1].split())
    return {"peak_anonymous_mib": anonymous_kib / 1024, "peak_rss_mib": rss_kib / 1024,
            "seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    bench = parse_benchmark_args()
    import datasets

    rows = []
    for num_images in bench.num_images:
        folder = os.path.join(bench.workdir, f"images-{num_images}")
        if not os.path.isdir(folder):
            write_dataset(folder, num_images, bench.resolution)
        datasets.load_dataset(folder, cache_dir=os.path.join(bench.workdir, "cache"))  # the one-time Arrow cache
        on_disk = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
        measured = train_and_measure(bench, folder, os.path.join(bench.workdir, f"run-{num_images}"))
        rows.append({
            "num_images": num_images,
            "decoded_gb": num_images * 3 * bench.resolution**2 / 1e9,
            "parquet_gb": on_disk / 1e9,
            **measured,
        })  # fmt: skip
        print(rows[-1], flush=True)
    lines = [
        f"# Peak memory vs dataset size: {bench.steps} training steps of the tiny UNet, batch 64,"
        f" {bench.resolution}x{bench.resolution} RGB, one process",
        "",
        "| images | decoded pixels (GB) | parquet (GB) | peak anonymous memory (MiB) | peak RSS (MiB) | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_images']:,} | {r['decoded_gb']:.2f} | {r['parquet_gb']:.2f} | {r['peak_anonymous_mib']:.0f} |"
            f" {r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |"
        )
    report = "\n".join(lines)
    print(report)
    if bench.output:
        write_results(bench.output, {"command": " ".join(sys.argv), "rows": rows}, report)


if __name__ == "__main__":
    main()
