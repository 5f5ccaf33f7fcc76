"""The analyses on a fake accelerator (`tests.device_harness`): flatness curves, loss surfaces,
the (mixed) training objective, latent codes and the transferability attack, with the model
and its data on the device, make no CPU tensor but the seeded host draws of `HOST_DRAWS`, and
copy to the host only what leaves torch (numpy arrays for the plots and numbers). Every op
they use is one the fake tensors model (none has an output shape that depends on the data).

Not run here, as host code by design: `latent.coverage` and `plotting.embed_2d` (numpy arrays
in, after `collect_codes` copied them over), the plots, and the loaders of saved runs
(`loading.load_run`, `transferability.domainbed_models` / `reproduction_models`: files read
with `map_location="cpu"`, covered by tests/analysis and
tests/experiments/test_fgsm_transferability.py)."""

from __future__ import annotations

import contextlib
import unittest.mock
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.device_harness import DEVICE, build, fake, on_fake_device

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams
from dgalign.analysis import latent, transferability
from dgalign.analysis.flatness import flatness_curves
from dgalign.analysis.loading import LoadedRun, RunData
from dgalign.analysis.objective import Objective, build_objective, get_vector, policy_mixes
from dgalign.analysis.surface import Plane, compute_surface
from dgalign.data.base import TensorEnvironment
from dgalign.data.splits import Subset

SHAPE = (3, 28, 28)
#: Functions that draw on the host on purpose, each result moved to the device before it meets
#: a device tensor:
#: - `random_direction` (analysis/flatness.py): every direction is drawn in float64 from a seeded
#:   CPU generator, so a seed gives the same directions on every device;
#: - `dirichlet_weights` (algorithms/fgmix_policy.py; variant A's mix weights, and the random
#:   interpolations of `collect_codes`): Gamma draws of the CPU stream, which `policy_mixes` and
#:   `collect_codes` seed, moved to the mask's device.
HOST_DRAWS = frozenset({"random_direction", "dirichlet_weights"})
#: And the copies to the host of what leaves torch: `_host_array` (analysis/latent.py), the
#: codes, labels and mixes as numpy arrays for the embedding and the coverage numbers.
TO_NUMPY = frozenset({"_host_array"})
_NUMPY = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int64: np.int64,
    torch.bool: np.bool_,
}


def _hparams(name: str, **extra) -> dict:
    base = default_hparams(name, "Debug28") | {"backbone": "mlp", "mlp_width": 16}
    return base | {"batch_size": 8} | extra


