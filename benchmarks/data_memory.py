# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Peak memory of training against the size of the dataset, for each storage layout: none should grow with it.

Writes local datasets of random RGB PNGs (parquet files of encoded images in row groups, what a Hub image dataset is),
then trains `--steps` steps of the tiny UNet on each in a fresh process, for each path of `--paths`:

- lazy (`parquet`): the parquet files converted once to `datasets`' Arrow cache (before, timed apart), decoded as
  batches are read;
- save_to_disk: the same images as a `save_to_disk` folder of image bytes (written once from the Arrow cache),
  opened with `load_from_disk`, decoded as batches are read; no test split, so the held-out images are 10% of train;
- streaming: `--streaming`, the parquet files read as a stream (no cache), through the default 1,000-image shuffle
  buffer, which `datasets` feeds from up to 10 row groups at a time.

It reports each run's peak anonymous resident memory (sampled every millisecond: the memory decoded images would
take) and its peak RSS (`ru_maxrss`, which also counts the pages of memory-mapped files read so far; the kernel can
drop those at any time). The several-GB run of the README (~4 GB of decoded pixels; ~9 GB of disk with the Arrow
cache; about half an hour on two cores):

    python benchmarks/data_memory.py --num_images 2000 330000 --resolution 64 --workdir /tmp/data_memory \\
        --output benchmarks/results/data_memory

170,000 images of 64x64 RGB are 2.0 GB of decoded pixels (the case issue 16 measured at a 7.0 GB peak, decoding up
front); 330,000 are 4.1 GB. Issue 21's case (memory +179 MB from 2,000 to 170,000 rows of a `save_to_disk` folder),
with its training flags (`--steps 3 --train_batch_size 8`), on 16x16 PNGs of about 0.8 kB (a few minutes):

    python benchmarks/data_memory.py --num_images 2000 170000 --image_size 16 --steps 3 --train_batch_size 8 \\
        --paths lazy save_to_disk --output benchmarks/results/data_memory_layouts

Besides the peaks, the table gives the growth per image between the smallest and the largest dataset.
"""

import argparse
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import PIL.Image
from _results import write_results  # benchmarks/ is on sys.path: these run as scripts

PEAK_MEMORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_memory.py")  # the probe
PATHS = ("lazy", "save_to_disk", "streaming")


def parse_benchmark_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, nargs="+", default=[2000, 20000], help="Dataset sizes to compare.")
    parser.add_argument(
        "--paths", nargs="+", choices=PATHS, default=list(PATHS), help="Storage layouts and data paths to run."
    )
    parser.add_argument("--resolution", type=int, default=64, help="Training resolution.")
    parser.add_argument(
        "--image_size", type=int, default=None, help="Side of the stored images (default: resolution)."
    )
    parser.add_argument("--steps", type=int, default=20, help="Training steps on each dataset.")
    parser.add_argument("--train_batch_size", type=int, default=64, help="Training batch size.")
    parser.add_argument("--images_per_file", type=int, default=10000, help="Images per parquet file.")
    parser.add_argument("--row_group_size", type=int, default=100, help="Images per parquet row group.")
    parser.add_argument("--processes", type=int, default=2, help="Processes writing the parquet files.")
    parser.add_argument("--workdir", default="/tmp/hf_ddpm_data_memory", help="Where the datasets are written.")
    parser.add_argument("--output", default=None, help="Write OUTPUT.json and OUTPUT.md too.")
    bench = parser.parse_args()
    bench.image_size = bench.image_size or bench.resolution
    return bench


def write_parquet_file(path: str, num_images: int, size: int, row_group_size: int, seed: int) -> None:
    """`num_images` random RGB PNGs (uncompressed: as large as their pixels) in one parquet file `datasets` reads."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    pngs = []
    for _ in range(num_images):
        png = io.BytesIO()
        PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(png, "PNG", compress_level=0)
        pngs.append(png.getvalue())
    schema = datasets.Features({"image": datasets.Image()}).arrow_schema  # with `datasets`' feature metadata
    images = pa.StructArray.from_arrays(
        [pa.array(pngs, pa.binary()), pa.nulls(num_images, pa.string())], ["bytes", "path"]
    )
    pq.write_table(pa.Table.from_arrays([images], schema=schema), path + ".partial", row_group_size=row_group_size)
    os.replace(path + ".partial", path)


