"""Training-step cost of the Colored MNIST rows against ERM and a preallocated-GEMM bound.

Usage: python benchmarks/cmnist_step.py [--methods M ...] [--restarts R] [--rows N]
                                        [--repeats K] [--threads T] [--device cpu|cuda|auto]
The same as `dgalign bench cmnist-step`; the logic lives in `dgalign.bench.cmnist_step`.
"""

import sys

from dgalign.bench.cmnist_step import main

if __name__ == "__main__":
    sys.exit(main())
