"""PCA and ISR-Mean on data with a known spurious direction."""

from __future__ import annotations

import numpy as np
import pytest

from dgalign.errors import ConfigError
from dgalign.probe.projection import ProjectionConfig, fit_pca, fit_projection, isr_mean_basis


def test_pca_keeps_the_top_variance_directions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 4.0
    mean, comps = fit_pca(x, 2)
    np.testing.assert_allclose(comps.T @ comps, np.eye(2), atol=1e-12)
    cov = np.cov(x.T, bias=True)
    eigvals = np.linalg.eigvalsh(cov)[::-1]
    projected = (x - mean) @ comps
    np.testing.assert_allclose(np.sort(projected.var(0))[::-1], eigvals[:2], rtol=1e-10)
    with pytest.raises(ConfigError, match="--pca 7"):
        fit_pca(x, 7)


def test_isr_mean_removes_the_direction_the_environments_move():
    rng = np.random.default_rng(1)
    n, d = 400, 5
    y = rng.integers(0, 2, n)
    env = rng.integers(0, 2, n)
    spurious = np.array([0.0, 1.0, 1.0, 0.0, 0.0]) / np.sqrt(2)
    x = rng.normal(size=(n, d)) * 0.3
    x[:, 0] += 2 * y
    x += np.outer(3.0 * env, spurious)
    basis, d_spu = isr_mean_basis(x, y, env, chosen_class=1, num_envs=2)
    assert d_spu == 1
    assert abs(abs(basis[:, 0] @ spurious) - 1) < 0.01
    np.testing.assert_allclose(basis.T @ basis, np.eye(d), atol=1e-12)
    proj = fit_projection(ProjectionConfig(isr_mean=True, isr_class=1), x, y, env, 2)
    z = proj.apply(x)
    for label in (0, 1):
        means = np.stack([z[(y == label) & (env == e)].mean(0) for e in range(2)])
        assert np.abs(means - means.mean(0)).max() < 0.15  # noise level only
    # the label direction survives: the class means stay apart
    assert np.linalg.norm(z[y == 1].mean(0) - z[y == 0].mean(0)) > 1.5
    half = fit_projection(ProjectionConfig(isr_mean=True, isr_class=1, spu_scale=0.5), x, y, env, 2)
    np.testing.assert_allclose(half.apply(x)[:, :1], 0.5 * (x @ basis)[:, :1], rtol=1e-5, atol=1e-6)
    assert isr_mean_basis(x, y, rng.integers(0, 3, n), 0, 3)[1] == 2


def test_pca_then_isr_and_bad_settings():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 8))
    y, env = rng.integers(0, 2, 100), rng.integers(0, 2, 100)
    proj = fit_projection(ProjectionConfig(pca_dim=4, isr_mean=True), x, y, env, 2)
    assert proj.apply(x).shape == (100, 4)
    with pytest.raises(ConfigError, match="no training sample has that label"):
        fit_projection(ProjectionConfig(isr_mean=True, isr_class=5), x, y, env, 2)
    with pytest.raises(ConfigError, match="environment 2 has none"):
        fit_projection(ProjectionConfig(isr_mean=True), x, y, env, 3)
    with pytest.raises(ConfigError, match="--spu-scale"):
        fit_projection(ProjectionConfig(isr_mean=True, spu_scale=2.0), x, y, env, 2)
    assert ProjectionConfig(100, True).describe() == "PCA 100 + ISR-Mean (class 0, scale 0)"
