# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Train a DDPM / Improved DDPM. Runs unchanged under each of:

    python train.py
    accelerate launch train.py
    accelerate launch --multi_gpu --num_processes 2 train.py

With no flags it trains on scikit-learn's handwritten digits on the CPU. `python train.py --help` lists the flags;
`hf-ddpm train` is the same entry.
"""

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a CPU shared with other jobs, spinning
# threads made a step of the digits UNet 4-20x slower (1-5 s instead of 0.3 s, measured on 2 loaded cores); when the
# CPU is free, a second thread still helps. An explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hf_ddpm.training import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
