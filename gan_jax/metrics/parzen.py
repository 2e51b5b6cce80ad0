"""Gaussian Parzen-window log-likelihood (Breuleux et al. 2011), the
estimate Goodfellow et al. 2014 report in their Table 1 (MNIST: 225 +- 2).

A Gaussian kernel of width sigma is put on each of n generated samples
``c_j``; a test point x gets the log density of that mixture,

    log p(x) = log (1/n) sum_j N(x; c_j, sigma^2 I)
             = logsumexp_j(-|x - c_j|^2 / (2 sigma^2)) - log n
               - d log(sigma sqrt(2 pi)),

and the metric is its mean over the test points, with the standard error
std / sqrt(m). sigma is chosen by the mean log density of held-out
validation points over a grid (the authors' script: 10 widths log-spaced
from 0.1 to 1, on 1,000 validation images). Pixels are in [0, 1], as in the
paper, so the numbers are comparable with its table.

The estimate is known to be poor in high dimensions (Theis, van den Oord &
Bethge 2016: it can rank models against their likelihood, and even a
k-means model of the data beats real samples); it is here to compare with
the papers that report it, not as a quality metric.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The authors' grid: numpy.logspace(-1, 0, 10).
DEFAULT_SIGMAS = tuple(float(s) for s in np.logspace(-1.0, 0.0, 10))


@jax.jit
def _block_log_density(x, centers, center_sq, sigmas):
  """(len(sigmas), len(x)) log densities of a block of points."""
  x_sq = jnp.sum(x * x, axis=1)
  cross = jnp.matmul(x, centers.T, precision=jax.lax.Precision.HIGHEST)
  # |x - c|^2 by expansion; rounding can make it slightly negative.
  d2 = jnp.maximum(x_sq[:, None] + center_sq[None, :] - 2.0 * cross, 0.0)
  n, dim = centers.shape
  inv = 1.0 / (2.0 * sigmas * sigmas)
  log_norm = jnp.log(float(n)) + dim * jnp.log(sigmas * math.sqrt(2 * math.pi))

  def one(s_inv, s_norm):
    return jax.nn.logsumexp(-d2 * s_inv, axis=1) - s_norm

  return jax.vmap(one)(inv, log_norm)


def log_density(centers, points, sigmas: Sequence[float],
                block: int = 500) -> np.ndarray:
  """Parzen log density of every point for every kernel width:
  ``(len(sigmas), len(points))`` float64.

  ``centers`` (n, d) and ``points`` (m, d) are flattened samples; the
  distances are computed once per block of points and shared by all widths.
  """
  centers = np.asarray(centers, np.float32)
  points = np.asarray(points, np.float32)
  if centers.ndim != 2 or points.ndim != 2 or centers.shape[1] != \
      points.shape[1]:
    raise ValueError(f"centers {centers.shape} and points {points.shape} "
                     "must be (n, d) and (m, d) with the same d")
  if not len(centers):
    raise ValueError("the Parzen window needs at least one center")
  sig = np.asarray(sigmas, np.float32)
  if sig.ndim != 1 or not len(sig) or not np.all(sig > 0):
    raise ValueError(f"kernel widths must be positive, got {sigmas}")
  c = jnp.asarray(centers)
  c_sq = jnp.sum(c * c, axis=1)
  s = jnp.asarray(sig)
  out = []
  for i in range(0, len(points), block):
    x = points[i:i + block]
    if len(x) < block and len(points) > block:  # one compiled shape
      pad = np.zeros((block - len(x), x.shape[1]), np.float32)
      y = _block_log_density(jnp.asarray(np.concatenate([x, pad])), c, c_sq,
                             s)[:, :len(x)]
    else:
      y = _block_log_density(jnp.asarray(x), c, c_sq, s)
    out.append(np.asarray(y, np.float64))
  return np.concatenate(out, axis=1) if out else np.zeros((len(sig), 0))


def select_sigma(centers, valid, sigmas: Sequence[float] = DEFAULT_SIGMAS
                 ) -> float:
  """The width of ``sigmas`` with the highest mean log density of the
  validation points (the first on ties)."""
  ll = log_density(centers, valid, sigmas)
  return float(sigmas[int(np.argmax(ll.mean(axis=1)))])


def parzen(centers, test, *, sigma: Optional[float] = None, valid=None,
           sigmas: Sequence[float] = DEFAULT_SIGMAS) -> Dict[str, float]:
  """Mean and standard error of the test points' Parzen log density.

  ``sigma``: the kernel width, or None to choose it on ``valid`` over
  ``sigmas``. Returns ``{"parzen_ll", "parzen_ll_se", "parzen_sigma"}``.
  """
  if sigma is None:
    if valid is None or not len(valid):
      raise ValueError("choosing the Parzen width needs validation points")
    sigma = select_sigma(centers, valid, sigmas)
  ll = log_density(centers, test, [sigma])[0]
  se = float(ll.std() / math.sqrt(len(ll))) if len(ll) else float("nan")
  return {"parzen_ll": float(ll.mean()), "parzen_ll_se": se,
          "parzen_sigma": float(sigma)}