def _data(n_envs: int = 3, n: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Real CPU rows of each env, made before the fake block (`fake` moves them over)."""
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(n, *SHAPE, generator=g), torch.randint(0, 2, (n,), generator=g))
        for _ in range(n_envs)
    ]


def _objective(data, mixes_from=None) -> Objective:
    """Envs 0 and 1 train, env 2 tests, all on the device; with `mixes_from` (an FGMix
    algorithm) 4 mixes of its policy."""
    (x0, y0), (x1, y1), (xt, yt) = [(fake(x), fake(y)) for x, y in data]
    objective = Objective([x0, x1], [y0, y1], xt, yt)
    if mixes_from is not None:
        run = LoadedRun(mixes_from, {}, {}, Path("fgmix"))
        objective.plan, objective.weights = policy_mixes(run, objective.xs, objective.ys, 4)
    return objective


def _fake_numpy(self: torch.Tensor) -> np.ndarray:
    """`Tensor.numpy` as torch does it on a GPU (a device tensor raises; copy it to the host
    with `.cpu()` first), answered with zeros: fake tensors hold no data."""
    if self.device.type != "cpu":
        raise TypeError(f"can't convert {self.device.type} device type tensor to numpy")
    return np.zeros(tuple(self.shape), dtype=_NUMPY[self.dtype])


def _splits() -> list[Subset]:
    """One in-memory split per env (real CPU tensors; `_to_device` moves them over)."""
    return [Subset(TensorEnvironment(x, y), list(range(len(y)))) for x, y in _data()]


def _to_device(splits: list[Subset]) -> RunData:
    """The splits with their rows and row keys on the device (as the loop holds in-memory
    splits); envs 0 and 1 train, env 2 tests."""
    for split in splits:
        env = split.dataset
        env.x, env.y, split.keys = fake(env.x), fake(env.y), fake(split.keys)
    return RunData(splits, splits, [2])


@contextlib.contextmanager
def _numpy_on_fake_tensors() -> Iterator[None]:
    """The fake tensors' `.numpy()` (the harness has none: a tensor subclass cannot be read)."""
    with unittest.mock.patch.object(torch.Tensor, "numpy", _fake_numpy):
        yield


@pytest.mark.parametrize(
    ("name", "kind"),
    [("ERM", "unit"), ("ERM", "filter"), ("HessianDiag", "unit"), ("FGMix", "filter")],
)
def test_flatness_curves_on_the_device(name, kind):
    data = _data()
    with on_fake_device() as report:
        algorithm = build(algorithms.get(name), SHAPE, 2, 2, _hparams(name))
        result = flatness_curves(algorithm, _objective(data), [0.0, 1.0], 2, kind)
        weights = get_vector(algorithm)
    assert report.wrong_device(HOST_DRAWS) == []
    assert result.gaps.shape == (2, 2) and weights.device == DEVICE


@pytest.mark.parametrize("variant", ["A", "B", "full"])
def test_mixed_objective_on_the_device(variant):
    """The trained policy's mixes (Dirichlet, cosine and learned weights) and the loss over the
    original samples and the mixes."""
    data = _data()
    with on_fake_device() as report:
        fgmix = build(algorithms.get("FGMix"), SHAPE, 2, 2, _hparams("FGMix", variant=variant))
        objective = _objective(data, mixes_from=fgmix)
        loss = objective.loss(fgmix)
    assert report.wrong_device(HOST_DRAWS) == []
    assert objective.weights.device == DEVICE and objective.plan.index.device == DEVICE
    assert objective.weights.shape == (4, 2) and isinstance(loss, float)


def test_build_objective_takes_the_rows_on_the_splits_device():
    """`build_objective` (through `take`) on splits held on the device, with mixes."""
    splits = _splits()
    with on_fake_device() as report:
        data = _to_device(splits)
        fgmix = build(algorithms.get("FGMix"), SHAPE, 2, 2, _hparams("FGMix"))
        objective = build_objective(data, 4, LoadedRun(fgmix, {}, {}, Path("fgmix")), n_mix=3)
        loss = objective.loss(fgmix)
    assert report.wrong_device(HOST_DRAWS) == []
    assert [x.shape[0] for x in objective.xs] == [4, 4] and objective.test_x.device == DEVICE
    assert objective.weights.shape == (3, 2) and isinstance(loss, float)


def test_surface_on_the_device():
    """A 2 x 2 grid of the training loss, the mixed loss and the test accuracy on the plane
    through three weight vectors of the device, with a path."""
    data = _data()
    with on_fake_device() as report:
        fgmix = build(algorithms.get("FGMix"), SHAPE, 2, 2, _hparams("FGMix"))
        w0 = get_vector(fgmix)
        w1 = w0 + torch.randn(w0.shape, device=DEVICE)
        w2 = w0 + torch.randn(w0.shape, device=DEVICE)
        plane = Plane.through(w0, w1, w2)
        objectives = {"train": _objective(data), "mixed": _objective(data, mixes_from=fgmix)}
        points = {"a": w0, "b": w1, "c": w2}
        surface = compute_surface(fgmix, plane, objectives, points, {"path": [w0, w1]}, grid=2)
    assert report.wrong_device(HOST_DRAWS) == []
    assert plane.u.device == DEVICE
    assert set(surface.values) == {"train loss", "mixed loss", "test accuracy"}
    assert all(v.shape == (2, 2) for v in surface.values.values())


@pytest.mark.parametrize("variant", ["A", "full"])
def test_latent_codes_on_the_device(variant):
    """Codes of in-memory splits held on the device, and the policy's and random mixes, copied
    to the host once as numpy arrays."""
    splits = _splits()
    with on_fake_device() as report, _numpy_on_fake_tensors():
        data = _to_device(splits)
        fgmix = build(algorithms.get("FGMix"), SHAPE, 2, 2, _hparams("FGMix", variant=variant))
        run = LoadedRun(fgmix, {}, {}, Path("fgmix"))
        codes = latent.collect_codes(run, data, 4, n_mix=5)
    assert report.wrong_device(HOST_DRAWS | TO_NUMPY) == []
    assert codes.codes.shape == (12, 16) and codes.labels.shape == (12,)
    assert set(codes.mixes) == {"FGMix", "random interpolation"}
    assert codes.mixes["FGMix"].shape == (5, 16) and codes.extrapolated.shape == (5,)


def test_fake_numpy_refuses_a_device_tensor():
    """The stand-in for `.numpy()` fails as torch does on a GPU, so a missing `.cpu()` in the
    code under test fails `test_latent_codes_on_the_device`."""
    with on_fake_device(), _numpy_on_fake_tensors():
        x = torch.zeros(3, 2, device=DEVICE)
        assert x.cpu().numpy().shape == (3, 2)
        with pytest.raises(TypeError, match="meta device"):
            x.numpy()


@pytest.mark.parametrize("n_logits", [2, 1])
def test_transferability_attack_on_the_device(n_logits):
    """The attack on a head of the device (softmax, and one logit with BCE), on features the
    device's featurizer computes."""
    rows = _data()
    with on_fake_device() as report:
        erm = build(algorithms.get("ERM"), SHAPE, 2, 2, _hparams("ERM"))
        head = erm.classifier if n_logits == 2 else build(torch.nn.Linear, 16, 1)
        domains = [(transferability._features(erm.featurizer, fake(x)), fake(y)) for x, y in rows]
        result = transferability.attack_head(head, domains[:2], domains[2], 0.5, rounds=2, steps=2)
    assert report.wrong_device() == []
    assert result.delta == 0.5 and isinstance(result.target_acc, float)
    assert all(p.device == DEVICE for p in head.parameters())
