# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""
Train the digits classifier of `fd-digits` and save it as the asset that ships with hf_ddpm.

    python benchmarks/train_digits_classifier.py            # writes src/hf_ddpm/assets/digits_classifier.*

Reproducible: seed 0 and one CPU thread give the same weights on the same torch version (about a minute of CPU).
Prints the train and held-out test accuracy; the module docstring of hf_ddpm.evaluation.digits_classifier quotes them.
"""

import argparse
import os

import torch

from hf_ddpm.evaluation.digits_classifier import CONFIG_PATH, WEIGHTS_PATH, train_digits_classifier


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
    model.save_asset(report, weights_path=weights_path, config_path=config_path)
    print(
        f"train accuracy {report['train_accuracy']:.4f}, test accuracy {report['test_accuracy']:.4f}"
        f" ({report['test_correct']}/{report['split']['num_test']}); saved {weights_path} and {config_path}"
    )


if __name__ == "__main__":
    main()
