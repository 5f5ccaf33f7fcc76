"""Optional feature projections of the probing protocol, fitted on the training split only.

PCA to k dimensions: x -> (x - mu) V_k, mu the training mean and V_k the top-k right singular
vectors of the centred training features (scikit-learn's PCA without whitening).

ISR-Mean (Wang et al., 2022) with spurious scale s: for the chosen class y, the means
mu_{y,e} of the training features of class y in each environment e = 1..E span, once centred,
a subspace of at most E - 1 dimensions that the spurious attribute moves; its top E - 1
principal directions U_s, completed to an orthonormal basis U = [U_s, U_i] (QR), define
    x -> x U diag(s, ..., s, 1, ..., 1)      (E - 1 entries s),
so s = 0 removes the spurious directions (the CMA authors' "HISR" setting) and keeps the
features in the rotated basis their code uses (a rotation changes no Frobenius norm, but it
does change diagonals, so HessianDiag and Hutchinson see the same basis as theirs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dgalign.errors import ConfigError


@dataclass(frozen=True)
class ProjectionConfig:
    """`pca_dim` 0 = no PCA; `isr_mean` with the chosen class and the spurious scale."""

    pca_dim: int = 0
    isr_mean: bool = False
    isr_class: int = 0
    spu_scale: float = 0.0

    def describe(self) -> str:
        parts = []
        if self.pca_dim:
            parts.append(f"PCA {self.pca_dim}")
        if self.isr_mean:
            parts.append(f"ISR-Mean (class {self.isr_class}, scale {self.spu_scale:g})")
        return " + ".join(parts) or "none"


def fit_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], components [D, k]) of the top-k principal directions of `x`."""
    if not 1 <= k <= min(x.shape):
        raise ConfigError(
            f"--pca {k} must be between 1 and min(training rows, feature width) = {min(x.shape)}"
        )
    mean = x.mean(0, dtype=np.float64)
    _, _, vt = np.linalg.svd(x.astype(np.float64) - mean, full_matrices=False)
    return mean, vt[:k].T


def isr_mean_basis(
    x: np.ndarray, y: np.ndarray, env: np.ndarray, chosen_class: int, num_envs: int
) -> tuple[np.ndarray, int]:
    """(U [D, D] orthonormal, d_spu = E - 1): the spurious directions first (module docstring)."""
    rows = y == chosen_class
    if not rows.any():
        raise ConfigError(f"--isr-class {chosen_class}: no training sample has that label")
    means = []
    for e in range(num_envs):
        sel = rows & (env == e)
        if not sel.any():
            raise ConfigError(
                f"ISR-Mean needs training samples of class {chosen_class} in every environment; "
                f"environment {e} has none (choose another --isr-class)"
            )
        means.append(x[sel].mean(0, dtype=np.float64))
    centred = np.stack(means) - np.mean(means, axis=0)
    d_spu = num_envs - 1
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    basis, _ = np.linalg.qr(vt[:d_spu].T, mode="complete")
    return basis, d_spu


@dataclass
class Projection:
    """A fitted projection; `apply` maps features of any split."""

    mean: np.ndarray | None
    pca: np.ndarray | None
    basis: np.ndarray | None
    scales: np.ndarray | None

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float64)
        if self.pca is not None:
            out = (out - self.mean) @ self.pca
        if self.basis is not None:
            out = (out @ self.basis) * self.scales
        return out.astype(np.float32)


def fit_projection(
    config: ProjectionConfig, x: np.ndarray, y: np.ndarray, env: np.ndarray, num_envs: int
) -> Projection:
    """Fit `config` on the training features `x`, labels `y` and environments `env`."""
    mean = pca = basis = scales = None
    z = x
    if config.pca_dim:
        mean, pca = fit_pca(x, config.pca_dim)
        z = ((x - mean) @ pca).astype(np.float64)
    if config.isr_mean:
        if not 0.0 <= config.spu_scale <= 1.0:
            raise ConfigError(f"--spu-scale must be in [0, 1], got {config.spu_scale}")
        basis, d_spu = isr_mean_basis(z, y, env, config.isr_class, num_envs)
        scales = np.ones(basis.shape[1])
        scales[:d_spu] = config.spu_scale
    return Projection(mean, pca, basis, scales)
