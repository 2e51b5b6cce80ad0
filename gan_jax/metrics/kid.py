"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets drawn without replacement from each set; the
mean and standard deviation over subsets are reported.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  d = x.shape[1]
  return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 of two equal-size samples (eq. 2 of Bińkowski et al.)."""
  m = x.shape[0]
  k_xx = polynomial_kernel(x, x)
  k_yy = polynomial_kernel(y, y)
  k_xy = polynomial_kernel(x, y)
  sum_xx = k_xx.sum() - np.trace(k_xx)  # off-diagonal terms only
  sum_yy = k_yy.sum() - np.trace(k_yy)
  return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid(features_a, features_b, num_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> Tuple[float, float]:
  """(mean, std) of the unbiased MMD^2 over ``num_subsets`` subsets.

  ``subset_size`` is clipped to the smaller set (as in clean-fid), so small
  sample counts still give a value.
  """
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"features must be (N, D) with equal D: {a.shape}, "
                     f"{b.shape}")
  m = min(subset_size, a.shape[0], b.shape[0])
  if m < 2:
    raise ValueError("KID needs at least 2 samples per set")
  rng = np.random.default_rng(seed)
  mmds = np.empty(num_subsets)
  for i in range(num_subsets):
    x = a[rng.choice(a.shape[0], m, replace=False)]
    y = b[rng.choice(b.shape[0], m, replace=False)]
    mmds[i] = mmd2_unbiased(x, y)
  return float(mmds.mean()), float(mmds.std())
