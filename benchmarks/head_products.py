"""The matrix products that bound the closed-form head kernels, timed side by side.

Usage: python benchmarks/head_products.py [--rows N] [--width D] [--chunk-rows R ...]
                                          [--repeats K] [--threads T] [--device cpu|cuda|auto]
The same as `dgalign bench head-products`; the logic lives in `dgalign.bench.head_products`.
"""

import sys

from dgalign.bench.head_products import main

if __name__ == "__main__":
    sys.exit(main())
