# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Training data: the built-in digits, any Hugging Face image dataset, or a folder of images.

Every image is converted to the model's channels, resized (shorter side to the resolution) and, with `--center_crop`,
cropped, into a uint8 tensor. The built-in digits (1.6k images of 8x8) are decoded once and held in memory
(`ImageDataset`). Every other dataset is decoded as its batches are read (`LazyImageDataset`): the images stay in the
`datasets` Arrow table on disk (memory-mapped; an image folder holds only the file paths), so memory does not grow
with the dataset, and each process of a data-parallel run reads only its own batches. An image that cannot be read
or decoded is skipped: the next readable image of the dataset takes its place, with a warning. With `--streaming`,
the dataset is read as a stream (`datasets`' `streaming=True`: nothing downloaded or cached first) and decoded as it
is read (`StreamingImageDataset`), so datasets larger than the disk train.

The random augmentations (flip, crop offset) are a pure function of (seed, epoch, image index), not of an RNG state:
the same on every process and data-loader worker, and the same after resuming from a checkpoint.
"""

import logging
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .._datasets import DECODE_ERRORS, find_image_column, open_dataset  # noqa: F401 (loop reads the column here)
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

    pixels, labels = load_digits("all")  # [1797 x 8 x 8 x 1], [1797]
    train_index, test_index = digits_split_indices(labels)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )

    def split(index):
        images = [PIL.Image.fromarray(pixels[i, :, :, 0], mode="L") for i in index]
        return datasets.Dataset.from_dict({"image": images, "label": labels[index].tolist()}, features=features)

    return datasets.DatasetDict({"train": split(train_index), "test": split(test_index)})


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    cache_dir: str | None = None,
):
    """The dataset as a `datasets.DatasetDict`: a Hub name or local path, an imagefolder, or (neither) the digits."""
    import datasets

    if train_data_dir is not None:
        return datasets.load_dataset("imagefolder", data_dir=train_data_dir, cache_dir=cache_dir)
    if dataset_name is None:
        return load_digits_dataset()
    return open_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)


def split_train_heldout(dataset_dict, heldout_fraction: float = 0.1):
    """
    The training split and a held-out split for bits/dim: the dataset's test/validation split when it has one, else a
    fixed `heldout_fraction` of its training split (seed 0, independent of the run's seed).

    Returns:
        `tuple`: (train `datasets.Dataset`, held-out `datasets.Dataset`, a description of the held-out split).
    """
    if "train" not in dataset_dict:
        raise UsageError(f"The dataset has no 'train' split (it has: {', '.join(dataset_dict)}).")
    train = dataset_dict["train"]
    for name in HELDOUT_SPLITS:
        if name in dataset_dict:
            return train, dataset_dict[name], name
    if len(train) < 2:
        raise UsageError(f"The dataset has {len(train)} image(s): too few to hold some out for bits/dim.")
    parts = train.train_test_split(test_size=heldout_fraction, seed=0, shuffle=True)
    return parts["train"], parts["test"], f"{heldout_fraction:.0%} of train"


@dataclass
class DecodedImages:
    """Images decoded to uint8 tensors: one [N x C x H x W] tensor, or a list of [C x H x W] when sizes differ."""

    images: torch.Tensor | list[torch.Tensor]
    num_skipped: int
    first_error: str | None = None

    def __len__(self) -> int:
        return len(self.images)


def decode_images(
    dataset,
    column: str,
    resolution: int,
    channels: int,
    center_crop: bool,
    desc: str = "Decoding images",
    show_progress: bool = True,
) -> DecodedImages:
    """
    Decode every image of `dataset[column]`, convert it to `channels` channels, resize its shorter side to
    `resolution` and, with `center_crop`, crop the center. Unreadable or undecodable images are skipped.

    Returns:
        [`DecodedImages`]: uint8 images and the number skipped (with the first error, for the warning).
    """
    dataset = undecoded_column(dataset, column)
    images, num_skipped, first_error = [], 0, None
    progress = tqdm(total=len(dataset), desc=desc, disable=not show_progress, leave=False)
    for batch in dataset.iter(batch_size=256):
        for value in column_values(batch, column):
            try:
                images.append(decode_image(value, resolution, channels, center_crop))
            except DECODE_ERRORS as error:
                num_skipped += 1
                first_error = first_error or f"{_describe(value)}: {type(error).__name__}: {error}"
        progress.update(batch.num_rows)
    progress.close()
    if images and all(image.shape == images[0].shape for image in images):
        return DecodedImages(torch.stack(images), num_skipped, first_error)
    return DecodedImages(images, num_skipped, first_error)


def undecoded_column(dataset, column: str):
    """
    `dataset`'s `column`, read as stored (an image as a {"bytes", "path"} dict): we decode the images ourselves.
    Through the Arrow format, not `cast_column(Image(decode=False))`: a cast reads the whole memory-mapped table,
    bringing every stored image into resident memory.
    """
    return dataset.select_columns([column]).with_format("arrow")


def column_values(table, column: str) -> list:
    """The values of `column` of an Arrow table (a batch read from `undecoded_column`) as Python objects."""
    return table.column(column).to_pylist()


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


class ImageDataset(torch.utils.data.Dataset):
    """
    Decoded uint8 images, served a batch at a time (`__getitems__`): [B x C x R x R] uint8 tensors.

    Args:
        images ([`DecodedImages`] or `torch.Tensor`): the decoded images.
        resolution (`int`): the side R of the served images (random crops of larger ones).
        random_flip (`bool`): flip half the images horizontally, a fresh half each epoch.
        seed (`int`): the seed of the flips and crops.
    """

    def __init__(self, images, resolution: int, random_flip: bool = False, seed: int = 0):
        self.images = images.images if isinstance(images, DecodedImages) else images
        self.resolution = resolution
        self.random_flip = random_flip
        self.seed = seed
        self.epoch = 0
        self._square = isinstance(self.images, torch.Tensor) and self.images.shape[-2:] == (resolution, resolution)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's flips and crops (the data loader's workers receive it with the dataset)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        index = np.asarray(indices, dtype=np.int64)
        if self._square:
            batch = self.images[torch.from_numpy(index)]
        else:
            batch = self._crop_batch(index, [self.images[i] for i in index])
        return self._flip_batch(index, batch)

    def augment(self, index: np.ndarray, images: list[torch.Tensor]) -> torch.Tensor:
        """[B x C x R x R]: the crops and flips of the images at `index` ([B]) this epoch."""
        return self._flip_batch(index, self._crop_batch(index, images))

    def _crop_batch(self, index: np.ndarray, images: list[torch.Tensor]) -> torch.Tensor:
        """[B x C x R x R]: the images as they are when square, else random R x R crops of their longer side."""
        offsets = self._uniform(index, 1)
        return torch.stack([self._random_crop(image, u) for image, u in zip(images, offsets, strict=True)])

    def _flip_batch(self, index: np.ndarray, batch: torch.Tensor) -> torch.Tensor:
        if self.random_flip:
            flip = torch.from_numpy(self._uniform(index, 0) < 0.5).view(-1, 1, 1, 1)
            batch = torch.where(flip, batch.flip(-1), batch)
        return batch

    def _uniform(self, index: np.ndarray, stream: int) -> np.ndarray:
        return _hash_uniform(self.seed, self.epoch, index, stream)

    def _random_crop(self, image: torch.Tensor, u: float) -> torch.Tensor:
        height, width = image.shape[-2:]
        if (height, width) == (self.resolution, self.resolution):
            return image
        offset = int(u * (max(height, width) - self.resolution + 1))
        if width > height:
            return image[:, : self.resolution, offset : offset + self.resolution]
        return image[:, offset : offset + self.resolution, : self.resolution]


class LazyImageDataset(ImageDataset):
    """
    The images of a `datasets.Dataset`, decoded when a batch is read: [B x C x R x R] uint8 tensors, the same
    batches (decoding, crops and flips) that an `ImageDataset` of the decoded images would serve.

    Memory does not grow with the dataset: the Arrow table stays on disk, memory-mapped. An image that cannot be
    read or decoded is replaced by the next readable one (a function of the index only, so resumed runs see the same
    batches), with a warning naming it.

    Args:
        dataset (`datasets.Dataset`): the training split.
        column (`str`): its image column.
        resolution (`int`): the side R of the served images.
        channels (`int`): 1, 3 or 4.
        center_crop (`bool`): crop the center R x R after resizing (else random crops of the longer side).
        random_flip (`bool`): flip half the images horizontally, a fresh half each epoch.
        seed (`int`): the seed of the flips and crops.
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
    ):
        self.dataset = undecoded_column(dataset, column)
        self.column = column
        self.channels = channels
        self.center_crop = center_crop
        self.resolution = resolution
        self.random_flip = random_flip
        self.seed = seed
        self.epoch = 0
        self._unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        index = np.asarray(indices, dtype=np.int64)
        values = column_values(self.dataset[index.tolist()], self.column)  # one read of the table for the batch
        images = [self._decode(int(i), value) for i, value in zip(index, values, strict=True)]
        return self.augment(index, images)

    def _decode(self, index: int, value) -> torch.Tensor:
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self._unreadable:
                continue
            if offset:
                value = column_values(self.dataset[candidate], self.column)[0]
            try:
                return decode_image(value, self.resolution, self.channels, self.center_crop)
            except DECODE_ERRORS as error:
                self._unreadable.add(candidate)
                logger.warning(
                    f"Skipped training image {candidate} ({_describe(value)}), which could not be read or decoded"
                    f" ({type(error).__name__}: {error}); the next readable image takes its place."
                )
        raise ValueError("No training image could be decoded.")


def load_streaming_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    cache_dir: str | None = None,
):
    """
    The dataset as a `datasets.IterableDatasetDict` read as a stream (`streaming=True`): nothing is downloaded or
    cached up front, so datasets larger than the disk train. A Hub name or local path, or an imagefolder.
    """
    import datasets

    if train_data_dir is not None:
        return datasets.load_dataset("imagefolder", data_dir=train_data_dir, cache_dir=cache_dir, streaming=True)
    loaded = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, streaming=True)
    if isinstance(loaded, datasets.IterableDataset):
        loaded = datasets.IterableDatasetDict({"train": loaded})
    return loaded