def write_dataset(bench: argparse.Namespace, folder: str, num_images: int) -> None:
    """The dataset's parquet files, written by `--processes` processes (a file already there is kept)."""
    os.makedirs(folder, exist_ok=True)
    starts = range(0, num_images, bench.images_per_file)
    with ProcessPoolExecutor(bench.processes) as pool:
        jobs = [
            pool.submit(
                write_parquet_file, path, min(bench.images_per_file, num_images - start), bench.image_size,
                bench.row_group_size, seed,
            )
            for seed, start in enumerate(starts)
            if not os.path.exists(path := os.path.join(folder, f"train-{seed:05d}-of-{len(starts):05d}.parquet"))
        ]  # fmt: skip
        for job in jobs:
            job.result()


def train_and_measure(bench: argparse.Namespace, path: str, dataset: str, output_dir: str) -> dict:
    flags = ["--model_preset", "tiny", "--resolution", str(bench.resolution), "--channels", "3", "--logger", "none"]
    flags += ["--dataset_name", dataset, "--cache_dir", os.path.join(bench.workdir, "cache"), "--output_dir"]
    flags += [output_dir, "--overwrite_output_dir", "--max_train_steps", str(bench.steps)]
    flags += ["--train_batch_size", str(bench.train_batch_size)]
    flags += ["--ddpm_num_steps", "100", "--ddpm_num_inference_steps", "4", "--eval_batch_size", "4"]
    flags += ["--bpd_num_images", "16", "--bpd_num_timesteps", "4", "--checkpointing_steps", "0"]
    flags += ["--streaming"] if path == "streaming" else []
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
        start = time.perf_counter()
        write_dataset(bench, folder, num_images)
        print(f"{num_images:,} images written in {time.perf_counter() - start:.0f} s", flush=True)
        on_disk = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
        for path in bench.paths:
            start = time.perf_counter()
            dataset = folder
            if path != "streaming":  # the one-time conversion to the Arrow cache (and save_to_disk), not measured
                loaded = datasets.load_dataset(folder, cache_dir=os.path.join(bench.workdir, "cache"))
                if path == "save_to_disk":
                    dataset = os.path.join(bench.workdir, f"saved-{num_images}")
                    if not os.path.isdir(dataset):
                        loaded.save_to_disk(dataset)
            conversion_seconds = time.perf_counter() - start
            run_dir = os.path.join(bench.workdir, f"run-{path}-{num_images}")
            measured = train_and_measure(bench, path, dataset, run_dir)
            rows.append({
                "path": path,
                "num_images": num_images,
                "decoded_gb": num_images * 3 * bench.image_size**2 / 1e9,
                "parquet_gb": on_disk / 1e9,
                "arrow_cache_seconds": conversion_seconds if path != "streaming" else None,
                **measured,
            })  # fmt: skip
            print(rows[-1], flush=True)
    for row in rows:  # the growth per image from the smallest dataset of the same path
        first = next(r for r in rows if r["path"] == row["path"])
        extra_images = row["num_images"] - first["num_images"]
        growth = (row["peak_anonymous_mib"] - first["peak_anonymous_mib"]) * 2**20
        row["growth_bytes_per_image"] = growth / extra_images if extra_images else None
    lines = [
        f"# Peak memory vs dataset size: {bench.steps} training steps of the tiny UNet, batch"
        f" {bench.train_batch_size}, {bench.image_size}x{bench.image_size} RGB PNGs trained at"
        f" {bench.resolution}x{bench.resolution}, one process",
        "",
        f"`{' '.join(['python', *sys.argv])}`",
        "",
        f"Parquet files of {bench.images_per_file:,} images in row groups of {bench.row_group_size}; streaming"
        " through the default 1,000-image shuffle buffer. The machine may be shared with other jobs (the peaks are"
        " memory, not time: sharing does not change them).",
        "",
        "| path | images | decoded pixels (GB) | parquet (GB) | peak anonymous memory (MiB) | growth per image"
        " (bytes) | peak RSS (MiB) | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        growth = "" if r["growth_bytes_per_image"] is None else f"{r['growth_bytes_per_image']:.0f}"
        lines.append(
            f"| {r['path']} | {r['num_images']:,} | {r['decoded_gb']:.2f} | {r['parquet_gb']:.2f} |"
            f" {r['peak_anonymous_mib']:.1f} | {growth} | {r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |"
        )
    report = "\n".join(lines)
    print(report)
    if bench.output:
        write_results(bench.output, {"command": " ".join(sys.argv), "rows": rows}, report)


if __name__ == "__main__":
    main()
