"""Rebuild a saved run's algorithm, its data and its weights for the analyses.

Sources of weights: a finished run directory (`model.pt`, or `model_swa.pt` for its weight
average), a model file in that format, or a `checkpoint.pt` (a copy taken during training
gives a point of the optimisation path; its SWA average when the run used `--swa`). Every file
is read with `torch.load(weights_only=True)`: loading never executes code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dgalign import algorithms
from dgalign.algorithms import Algorithm
from dgalign.algorithms.spaces import resolve_hparams
from dgalign.data import MultipleEnvironmentDataset, get_dataset_class
from dgalign.data.splits import Subset, split_environment
from dgalign.errors import RunDirError
from dgalign.runs.directory import RunDirectory
from dgalign.train.state import CHECKPOINT_FORMAT, rng_state, set_rng_state
from dgalign.train.swa import CHECKPOINT_KEY
from dgalign.utils.io import digest_path, read_verified_torch
from dgalign.utils.runtime import seed_everything


@dataclass
class LoadedRun:
    """An algorithm with the weights of `source`, and the run arguments that made it."""

    algorithm: Algorithm
    args: dict[str, Any]
    hparams: dict[str, Any]
    source: Path
    step: int | None = None  # for checkpoints: the step the weights were saved at

    @property
    def name(self) -> str:
        return str(self.args.get("algorithm", "?"))

    @property
    def test_envs(self) -> list[int]:
        return list(self.args.get("test_envs", []))


def _read(path: Path) -> dict[str, Any]:
    """The file's content; checked against its digest when it has one (files of older runs and
    DomainBed's have none)."""
    if digest_path(path).exists():
        state, problem = read_verified_torch(path)
        if problem is not None:
            raise RunDirError(f"{path} cannot be used: {problem}")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable or unsafe pickle: a one-line error either way
            raise RunDirError(f"{path} is unreadable ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise RunDirError(f"{path} is not a dgalign model or checkpoint file")
    return state


def _model_file(source: Path, swa: bool) -> Path:
    if source.is_dir():
        rundir = RunDirectory(source)
        path = rundir.model_swa if swa else rundir.model
        if not path.exists():
            hint = "train with --swa" if swa else "let the run finish (no --skip-model-save)"
            raise RunDirError(
                f"{source} has no {path.name}; {hint}, or pass a model or checkpoint file"
            )
        return path
    if not source.exists():
        raise RunDirError(f"{source} does not exist; pass a run directory, model.pt or checkpoint")
    return source


def _build(args: dict[str, Any], hparams: dict[str, Any], state: dict[str, Any]) -> Algorithm:
    """A fresh algorithm of the run's class and shape (model.pt records the shape; for a
    checkpoint it is the dataset class's)."""
    dataset_cls = get_dataset_class(args["dataset"])
    n_train = len(dataset_cls.ENVIRONMENTS) - len(args["test_envs"])
    shape = state.get("model_input_shape", dataset_cls.input_shape)
    classes = state.get("model_num_classes", dataset_cls.num_classes)
    return algorithms.get(args["algorithm"])(tuple(shape), int(classes), n_train, hparams)


def load_run(source: str | Path, swa: bool = False) -> LoadedRun:
    """The algorithm of a run directory / model file / checkpoint, with its weights loaded.
    `swa` picks the weight average (model_swa.pt, or the average inside a checkpoint)."""
    path = _model_file(Path(source), swa)
    state = _read(path)
    try:
        return _load(path, state, swa)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        what = f"lacks {exc}" if isinstance(exc, KeyError) else f"does not fit ({exc})"
        detail = " ".join(what.split())[:200]
        raise RunDirError(
            f"{path} is not a usable dgalign model or checkpoint: it {detail}"
        ) from None


def _load(path: Path, state: dict[str, Any], swa: bool) -> LoadedRun:
    if state.get("format") == CHECKPOINT_FORMAT:
        args = state["args"]
        hparams = resolve_hparams(
            args["algorithm"],
            args["dataset"],
            args["hparams_seed"],
            args["trial_seed"],
            args["hparams"],
        )
        weights = state["model"]
        if swa:
            if CHECKPOINT_KEY not in state["extra"]:
                raise RunDirError(f"{path} holds no weight average (the run did not use --swa)")
            weights = state["extra"][CHECKPOINT_KEY]["model"]
        algorithm = _build(args, hparams, state)
        step = int(state["step"]) - 1
    elif "model_dict" in state:
        args, hparams, step = state["args"], state["model_hparams"], None
        weights = state["model_dict"]
        algorithm = _build(args, hparams, state)
    else:
        raise RunDirError(f"{path} is not a dgalign model.pt or checkpoint.pt")
    algorithm.load_state_dict(weights)
    algorithm.eval()
    return LoadedRun(algorithm, args, hparams, path, step)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed every generator as the training loop does; restore the previous states after."""
    saved = rng_state()
    try:
        seed_everything(seed)
        yield
    finally:
        set_rng_state(saved)


def _dataset(run: LoadedRun, data_dir: str | None) -> MultipleEnvironmentDataset:
    """The run's dataset as the loop builds it: right after seeding with the run's seed (the
    MNIST datasets shuffle and colour with the global generator)."""
    with _seeded(int(run.args["seed"])):
        return get_dataset_class(run.args["dataset"])(data_dir or run.args.get("data_dir"))


def initial_algorithm(run: LoadedRun, data_dir: str | None = None) -> Algorithm:
    """The run's algorithm at initialisation, rebuilt as the training loop builds it (seed
    everything with the run's seed, construct the dataset, then the algorithm)."""
    args = run.args
    with _seeded(int(args["seed"])):
        dataset = get_dataset_class(args["dataset"])(data_dir or args.get("data_dir"))
        n_train = len(dataset) - len(args["test_envs"])
        algorithm = algorithms.get(args["algorithm"])(
            dataset.input_shape, dataset.num_classes, n_train, run.hparams
        )
    return algorithm.eval()


@dataclass
class RunData:
    """The `in` / `out` splits of every environment, as the run saw them."""

    in_splits: list[Subset]
    out_splits: list[Subset]
    test_envs: list[int]

    @property
    def train_envs(self) -> list[int]:
        return [i for i in range(len(self.in_splits)) if i not in self.test_envs]


def run_data(run: LoadedRun, data_dir: str | None = None) -> RunData:
    """The run's dataset, built and split exactly as in training (seed, trial seed, holdout
    fraction)."""
    args = run.args
    dataset = _dataset(run, data_dir)
    ins, outs = [], []
    for i, env in enumerate(dataset):
        in_, out = split_environment(env, i, int(args["trial_seed"]), args["holdout_fraction"])
        ins.append(in_)
        outs.append(out)
    return RunData(ins, outs, list(args["test_envs"]))


def take(split: Subset, max_samples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `max_samples` rows of a split (all rows for None) as (x, y) tensors, on the
    device of the split's row keys."""
    n = len(split) if max_samples is None else min(len(split), int(max_samples))
    return split.batch(torch.arange(n, device=split.keys.device))


def load_source(spec: str, data_dir: str | None = None) -> tuple[LoadedRun, Algorithm, str]:
    """A weight source as the `analyze` commands take it: a run directory, model file or
    checkpoint; `...:swa` for its weight average; `init:...` for the run's initialisation.
    Returns the loaded run, the algorithm holding those weights, and a plot label."""
    init = spec.startswith("init:")
    path = spec[len("init:") :] if init else spec
    swa = path.endswith(":swa")
    path = path[: -len(":swa")] if swa else path
    run = load_run(path, swa=swa)
    variant = run.hparams.get("variant")
    name = run.name if variant in (None, "full") else f"{run.name}-{variant}"
    if init:
        return run, initial_algorithm(run, data_dir), f"init ({name})"
    label = f"{name}{' + SWA' if swa else ''}"
    if run.step is not None:
        label += f" @{run.step}"
    return run, run.algorithm, label


def trained_policy(spec: str) -> LoadedRun:
    """The run whose policy makes FGMix mixes for weight source `spec`: its trained model even
    when `spec` names the weight average (the paper mixes with the policy of the last
    iteration)."""
    return load_run(spec.removesuffix(":swa"))


def unique_labels(labels: list[str]) -> list[str]:
    """Labels made unique by numbering repeats ("ERM", "ERM #2", ...)."""
    out: list[str] = []
    for label in labels:
        n, candidate = 1, label
        while candidate in out:
            n += 1
            candidate = f"{label} #{n}"
        out.append(candidate)
    return out
