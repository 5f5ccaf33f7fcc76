"""A 2-D embedding for the analyses' plots (t-SNE when scikit-learn is installed, PCA
otherwise); matplotlib itself comes from `dgalign.utils.plotting`."""

from __future__ import annotations

import numpy as np


def embed_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D embedding of the rows of `x` and the name of the method used.

    "auto" uses `sklearn.manifold.TSNE` when scikit-learn is importable, else PCA (scikit-learn
    is not a dependency of dgalign; callers tell the user which was used); "tsne" and "pca"
    force one ("tsne" raises ImportError without scikit-learn)."""
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"embedding must be auto, tsne or pca, got {method!r}")
    if method in ("auto", "tsne"):
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            if method == "tsne":
                raise
        else:
            perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
            tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
            return tsne.fit_transform(x.astype(np.float32)), "t-SNE"
    centred = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, "PCA"
