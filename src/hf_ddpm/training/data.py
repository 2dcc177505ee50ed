# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Training data: the built-in digits, any Hugging Face image dataset, or a folder of images, read one way.

`load_data` opens the dataset (`hf_ddpm._datasets.open_dataset`), picks the held-out images for bits/dim and serves
the training images as whole uint8 batches [B x C x R x R]: each image converted to the model's channels and resized
(shorter side to the resolution), then cropped (center or random) and randomly flipped.

- `ImageDataset`: the images stay in the `datasets` Arrow table on disk (memory-mapped) and are decoded as their batch
  is read, so each process of a data-parallel run decodes only its own batches. The built-in digits (1.6k images of
  8x8) are decoded once into memory instead.
- `StreamingImageDataset` (`--streaming`): the dataset is read as a stream (`datasets`' `streaming=True`: nothing
  downloaded or cached first), for datasets larger than the disk.

Memory does not grow with the dataset beyond what `datasets` itself keeps per Arrow record batch (about 2 kB per
batch of 100 images) and the epoch's order (`EpochShuffle`, 8 bytes an image): no Python object per image, no
indices mapping (`train_test_split` writes one into the dataset's own folder), nothing decoded ahead
(benchmarks/data_memory.py). The random order, flips and crops are pure functions of (seed, epoch, image index), not
of an RNG state: the same on every process and data-loader worker, and the same after resuming from a checkpoint.
An image that cannot be read or decoded is skipped, with a warning naming it.
"""

import logging
import math

import numpy as np
import torch

from .._datasets import DECODE_ERRORS, find_image_column, open_dataset
from .._datasets import decode_image as decode_array
from .._digits import digits_split_indices, load_digits
from .._errors import UsageError

logger = logging.getLogger(__name__)

HELDOUT_SPLITS = ("test", "validation", "valid", "val")


def load_digits_dataset():
    """
    scikit-learn's 1,797 handwritten digits as a `datasets.DatasetDict` with their fixed, stratified 10% "test" split
    (`hf_ddpm._digits`).

    Returns:
        `datasets.DatasetDict`: "train" (1,617) and "test" (180) splits with columns `image` (8x8 grayscale PIL
        images, pixel values round(v * 255 / 16) of the original 0..16 values) and `label` (0-9).
    """
    import datasets
    import PIL.Image

    pixels, labels = load_digits("all")  # [1797 x 8 x 8 x 1], [1797]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )

    def split(index):
        images = [PIL.Image.fromarray(pixels[i, :, :, 0], mode="L") for i in index]
        return datasets.Dataset.from_dict({"image": images, "label": labels[index].tolist()}, features=features)

    train_index, test_index = digits_split_indices(labels)
    return datasets.DatasetDict({"train": split(train_index), "test": split(test_index)})


def load_data(args, show_progress: bool = True, rank: int = 0, world_size: int = 1):
    """
    The training dataset of `args` (this process's part of it with --streaming), the held-out images for bits/dim
    and a description of both.

    The held-out images are the first --bpd_num_images of the dataset's test/validation split; without one, of a fixed
    --heldout_fraction of the training split (seed 0, independent of the run's seed: `train_test_split`'s split), or
    none with --streaming (a stream cannot be split by index).

    Returns:
        `tuple`: (an `ImageDataset` or `StreamingImageDataset`, the held-out images [N x C x R x R] in [-1, 1] or
        None, a dict describing the data for training_args.json).
    """
    if args.dataset_name is None and args.train_data_dir is None:
        splits = load_digits_dataset()
    else:
        source = {"data_dir": args.train_data_dir, "streaming": args.streaming}
        splits = open_dataset(args.dataset_name, args.dataset_config_name, args.cache_dir, **source)
    if "train" not in splits:
        raise UsageError(f"The dataset has no 'train' split (it has: {', '.join(splits)}).")
    train = splits["train"]
    column = find_image_column(train, args.image_column)
    rows = None  # the training split's rows, in the order of the split; None: all of them
    heldout_name = next((name for name in HELDOUT_SPLITS if name in splits), None)
    if heldout_name is not None:
        heldout = splits[heldout_name].take(args.bpd_num_images)
    elif not args.streaming:
        heldout_rows, rows = split_rows(len(train), args.heldout_fraction)
        heldout = train.select(heldout_rows[: args.bpd_num_images], keep_in_memory=True)
        heldout_name = f"{args.heldout_fraction:.0%} of train"
    if args.max_train_samples is not None and not args.streaming:
        rows = (np.arange(len(train)) if rows is None else rows)[: args.max_train_samples]

    heldout_x, num_skipped = None, 0
    if heldout_name is not None:
        decoded, num_skipped = decode_images(heldout, column, args.resolution, args.channels, show_progress)
        heldout_x = to_model_space(decoded) if len(decoded) else None
    elif args.streaming:
        logger.info("--streaming: the dataset has no test or validation split: held-out bits/dim is skipped.")
    augment = {"center_crop": args.center_crop, "random_flip": args.random_flip, "seed": args.seed}
    if args.streaming:
        if args.max_train_samples is not None:
            train = train.take(args.max_train_samples)
        stream = {"shuffle_buffer_size": args.shuffle_buffer_size, "rank": rank, "world_size": world_size}
        dataset = StreamingImageDataset(
            train, column, args.train_batch_size, args.resolution, args.channels, **augment, **stream
        )
        heldout_name = heldout_name and f"first {0 if heldout_x is None else len(heldout_x)} of {heldout_name}"
        decoding = "streaming"
    else:
        in_memory = args.dataset_name is None and args.train_data_dir is None  # the digits: 1.6k images of 8x8
        dataset = ImageDataset(
            train, column, args.resolution, args.channels, **augment, rows=rows, in_memory=in_memory
        )
        if len(dataset) == 0:
            raise UsageError("The training split has no image.")
        decoding = "in memory" if in_memory else "lazy"
    info = {
        "num_train_images": None if args.streaming else len(dataset),  # a stream's length is unknown until read
        "num_heldout_images": 0 if heldout_x is None else len(heldout_x),
        "heldout_split": heldout_name,
        "num_skipped_images": num_skipped,
        "image_column": column,
        "decoding": decoding,
    }
    return dataset, heldout_x, info


def split_rows(num_images: int, heldout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The held-out and training rows of `datasets.Dataset.train_test_split(heldout_fraction, seed=0)`."""
    if num_images < 2:
        raise UsageError(f"The dataset has {num_images} image(s): too few to hold some out for bits/dim.")
    permutation = np.random.default_rng(0).permutation(num_images)
    num_heldout = math.ceil(heldout_fraction * num_images)
    return permutation[:num_heldout], permutation[num_heldout:]


def decode_images(dataset, column: str, resolution: int, channels: int, show_progress: bool = False):
    """
    Decode every image of `dataset[column]` (a `datasets.Dataset` or `IterableDataset`) to `channels` channels, its
    shorter side resized to `resolution` and its center R x R kept. Unreadable images are skipped with a warning.

    Returns:
        `tuple`: (uint8 images [N x C x R x R], the number skipped).
    """
    from tqdm.auto import tqdm

    images, skipped = [], []
    progress = tqdm(desc="Decoding held-out images", disable=not show_progress, leave=False)
    for batch in dataset.with_format("arrow").iter(batch_size=256):
        for value in batch.column(column).to_pylist():
            try:
                images.append(decode_image(value, resolution, channels, center_crop=True))
            except DECODE_ERRORS as error:
                skipped.append(f"{_describe(value)}: {type(error).__name__}: {error}")
        progress.update(batch.num_rows)
    progress.close()
    if skipped:
        logger.warning(
            f"Skipped {len(skipped)} of {len(images) + len(skipped)} held-out images that could not be read or"
            f" decoded (first: {skipped[0]})."
        )
    return torch.stack(images) if images else torch.empty(0, channels, resolution, resolution), len(skipped)


def decode_image(value, resolution: int, channels: int, center_crop: bool) -> torch.Tensor:
    """One stored image (PIL image, {"bytes", "path"} dict or array) to a uint8 [C x H x W] tensor."""
    return torch.from_numpy(decode_array(value, channels, resolution, center_crop)).permute(2, 0, 1).contiguous()


def _describe(value) -> str:
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return "an image"


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """uint8 images [N x C x H x W] to float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def _hash_uniform(seed: int, epoch: int, indices: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) numbers from (seed, epoch, index, stream) through SplitMix64: no RNG state involved."""
    x = indices.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(
        (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % 2**63
    )
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def augment(images: list[torch.Tensor], index: np.ndarray, resolution: int, random_flip: bool, seed: int, epoch: int):
    """
    [B x C x R x R]: random R x R crops of the longer side of `images` (those already R x R as they are), flipped
    horizontally with probability 1/2 when `random_flip`; a function of (seed, epoch, the [B] image indices `index`).
    """
    crops = []
    for image, u in zip(images, _hash_uniform(seed, epoch, index, 1), strict=True):
        height, width = image.shape[-2:]
        offset = int(u * (max(height, width) - resolution + 1))
        if width > height:
            image = image[:, :resolution, offset : offset + resolution]
        else:
            image = image[:, offset : offset + resolution, :resolution]
        crops.append(image)
    batch = torch.stack(crops)
    if random_flip:
        flip = torch.from_numpy(_hash_uniform(seed, epoch, index, 0) < 0.5).view(-1, 1, 1, 1)
        batch = torch.where(flip, batch.flip(-1), batch)
    return batch


class EpochShuffle(torch.utils.data.Sampler):
    """
    The indices 0..N-1 in a random order that is a function of (seed, epoch). The order is one int64 tensor, read a
    chunk at a time: 8 bytes an image, where `torch.utils.data.RandomSampler` (and accelerate's seedable one) turn
    the whole permutation into a Python list (36 bytes an image).
    """

    def __init__(self, num_images: int, seed: int):
        self.num_images, self.seed, self.epoch = num_images, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_images

    def __iter__(self):
        order = torch.randperm(self.num_images, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        for chunk in order.split(4096):
            yield from chunk.tolist()


class ImageDataset(torch.utils.data.Dataset):
    """
    The images of a `datasets.Dataset`, served a batch at a time (`__getitems__`, with `EpochShuffle`'s indices):
    [B x C x R x R] uint8 tensors, decoded when their batch is read. An image that cannot be read or decoded is
    replaced by the next readable one (a function of the index only: resumed runs see the same batches), with a
    warning naming it.

    Args:
        dataset (`datasets.Dataset`): the dataset.
        column (`str`): its image column.
        resolution (`int`): the side R of the served images.
        channels (`int`): 1, 3 or 4.
        center_crop (`bool`): crop the center R x R after resizing (else random crops of the longer side).
        random_flip (`bool`): flip half the images horizontally, a fresh half each epoch.
        seed (`int`): the seed of the flips and crops.
        rows (`np.ndarray`, *optional*): the rows of `dataset` to serve, in this order (default: all).
        in_memory (`bool`): decode every image once, up front (small datasets: the digits).
    """

    def __init__(
        self,
        dataset,
        column: str,
        resolution: int,
        channels: int,
        center_crop: bool = False,
        random_flip: bool = False,
        seed: int = 0,
        rows: np.ndarray | None = None,
        in_memory: bool = False,
    ):
        self.table = dataset.with_format("arrow")  # no `select_columns`: it copies `datasets`' index of the table
        self.column, self.rows = column, rows
        self.resolution, self.channels, self.center_crop = resolution, channels, center_crop
        self.random_flip, self.seed, self.epoch = random_flip, seed, 0
        self.unreadable: set[int] = set()
        self.decoded = self._decode(np.arange(len(self))) if in_memory else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's flips and crops (the data loader's workers receive it with the dataset)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.table) if self.rows is None else len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        index = np.asarray(indices, dtype=np.int64)
        images = [self.decoded[i] for i in index] if self.decoded is not None else self._decode(index)
        return augment(images, index, self.resolution, self.random_flip, self.seed, self.epoch)

    def _values(self, index: np.ndarray) -> list:
        rows = index if self.rows is None else self.rows[index]
        return self.table[rows.tolist()].column(self.column).to_pylist()  # one read of the table for the batch

    def _decode(self, index: np.ndarray) -> list[torch.Tensor]:
        return [self._decode_readable(int(i), value) for i, value in zip(index, self._values(index), strict=True)]

    def _decode_readable(self, index: int, value) -> torch.Tensor:
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self.unreadable:
                continue
            if offset:
                value = self._values(np.array([candidate]))[0]
            try:
                return decode_image(value, self.resolution, self.channels, self.center_crop)
            except DECODE_ERRORS as error:
                self.unreadable.add(candidate)
                logger.warning(
                    f"Skipped training image {candidate} ({_describe(value)}), which could not be read or decoded"
                    f" ({type(error).__name__}: {error}); the next readable image takes its place."
                )
        raise ValueError("No training image could be decoded.")


class StreamingImageDataset(torch.utils.data.IterableDataset):
    """
    A `datasets.IterableDataset` (a stream: `streaming=True`) served as [B x C x R x R] uint8 batches, decoded as
    they are read. Memory holds the shuffle buffer of undecoded images and what `datasets` is reading: up to 10
    shards at a time feed the buffer, and a parquet dataset is resharded to one shard per row group, so that is at
    most 10 row groups (`datasets` writes row groups of at most 100 MB), whatever the size of the dataset or of its
    files.

    Each process reads its own part of the stream (`datasets.distributed.split_dataset_by_node`: whole shards when
    their number divides by the number of processes, else every process reads the stream and keeps every
    `world_size`-th example, decoding only those). The order is `datasets`' seeded buffer shuffle, reshuffled each
    epoch (`set_epoch`: seed + epoch), so the batches of an epoch are a function of (seed, epoch). The flips and crops
    are a pure function of (seed, epoch, index), index being the example's place in the epoch's stream across
    processes (position x world_size + rank), as in `ImageDataset`.

    Exact resume: `skip_batches(n)` makes the next pass over the epoch skip its first n batches of every process
    (read, not decoded: a batch is always `batch_size` examples of the stream). The position (epoch, batches) is the
    loop's `TrainingProgress`, saved in each checkpoint. `datasets`' own `IterableDataset.state_dict()` is not used:
    it does not save the shuffle buffer's content, so a resumed order would differ (datasets 5.2 refills the buffer
    from the saved source position, with a warning). The price of exactness: resuming mid-epoch reads the epoch's
    stream again up to the checkpoint (without decoding it).

    An image that cannot be read or decoded is replaced by a readable image of its batch, with a warning.

    Args:
        dataset (`datasets.IterableDataset`): the training stream.
        column (`str`): its image column.
        batch_size (`int`): images per batch (the last, incomplete batch of an epoch is dropped).
        resolution (`int`), channels (`int`), center_crop (`bool`), random_flip (`bool`): as for `ImageDataset`.
        seed (`int`): the seed of the shuffle, flips and crops.
        shuffle_buffer_size (`int`): images held in the shuffle buffer.
        rank (`int`), world_size (`int`): this process and the number of processes.
    """

    def __init__(
        self,
        dataset,
        column: str,
        batch_size: int,
        resolution: int,
        channels: int,
        center_crop: bool = False,
        random_flip: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int = 1000,
        rank: int = 0,
        world_size: int = 1,
    ):
        import datasets
        from datasets.distributed import split_dataset_by_node

        # One shard per parquet row group (`reshard`, which reads every file's footer once): Arrow's batch reader
        # reads a whole file ahead, and the shuffle feeds its buffer from up to 10 shards at once, so with whole
        # files as shards memory held up to 10 files (`push_to_hub` writes up to 500 MB each); now it is 10 row groups.
        stream = dataset.reshard().select_columns([column]).cast_column(column, datasets.Image(decode=False))
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        self.stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.column, self.batch_size, self.rank, self.world_size = column, batch_size, rank, world_size
        self.resolution, self.channels, self.center_crop = resolution, channels, center_crop
        self.random_flip, self.seed, self.epoch = random_flip, seed, 0
        self.batches_to_skip = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch's shuffle, flips and crops (the data loader's worker receives them with the dataset)."""
        self.epoch = epoch
        self.stream.set_epoch(epoch)

    def skip_batches(self, num_batches: int) -> None:
        """Make the next pass over the epoch start after its first `num_batches` batches (resume)."""
        self.batches_to_skip = num_batches

    def __iter__(self):
        batch, num_batches = [], 0
        for example in self.stream:
            batch.append(example[self.column])
            if len(batch) < self.batch_size:
                continue
            if num_batches >= self.batches_to_skip:  # the batches before are read, not decoded (resume)
                index = np.arange(num_batches * self.batch_size, (num_batches + 1) * self.batch_size)
                yield self._decode_batch(index * self.world_size + self.rank, batch)
            batch, num_batches = [], num_batches + 1
        if num_batches == 0:
            raise ValueError(
                f"The training stream of process {self.rank} has fewer than --train_batch_size {self.batch_size}"
                " images: lower --train_batch_size."
            )

    def _decode_batch(self, index: np.ndarray, values: list) -> torch.Tensor:
        """
        [B x C x R x R]. An image that cannot be read or decoded is replaced by a readable one of the same batch: the
        batches stay a fixed number of stream examples, so that resuming can skip them undecoded.
        """
        images = [None] * len(values)
        for i, value in enumerate(values):
            try:
                images[i] = decode_image(value, self.resolution, self.channels, self.center_crop)
            except DECODE_ERRORS as error:
                logger.warning(
                    f"Skipped a training image ({_describe(value)}) that could not be read or decoded"
                    f" ({type(error).__name__}: {error}); another image of its batch takes its place."
                )
        readable = [image for image in images if image is not None]
        if not readable:
            raise ValueError(f"No image of a training batch ({len(values)} images in a row) could be decoded.")
        images = [image if image is not None else readable[i % len(readable)] for i, image in enumerate(images)]
        return augment(images, index, self.resolution, self.random_flip, self.seed, self.epoch)
