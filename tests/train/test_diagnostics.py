"""Checkpoint diagnostics: exact head-Hessian and gradient distances between domains."""

import pytest
import torch

from dgalign.algorithms.erm import ERM
from dgalign.algorithms.spaces import default_hparams
from dgalign.curvature import head_gradient, head_hessian
from dgalign.train.diagnostics import curvature_diagnostics


def _algorithm():
    torch.manual_seed(0)
    hp = default_hparams("ERM", "Spurious28") | {"backbone": "mlp", "mlp_width": 16}
    return ERM((3, 28, 28), 2, 2, hp).double()


def test_distances_match_the_explicit_hessians():
    algorithm = _algorithm()
    g = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(10, 3, 28, 28, generator=g, dtype=torch.float64),
            torch.randint(0, 2, (10,), generator=g),
        )
        for _ in range(3)
    ]
    out = curvature_diagnostics(algorithm, batches)
    hs, gs = [], []
    with torch.no_grad():
        _collect(algorithm, batches, hs, gs)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected_h = sum(torch.linalg.norm(hs[i] - hs[j]) for i, j in pairs) / 3
    expected_g = sum(torch.linalg.norm(gs[i] - gs[j]) for i, j in pairs) / 3
    assert out["hess_dist"] == pytest.approx(float(expected_h), rel=1e-6)
    assert out["grad_dist"] == pytest.approx(float(expected_g), rel=1e-6)


def _collect(algorithm, batches, hs, gs):
    for x, y in batches:
        z = algorithm.featurizer(x)
        logits = algorithm.classifier(z)
        hs.append(head_hessian(z, logits))
        gs.append(head_gradient(z, logits, y))


def test_identical_domains_have_zero_distance_and_rng_is_untouched():
    algorithm = _algorithm()
    x = torch.randn(8, 3, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    state = torch.get_rng_state()
    out = curvature_diagnostics(algorithm, [(x, y), (x, y)])
    assert torch.equal(state, torch.get_rng_state())
    # hess_dist may come from the Gram form, ||H1 - H2||^2 = <H1,H1> + <H2,H2> - 2 <H1,H2>:
    # each inner product sums n^2 terms, so for H1 = H2 the rounding of the squared distance is
    # about n^2 eps ||H||^2 and the distance about n sqrt(eps) ||H|| (not 0, and it varies
    # with the summation order the BLAS picks for the thread count).
    with torch.no_grad():
        z = algorithm.featurizer(x)
        h_norm = float(torch.linalg.norm(head_hessian(z, algorithm.classifier(z))))
    eps = torch.finfo(torch.float64).eps
    assert out["hess_dist"] == pytest.approx(0.0, abs=10 * len(x) * eps**0.5 * h_norm)
    assert out["grad_dist"] == pytest.approx(0.0, abs=1e-12)
    assert curvature_diagnostics(algorithm, [(x, y)]) == {}
