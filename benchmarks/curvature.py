"""Step time and peak memory of ERM, HGP, Hutchinson, HessianDiag and CMA (full, gram).

Usage: python benchmarks/curvature.py [--steps N] [--warmup N] [--device cpu|cuda|auto]
                                      [--cases a,b] [--quick]
The same as `dgalign bench curvature`; the logic lives in `dgalign.bench.curvature`.
"""

import sys

from dgalign.bench.curvature import main

if __name__ == "__main__":
    sys.exit(main())
