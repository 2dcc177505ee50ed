# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
Train the digits classifier of `fd-digits` and save it as the asset that ships with hf_ddpm.

    python benchmarks/train_digits_classifier.py            # writes src/hf_ddpm/assets/digits_classifier.*

Seed 0 and one CPU thread give identical weights run to run on one machine (about a minute of CPU), not on every CPU:
the shipped asset reaches 180/180 held-out digits, a rerun on the project's shared CPU machine 179/180.
Prints the train and held-out test accuracy; the module docstring of hf_ddpm.evaluation.digits_classifier quotes them.
"""

import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file
from torch.nn import functional as F
from tqdm.auto import tqdm

from hf_ddpm._digits import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, load_digits
from hf_ddpm.evaluation.digits_classifier import CONFIG_PATH, WEIGHTS_PATH, DigitsClassifier, classify
from hf_ddpm.evaluation.frechet import to_unit_images
from hf_ddpm.files import atomic_save, atomic_write_text

ARCHITECTURE = {"channels": [32, 64], "feature_dim": 64, "image_size": 8, "num_classes": 10}  # DigitsClassifier's


def _shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to one pixel in each direction (zero fill): the augmentation of training."""
    padded = F.pad(images, (1, 1, 1, 1))
    size = images.shape[-1]
    offsets = torch.randint(0, 3, (images.shape[0], 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])


def train_digits_classifier(
    seed: int = 0, epochs: int = 60, batch_size: int = 64, learning_rate: float = 1e-3, weight_decay: float = 1e-4
) -> tuple[DigitsClassifier, dict]:
    """
    Train the classifier on the fixed training split of the digits, reproducibly for `seed`.

    Returns:
        `tuple`: the model (eval mode) and a report: the recipe, the split, and the train and test accuracies.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_images, train_labels = load_digits("train")
    test_images, test_labels = load_digits("test")
    x, y = to_unit_images(train_images), torch.from_numpy(train_labels)

    model = DigitsClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    model.train()
    for _ in tqdm(range(epochs), desc="training the digits classifier"):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(_shift(x[index], generator)), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval().requires_grad_(False)

    train_correct = int((classify(model, train_images)[1].argmax(axis=1) == train_labels).sum())
    test_correct = int((classify(model, test_images)[1].argmax(axis=1) == test_labels).sum())
    report = {
        "training": {
            "seed": seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "AdamW",
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "lr_schedule": "cosine",
            "augmentation": "random shifts of up to 1 pixel",
            "torch_version": torch.__version__,
        },
        "split": {
            "dataset": "sklearn.datasets.load_digits, uint8 = round(v * 255 / 16)",
            "method": "sklearn.model_selection.train_test_split, stratified by label",
            "test_size": DIGITS_TEST_FRACTION,
            "random_state": DIGITS_SPLIT_SEED,
            "num_train": len(train_labels),
            "num_test": len(test_labels),
        },
        "train_accuracy": train_correct / len(train_labels),
        "test_accuracy": test_correct / len(test_labels),
        "test_correct": test_correct,
    }
    return model, report


def save_asset(model: DigitsClassifier, report: dict, weights_path: str, config_path: str) -> None:
    """Save the weights as safetensors and, beside them, the architecture plus `report` (recipe, accuracy)."""
    os.makedirs(os.path.dirname(weights_path) or ".", exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    atomic_save(weights_path, lambda temporary: save_file(state, temporary, metadata={"format": "pt"}))
    atomic_write_text(
        config_path, json.dumps({"architecture": ARCHITECTURE, **report}, indent=2, sort_keys=True) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation, shuffling and augmentation")
    parser.add_argument("--epochs", type=int, default=60, help="passes over the 1,617 training images")
    parser.add_argument("--output_dir", default=None, help="where to write the asset (default: the package's assets)")
    args = parser.parse_args()

    torch.set_num_threads(1)  # the order of float reductions depends on the thread count: one thread, one result
    model, report = train_digits_classifier(seed=args.seed, epochs=args.epochs)
    weights_path, config_path = WEIGHTS_PATH, CONFIG_PATH
    if args.output_dir is not None:
        weights_path = os.path.join(args.output_dir, os.path.basename(WEIGHTS_PATH))
        config_path = os.path.join(args.output_dir, os.path.basename(CONFIG_PATH))
    save_asset(model, report, weights_path, config_path)
    print(
        f"train accuracy {report['train_accuracy']:.4f}, test accuracy {report['test_accuracy']:.4f}"
        f" ({report['test_correct']}/{report['split']['num_test']}); saved {weights_path} and {config_path}"
    )


if __name__ == "__main__":
    main()