def split_train_heldout_stream(dataset_dict, num_heldout: int):
    """
    The training stream and the first `num_heldout` examples of the dataset's test/validation split, when it has one.
    A stream cannot be split by index, so a dataset without such a split has no held-out images (bits/dim is skipped).

    Returns:
        `tuple`: (train `datasets.IterableDataset`, held-out `datasets.Dataset` or None, a description or None).
    """
    import datasets

    if "train" not in dataset_dict:
        raise UsageError(f"The dataset has no 'train' split (it has: {', '.join(dataset_dict)}).")
    for name in HELDOUT_SPLITS:
        if name in dataset_dict:
            heldout = dataset_dict[name].take(num_heldout)
            heldout = datasets.Dataset.from_list(list(heldout), features=dataset_dict[name].features)
            return dataset_dict["train"], heldout, f"first {len(heldout)} of {name}"
    return dataset_dict["train"], None, None


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
        resolution (`int`): the side R of the served images.
        channels (`int`): 1, 3 or 4.
        center_crop (`bool`): crop the center R x R after resizing (else random crops of the longer side).
        random_flip (`bool`): flip half the images horizontally, a fresh half each epoch.
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
        self.column = column
        self.batch_size = batch_size
        self.channels = channels
        self.center_crop = center_crop
        self.rank, self.world_size = rank, world_size
        # the augmentations of `ImageDataset`, indexed by the place in the stream
        self.augmentations = ImageDataset(torch.empty(0), resolution, random_flip=random_flip, seed=seed)
        self.epoch = 0
        self.batches_to_skip = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch's shuffle, flips and crops (the data loader's worker receives them with the dataset)."""
        self.epoch = epoch
        self.augmentations.set_epoch(epoch)
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
                images[i] = decode_image(value, self.augmentations.resolution, self.channels, self.center_crop)
            except DECODE_ERRORS as error:
                logger.warning(
                    f"Skipped a training image ({_describe(value)}) that could not be read or decoded"
                    f" ({type(error).__name__}: {error}); another image of its batch takes its place."
                )
        readable = [image for image in images if image is not None]
        if not readable:
            raise ValueError(f"No image of a training batch ({len(values)} images in a row) could be decoded.")
        images = [image if image is not None else readable[i % len(readable)] for i, image in enumerate(images)]
        return self.augmentations.augment(index, images)


def identity_collate(batch: torch.Tensor) -> torch.Tensor:
    """The dataset already returns whole batches (`__getitems__`)."""
    return batch
