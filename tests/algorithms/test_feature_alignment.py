"""CORAL and MMD discrepancies: zero for matching statistics, equal to their formulas."""

import math

import numpy as np
import torch

from dgalign.algorithms.feature_alignment import GAMMAS, coral_discrepancy, gaussian_mmd


def _features(n=7, d=4, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def test_coral_is_zero_for_identical_statistics():
    x = _features()
    shuffled = x[torch.randperm(len(x))]  # same mean and covariance
    assert coral_discrepancy(x, shuffled).item() < 1e-24
    assert coral_discrepancy(x, _features(seed=1)).item() > 1e-3


def test_coral_matches_the_formula():
    x, y = _features(n=7), _features(n=5, seed=1, shift=0.5)
    xn, yn = x.numpy(), y.numpy()
    mean_term = np.mean((xn.mean(0) - yn.mean(0)) ** 2)
    cov_term = np.mean((np.cov(xn, rowvar=False) - np.cov(yn, rowvar=False)) ** 2)
    torch.testing.assert_close(coral_discrepancy(x, y).item(), mean_term + cov_term)


def test_mmd_is_zero_for_identical_sets():
    x = _features()
    assert abs(gaussian_mmd(x, x[torch.randperm(len(x))]).item()) < 1e-12
    assert gaussian_mmd(x, _features(seed=1, shift=1.0)).item() > 1e-3


def test_mmd_matches_the_kernel_formula():
    x, y = _features(n=4, d=3), _features(n=3, d=3, seed=1, shift=0.3)

    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(math.exp(-g * max(d2, 1e-30)) for g in GAMMAS)

    def mean_k(a, b):
        return sum(k(ai, bj) for ai in a for bj in b) / (len(a) * len(b))

    expected = mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)
    torch.testing.assert_close(gaussian_mmd(x, y).item(), expected)


def test_update_penalty_averages_all_domain_pairs(tiny, tiny_data):
    for name, discrepancy in (("CORAL", coral_discrepancy), ("MMD", gaussian_mmd)):
        algorithm = tiny(name, num_domains=3, mmd_gamma=3.0)
        data = tiny_data(num_domains=3)
        with torch.no_grad():
            f = [algorithm.featurizer(x) for x, _ in data]
        pairs = [discrepancy(f[0], f[1]), discrepancy(f[0], f[2]), discrepancy(f[1], f[2])]
        logs = algorithm.update(data)
        torch.testing.assert_close(float(logs["penalty"]), (sum(pairs) / 3).item())
        torch.testing.assert_close(
            float(logs["loss"]), float(logs["nll"]) + 3.0 * float(logs["penalty"])
        )
