"""Fréchet distance between Gaussians fitted to two feature sets (FID).

Heusel et al. 2017: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).
The matrix square root and its corner cases follow pytorch-fid's
``calculate_frechet_distance``: if ``sqrtm(S_a S_b)`` is not finite (singular
product), ``eps * I`` is added to both covariances; a complex result is
accepted only when the imaginary part of its diagonal is below 1e-3.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np
from scipy import linalg


def gaussian_stats(features) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance (float64) of ``(N, D)`` features."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"features must be (N >= 2, D), got {x.shape}")
  return x.mean(0), np.cov(x, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
  with warnings.catch_warnings(), np.errstate(all="ignore"):
    warnings.simplefilter("ignore")
    return linalg.sqrtm(a)


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b, eps: float = 1e-6) -> float:
  """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b)."""
  mu_a, mu_b = np.atleast_1d(mu_a), np.atleast_1d(mu_b)
  sigma_a, sigma_b = np.atleast_2d(sigma_a), np.atleast_2d(sigma_b)
  if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
    raise ValueError("the two feature sets have different dimensions: "
                     f"{mu_a.shape} vs {mu_b.shape}")
  diff = mu_a - mu_b
  covmean = _sqrtm(sigma_a @ sigma_b)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma_a.shape[0]) * eps
    covmean = _sqrtm((sigma_a + offset) @ (sigma_b + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError("FID: matrix square root has a large imaginary "
                       f"component {np.max(np.abs(covmean.imag)):.3g}")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b)
               - 2.0 * np.trace(covmean))


def fid(features_a, features_b) -> float:
  """FID between two ``(N, D)`` feature arrays (any N per set)."""
  return frechet_distance(*gaussian_stats(features_a),
                          *gaussian_stats(features_b))
