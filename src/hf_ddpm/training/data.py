# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Training data: the built-in digits, any Hugging Face image dataset, or a folder of images, read one way.

Images are served as whole uint8 batches [B x C x R x R], converted to the model's channels, the shorter side resized
to R, then cropped (center or random) and randomly flipped. Memory does not grow with the dataset beyond `datasets`'
own index of the Arrow table and the epoch's order (8 bytes an image): no Python object per image, nothing decoded
ahead (benchmarks/data_memory.py). The order, flips and crops are pure functions of (seed, epoch, image index): the
same on every process and data-loader worker, and after resuming. An image that cannot be decoded is skipped, with a
warning naming it.
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
    """scikit-learn's digits as a `datasets.DatasetDict`: "train" (1,617) and "test" (180) of `image` and `label`."""
    import datasets
    import PIL.Image

    pixels, labels = load_digits("all")  # [1797 x 8 x 8 x 1], [1797]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("0123456789"))})

    def split(index):
        images = [PIL.Image.fromarray(pixels[i, :, :, 0], mode="L") for i in index]
        return datasets.Dataset.from_dict({"image": images, "label": labels[index].tolist()}, features=features)

    train_index, test_index = digits_split_indices(labels)
    return datasets.DatasetDict({"train": split(train_index), "test": split(test_index)})


def load_data(args, rank: int = 0, world_size: int = 1):
    """
    The training images of `args` (with --streaming, this process's part of the stream), the held-out images
    [N x C x R x R] in [-1, 1] (or None) and a description of both for training_args.json.

    The held-out images are the first --bpd_num_images of the dataset's test/validation split; without one, of a fixed
    --heldout_fraction of the training split (`train_test_split(seed=0)`'s, whatever the run's seed), or none with
    --streaming (a stream cannot be split by index).
    """
    digits = args.dataset_name is None and args.train_data_dir is None
    if digits:
        splits = load_digits_dataset()
    else:
        source = {"data_dir": args.train_data_dir, "streaming": args.streaming}
        splits = open_dataset(args.dataset_name, args.dataset_config_name, args.cache_dir, **source)
    if "train" not in splits:
        raise UsageError(f"The dataset has no 'train' split (it has: {', '.join(splits)}).")
    train, rows = splits["train"], None  # rows: the training split's rows, in order; None: all of them
    column = find_image_column(train, args.image_column)
    heldout_name = next((name for name in HELDOUT_SPLITS if name in splits), None)
    heldout_x, num_skipped = None, 0
    if heldout_name is not None:
        heldout = splits[heldout_name].take(args.bpd_num_images)
    elif not args.streaming:
        heldout_rows, rows = split_rows(len(train), args.heldout_fraction)
        heldout = train.select(heldout_rows[: args.bpd_num_images], keep_in_memory=True)
        heldout_name = f"{args.heldout_fraction:.0%} of train"
    else:
        logger.info("--streaming: the dataset has no test or validation split: held-out bits/dim is skipped.")
    if heldout_name is not None:
        decoded, num_skipped = decode_images(heldout, column, args.resolution, args.channels)
        heldout_x = to_model_space(decoded) if len(decoded) else None
    if args.streaming:
        train = train if args.max_train_samples is None else train.take(args.max_train_samples)
        dataset = StreamingImageDataset(train, column, args, rank, world_size)
        heldout_name = heldout_name and f"first {0 if heldout_x is None else len(heldout_x)} of {heldout_name}"
    else:
        if args.max_train_samples is not None:
            rows = (np.arange(len(train)) if rows is None else rows)[: args.max_train_samples]
        dataset = ImageDataset(train, column, args, rows, in_memory=digits)  # the digits: 1.6k images of 8x8
        if len(dataset) == 0:
            raise UsageError("The training split has no image.")
    info = {
        "num_train_images": None if args.streaming else len(dataset),  # a stream's length is unknown until read
        "num_heldout_images": 0 if heldout_x is None else len(heldout_x),
        "heldout_split": heldout_name,
        "num_skipped_images": num_skipped,
        "image_column": column,
        "decoding": "streaming" if args.streaming else "in memory" if digits else "lazy",
    }
    return dataset, heldout_x, info


