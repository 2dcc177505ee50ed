# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Train a DDPM / Improved DDPM. Runs unchanged under each of:

    python train.py
    accelerate launch train.py
    accelerate launch --multi_gpu --num_processes 2 train.py

With no flags it trains on scikit-learn's handwritten digits on the CPU. `python train.py --help` lists the flags;
`hf-ddpm train` is the same entry.
"""

from hf_ddpm.training import main

if __name__ == "__main__":
    raise SystemExit(main())
