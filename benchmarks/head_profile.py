"""Where a closed-form head kernel's time goes: torch.profiler over its forward and backward.

Usage: python benchmarks/head_profile.py [--kernels K ...] [--rows N] [--width D] [--domains E]
                                         [--calls C] [--warmup W] [--top T] [--threads T]
The same as `dgalign bench head-profile`; the logic lives in `dgalign.bench.head_profile`.
"""

import sys

from dgalign.bench.head_profile import main

if __name__ == "__main__":
    sys.exit(main())
