"""Benchmarks shared by `benchmarks/*.py` and `dgalign bench`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch
from torch import nn

from dgalign.errors import ConfigError, DGAlignError


class FixedFeatures(nn.Identity):
    """Identity featurizer on precomputed features (`n_outputs` as the real featurizers)."""

    def __init__(self, n_outputs: int) -> None:
        super().__init__()
        self.n_outputs = n_outputs


def use_fixed_features(algorithm: nn.Module, dim: int) -> None:
    """Swap `algorithm`'s featurizer for `FixedFeatures(dim)`; rebuild its network and optimizer."""
    algorithm.featurizer = FixedFeatures(dim)
    algorithm.network = nn.Sequential(algorithm.featurizer, algorithm.classifier)
    algorithm.optimizer = algorithm.make_optimizer()


def set_threads(threads: int) -> None:
    """torch's intra-op threads (0: leave the default); ConfigError if negative."""
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def script_main(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point of a `benchmarks/*.py` script: parse, run, errors as one line (exit 2)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except DGAlignError as exc:
        parser.exit(2, f"error: {exc}\n")
        return 2
