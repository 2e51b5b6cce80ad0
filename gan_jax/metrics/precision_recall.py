"""Improved precision and recall (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its samples, with radius the
distance to the sample's k-th nearest neighbour within the set. Precision is
the fraction of fake samples inside the real manifold, recall the fraction of
real samples inside the fake manifold.

Pairwise distances are computed blockwise with jit (memory O(block^2)), the
row blocks spread round-robin over the local accelerators, so tens of
thousands of samples per set work.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

BLOCK = 2048


def _sq_dists(a, b):
  """Squared Euclidean distances between rows of ``a`` and ``b``."""
  aa = jnp.sum(a * a, axis=1)[:, None]
  bb = jnp.sum(b * b, axis=1)[None, :]
  ab = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(aa + bb - 2.0 * ab, 0.0)


@functools.partial(jax.jit, static_argnames=("k",))
def _kth_block(best, rows, cols, col_valid, k):
  """Merges the k+1 smallest distances of ``rows`` to ``cols`` into ``best``."""
  d = jnp.where(col_valid[None, :], _sq_dists(rows, cols), jnp.inf)
  cand = jnp.concatenate([best, -jax.lax.top_k(-d, min(k + 1, d.shape[1]))[0]],
                         axis=1)
  return -jax.lax.top_k(-cand, k + 1)[0]


@jax.jit
def _covered_block(hit, rows, cols, col_radii2):
  """ORs into ``hit`` whether each row lies in some ball of ``cols``."""
  d = _sq_dists(rows, cols)
  return hit | jnp.any(d <= col_radii2[None, :], axis=1)


def _blocks(x: np.ndarray, block: int):
  """Pads ``x`` to a multiple of ``block`` rows; yields (start, rows, valid)."""
  n = x.shape[0]
  padded = -(-n // block) * block
  xp = np.zeros((padded, x.shape[1]), np.float32)
  xp[:n] = x
  valid = np.arange(padded) < n
  for s in range(0, padded, block):
    yield s, xp[s:s + block], valid[s:s + block]


def _devices() -> Sequence[jax.Device]:
  """Accelerators to spread row blocks over. Host "devices" share the same
  cores and memory, so on CPU one device does the work (no copies)."""
  devs = jax.local_devices()
  return devs[:1] if devs[0].platform == "cpu" else devs


def knn_radii2(x: np.ndarray, k: int, block: int = BLOCK,
               devices: Optional[Sequence[jax.Device]] = None) -> np.ndarray:
  """Squared distance of each row of ``x`` to its k-th nearest other row."""
  x = np.asarray(x, np.float32)
  n = x.shape[0]
  if n <= k:
    raise ValueError(f"need more than k={k} samples, got {n}")
  block = min(block, n)
  devs = list(devices or _devices())
  col_blocks = list(_blocks(x, block))
  cols_on = [[(jax.device_put(c, d), jax.device_put(v, d))
              for _, c, v in col_blocks] for d in devs]
  out = []
  for i, (_, rows, _) in enumerate(_blocks(x, block)):
    di = i % len(devs)
    rows_d = jax.device_put(rows, devs[di])
    best = jax.device_put(np.full((block, k + 1), np.inf, np.float32),
                          devs[di])
    for cols, valid in cols_on[di]:
      best = _kth_block(best, rows_d, cols, valid, k)
    out.append(best)
  # Index k: the nearest "neighbour" at index 0 is the sample itself.
  radii = np.concatenate([np.asarray(b)[:, k] for b in out])[:n]
  return radii


def coverage(queries: np.ndarray, refs: np.ndarray, ref_radii2: np.ndarray,
             block: int = BLOCK,
             devices: Optional[Sequence[jax.Device]] = None) -> np.ndarray:
  """Whether each query lies within ``sqrt(ref_radii2)`` of some ref."""
  q = np.asarray(queries, np.float32)
  r = np.asarray(refs, np.float32)
  block = min(block, max(q.shape[0], r.shape[0]))
  devs = list(devices or _devices())
  # Padded refs get radius -1 so nothing falls into their balls.
  radii = np.full(-(-r.shape[0] // block) * block, -1.0, np.float32)
  radii[:r.shape[0]] = ref_radii2
  ref_blocks = [(c, radii[s:s + block]) for s, c, _ in _blocks(r, block)]
  refs_on = [[(jax.device_put(c, d), jax.device_put(rr, d))
              for c, rr in ref_blocks] for d in devs]
  out = []
  for i, (_, rows, _) in enumerate(_blocks(q, block)):
    di = i % len(devs)
    rows_d = jax.device_put(rows, devs[di])
    hit = jax.device_put(np.zeros(block, bool), devs[di])
    for cols, rr in refs_on[di]:
      hit = _covered_block(hit, rows_d, cols, rr)
    out.append(hit)
  return np.concatenate([np.asarray(h) for h in out])[:q.shape[0]]


def precision_recall(real_features, fake_features, k: int = 3,
                     block: int = BLOCK,
                     devices: Optional[Sequence[jax.Device]] = None
                     ) -> Tuple[float, float]:
  """(precision, recall) of fake features against real ones.

  ``devices``: where to spread the row blocks (default: the local
  accelerators, or one CPU device).
  """
  real = np.asarray(real_features, np.float32)
  fake = np.asarray(fake_features, np.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"features must be (N, D) with equal D: {real.shape}, "
                     f"{fake.shape}")
  real_r2 = knn_radii2(real, k, block, devices)
  fake_r2 = knn_radii2(fake, k, block, devices)
  precision = coverage(fake, real, real_r2, block, devices).mean()
  recall = coverage(real, fake, fake_r2, block, devices).mean()
  return float(precision), float(recall)