def split_rows(num_images: int, heldout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The held-out and training rows of `datasets.Dataset.train_test_split(heldout_fraction, seed=0)`."""
    if num_images < 2:
        raise UsageError(f"The dataset has {num_images} image(s): too few to hold some out for bits/dim.")
    permutation = np.random.default_rng(0).permutation(num_images)
    num_heldout = math.ceil(heldout_fraction * num_images)
    return permutation[:num_heldout], permutation[num_heldout:]


def decode_images(dataset, column: str, resolution: int, channels: int):
    """
    Every image of `dataset[column]` (a `datasets.Dataset` or `IterableDataset`), center-cropped to R x R; those that
    cannot be decoded are skipped with a warning. Returns the uint8 images [N x C x R x R] and the number skipped.
    """
    images, skipped = [], []
    for batch in dataset.with_format("arrow").iter(batch_size=256):
        for value in batch.column(column).to_pylist():
            try:
                images.append(decode_image(value, resolution, channels, center_crop=True))
            except DECODE_ERRORS as error:
                skipped.append(f"{_describe(value)}: {type(error).__name__}: {error}")
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
    return str(value["path"]) if isinstance(value, dict) and value.get("path") else "an image"


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


def augment(images: list[torch.Tensor], index: np.ndarray, args, epoch: int) -> torch.Tensor:
    """
    [B x C x R x R]: random R x R crops of the longer side of `images` (those already R x R as they are), flipped
    horizontally with probability 1/2 with --random_flip; a function of (--seed, epoch, the [B] image indices `index`).
    """
    crops = []
    for image, u in zip(images, _hash_uniform(args.seed, epoch, index, 1), strict=True):
        height, width = image.shape[-2:]
        offset = int(u * (max(height, width) - args.resolution + 1))
        if width > height:
            crops.append(image[:, : args.resolution, offset : offset + args.resolution])
        else:
            crops.append(image[:, offset : offset + args.resolution, : args.resolution])
    batch = torch.stack(crops)
    if args.random_flip:
        flip = torch.from_numpy(_hash_uniform(args.seed, epoch, index, 0) < 0.5).view(-1, 1, 1, 1)
        batch = torch.where(flip, batch.flip(-1), batch)
    return batch


class EpochShuffle(torch.utils.data.Sampler):
    """
    The indices 0..N-1 in an order that is a function of (seed, epoch), held as one int64 tensor (8 bytes an image,
    where `torch.utils.data.RandomSampler` makes the permutation a Python list: 36 bytes an image).
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
    The images of a `datasets.Dataset` (its `rows`, in this order; default: all) in batches of `EpochShuffle`'s
    indices (`__getitems__`), as `augment` makes them from --resolution, --channels, --center_crop, --random_flip and
    --seed of `args`. The images stay in the memory-mapped Arrow table and are decoded when their batch is read, so
    each process decodes only its own batches; `in_memory`: decoded once, up front (the digits). An image that cannot
    be decoded is replaced by the next readable one (a function of the index: resumed runs see the same batches).
    """

    def __init__(self, dataset, column: str, args, rows: np.ndarray | None = None, in_memory: bool = False):
        self.table = dataset.with_format("arrow")  # no `select_columns`: it copies `datasets`' index of the table
        self.column, self.args, self.rows, self.epoch = column, args, rows, 0
        self.unreadable: set[int] = set()
        self.decoded = self._decode(np.arange(len(self))) if in_memory else None

    def set_epoch(self, epoch: int) -> None:
        """The epoch's flips and crops (the data loader's workers receive it with the dataset)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.table) if self.rows is None else len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        index = np.asarray(indices, dtype=np.int64)
        images = [self.decoded[i] for i in index] if self.decoded is not None else self._decode(index)
        return augment(images, index, self.args, self.epoch)

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
                return decode_image(value, self.args.resolution, self.args.channels, self.args.center_crop)
            except DECODE_ERRORS as error:
                self.unreadable.add(candidate)
                logger.warning(
                    f"Skipped training image {candidate} ({_describe(value)}), which could not be read or decoded"
                    f" ({type(error).__name__}: {error}); the next readable image takes its place."
                )
        raise ValueError("No training image could be decoded.")


