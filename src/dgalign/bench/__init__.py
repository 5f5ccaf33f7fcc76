"""Benchmarks shared by `benchmarks/*.py` and `dgalign bench`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch
from torch import nn

from dgalign.errors import ConfigError, DGAlignError
from dgalign.utils.runtime import keep_freed_memory


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


def build_penalised(
    name: str,
    hparams: dict,
    input_shape: tuple[int, ...],
    num_classes: int,
    num_domains: int,
    device: torch.device,
    feature_dim: int | None = None,
) -> nn.Module:
    """Algorithm `name` with `hparams` and its penalty on from step 0 (`penalty_anneal_iters`
    0 where it has one), on `device`. With `feature_dim` d it is built on an MLP featurizer of
    width d (so the head and any budget check see d), then given `FixedFeatures(d)`."""
    from dgalign import algorithms

    hparams = dict(hparams)
    if "penalty_anneal_iters" in hparams:
        hparams["penalty_anneal_iters"] = 0
    if feature_dim is not None:
        hparams.update(backbone="mlp", mlp_width=feature_dim, mlp_depth=2, mlp_dropout=0.0)
    algorithm = algorithms.get(name)(input_shape, num_classes, num_domains, hparams)
    if feature_dim is not None:
        use_fixed_features(algorithm, feature_dim)
    return algorithm.to(device)


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
    """Entry point of a `benchmarks/*.py` script: parse, run, errors as one line (exit 2).
    Freed host memory is kept for reuse, as under the `dgalign` command."""
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except DGAlignError as exc:
        parser.exit(2, f"error: {exc}\n")
        return 2
