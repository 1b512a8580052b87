"""Fréchet distance between two Gaussians fitted to feature sets (the "F" of FID).

Heusel et al. 2017 ("GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", Eq. 6), used by the paper (§3.1, FID for the GEN task):

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

The matrix square-root term is computed without ``sqrtm`` of a non-symmetric product:
Tr((S_1 S_2)^{1/2}) = Tr((A S_2 A)^{1/2}) with A = S_1^{1/2}, and A S_2 A is symmetric PSD, so
both roots come from symmetric eigen-decompositions (eigenvalues clipped at 0) in float64.
This is stable for the rank-deficient covariances of few samples, where scipy's ``sqrtm`` of
S_1 S_2 returns complex noise. With fewer samples than dimensions (n_1 - 1 < D, e.g. 1,000
generated images in Inception's 2,048-d space) and S_1 = X^T X / (n_1 - 1) for the centred
features X, the non-zero eigenvalues of S_1 S_2 are those of X S_2 X^T / (n_1 - 1), an
n_1 x n_1 matrix: the same trace from a far smaller eigen-problem.
"""

from __future__ import annotations

import numpy as np
import torch


def feature_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of an (N, D) feature matrix, N >= 2."""
    f = np.asarray(features.detach().cpu() if torch.is_tensor(features) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_stats needs an (N>=2, D) matrix, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sym_sqrt(mat: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, centered1: np.ndarray | None = None
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (>= 0).

    ``centered1``: the centred features sigma1 was computed from; used when they are fewer
    than the dimensions (the small eigen-problem above)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    if centered1 is not None and len(centered1) - 1 < mu1.size:
        x = np.asarray(centered1, np.float64)
        vals = np.linalg.eigvalsh(x @ s2 @ x.T / (len(x) - 1))
    else:
        root1 = _sym_sqrt(s1)
        vals = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_cross = float(np.sqrt(np.clip(vals, 0.0, None)).sum())
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross), 0.0)


def frechet_distance_of_features(feats1, feats2) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets."""
    mu1, s1 = feature_stats(feats1)
    f1 = np.asarray(feats1.detach().cpu() if torch.is_tensor(feats1) else feats1, dtype=np.float64)
    return frechet_distance(mu1, s1, *feature_stats(feats2), centered1=f1 - mu1)
