"""Mode metrics for 2-D Gaussian mixtures (PacGAN protocol, authors' code).

Each sample goes to its nearest mode by distance in standard deviations,
sqrt(sum_d (x_d - mu_d)^2 / sigma_d^2); it is *high quality* when that
distance is below 3. A mode is captured when it receives at least one
high-quality sample. Reverse KL is KL(h || uniform) where h is the histogram of
high-quality samples over modes, i.e. log K - H(h).
"""

from __future__ import annotations

from typing import Dict

import numpy as np


def mode_metrics(samples, modes, std, threshold: float = 3.0) -> Dict[str, float]:
  """Modes captured, high-quality fraction and reverse KL of ``samples``."""
  x = np.asarray(samples, np.float64)
  mu = np.asarray(modes, np.float64)
  var = np.asarray(std, np.float64) ** 2
  dist = np.sqrt((((x[:, None, :] - mu[None]) ** 2) / var).sum(-1))  # (N, K)
  nearest = dist.argmin(1)
  hq = dist[np.arange(len(x)), nearest] < threshold
  counts = np.bincount(nearest[hq], minlength=len(mu)).astype(np.float64)
  total = counts.sum()
  if total > 0:
    h = counts / total
    nz = h > 0
    kl = float(np.sum(h[nz] * np.log(h[nz] * len(mu))))
  else:
    kl = float("inf")
  return {
      "modes": int((counts > 0).sum()),
      "high_quality": float(hq.mean()) if len(x) else 0.0,
      "reverse_kl": kl,
  }
