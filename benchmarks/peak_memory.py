# Copyright 2026 The hf-ddpm developers. Licensed under the Apache License, Version 2.0.
"""Train with the given flags in this process and print its peak memory: `peak_kib ANONYMOUS MAXRSS` (KiB).

ANONYMOUS is the peak anonymous resident memory, sampled every millisecond: what decoded images take. (RSS also
counts the pages of the memory-mapped Arrow files read so far, which the kernel can drop at any time.) MAXRSS is
`ru_maxrss`. Run in a fresh process by benchmarks/data_memory.py and tests/test_training_scale.py:

    python benchmarks/peak_memory.py --dataset_name DATASET --max_train_steps 3 ...
"""

import os
import resource
import sys
import threading
import time

from hf_ddpm.training import main


def train_and_print_peak(argv: list[str]) -> int:
    """`hf_ddpm.training.main(argv)` with its peak memory sampled meanwhile, then printed; returns its exit code."""
    page, peak, done = os.sysconf("SC_PAGE_SIZE"), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            with open("/proc/self/statm") as f:
                resident, shared = (int(v) for v in f.read().split()[1:3])
            peak[0] = max(peak[0], (resident - shared) * page // 1024)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = main(argv)
    done.set()
    sampler.join()
    print("peak_kib", peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return code


if __name__ == "__main__":
    sys.exit(train_and_print_peak(sys.argv[1:]))