class StreamingImageDataset(torch.utils.data.IterableDataset):
    """
    A `datasets.IterableDataset` (`streaming=True`) served as `ImageDataset` serves a dataset, in batches of
    --train_batch_size decoded as they are read; the last, incomplete batch of an epoch is dropped.

    Each process reads its own part of the stream (`split_dataset_by_node`) in the order of `datasets`' seeded buffer
    shuffle (--shuffle_buffer_size images), reshuffled each epoch; the flips and crops use each example's place in
    the epoch's stream across processes as its index. Memory holds the buffer of undecoded images and at most the 10
    shards the shuffle reads from, a parquet dataset being resharded to one shard per row group (at most 100 MB).

    Exact resume: `skip_batches(n)` makes the next pass over the epoch skip its first n batches (read, not decoded).
    (`datasets`' own `IterableDataset.state_dict()` does not save the shuffle buffer: a resumed order would differ.)
    """

    def __init__(self, dataset, column: str, args, rank: int = 0, world_size: int = 1):
        import datasets
        from datasets.distributed import split_dataset_by_node

        stream = dataset.reshard().select_columns([column]).cast_column(column, datasets.Image(decode=False))
        stream = stream.shuffle(seed=args.seed, buffer_size=args.shuffle_buffer_size)
        self.stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.column, self.args, self.rank, self.world_size = column, args, rank, world_size
        self.epoch, self.batches_to_skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch's order, flips and crops (the data loader's worker receives them with the dataset)."""
        self.epoch = epoch
        self.stream.set_epoch(epoch)

    def skip_batches(self, num_batches: int) -> None:
        self.batches_to_skip = num_batches

    def __iter__(self):
        batch_size, batch, num_batches = self.args.train_batch_size, [], 0
        for example in self.stream:
            batch.append(example[self.column])
            if len(batch) < batch_size:
                continue
            if num_batches >= self.batches_to_skip:  # the batches before are read, not decoded (resume)
                index = np.arange(num_batches * batch_size, (num_batches + 1) * batch_size)
                yield self._decode_batch(index * self.world_size + self.rank, batch)
            batch, num_batches = [], num_batches + 1
        if num_batches == 0:
            raise ValueError(
                f"The training stream of process {self.rank} has fewer than --train_batch_size {batch_size} images:"
                " lower --train_batch_size."
            )

    def _decode_batch(self, index: np.ndarray, values: list) -> torch.Tensor:
        """
        [B x C x R x R]. An image that cannot be decoded is replaced by a readable one of its batch: batches stay a
        fixed number of stream examples, so that resuming can skip them undecoded.
        """
        images = [None] * len(values)
        for i, value in enumerate(values):
            try:
                images[i] = decode_image(value, self.args.resolution, self.args.channels, self.args.center_crop)
            except DECODE_ERRORS as error:
                logger.warning(
                    f"Skipped a training image ({_describe(value)}) that could not be read or decoded"
                    f" ({type(error).__name__}: {error}); another image of its batch takes its place."
                )
        readable = [image for image in images if image is not None]
        if not readable:
            raise ValueError(f"No image of a training batch ({len(values)} images in a row) could be decoded.")
        images = [image if image is not None else readable[i % len(readable)] for i, image in enumerate(images)]
        return augment(images, index, self.args, self.epoch)
