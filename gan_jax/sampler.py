"""Sampling from G, and the fixed inputs of the pictures and toy metrics.

Shared by the training loop, ``gan_jax.evaluate`` and ``gan_jax.sample``,
so that none of them imports another to draw samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import interpolate as interp_lib
from gan_jax import state as state_lib

# Fixed keys for what must not change over a run: the sample grid's noise and
# the evaluation samples.
_GRID_KEY = 1_000_001
_EVAL_KEY = 1_000_002  # toy metrics (toy_eval_samples)
_INTERP_KEY = 1_000_003


class Sampler:
  """Compiled sampling from G for plots and evaluation."""

  def __init__(self, gan, mesh):
    self.gan = gan
    self.mesh = mesh
    self._fn = jax.jit(gan.sample_images)

  def __call__(self, state, z, y=None):
    with jax.set_mesh(self.mesh):
      x = self._fn(state_lib.sampling_params(state), state.net_state, z, y)
    return np.asarray(jax.device_get(x), np.float32)

  def sample(self, state, key, n: int, batch: int = 2500):
    """``n`` samples, and their labels (the classes G was given, InfoGAN's
    categorical code: ``Method.eval_inputs``) or None, from ``key``."""
    out, labels = [], []
    for i in range(0, n, batch):
      m = min(batch, n - i)
      z, y, label = self.gan.eval_inputs(jax.random.fold_in(key, i), m)
      out.append(self(state, z, y))
      if label is not None:
        labels.append(np.asarray(label))
    return np.concatenate(out), (np.concatenate(labels) if labels else None)


def grid_inputs(gan, rng, n: int = 64):
  """The fixed noise of the sample grid (one row per class if conditional)."""
  key = jax.random.fold_in(rng, _GRID_KEY)
  if gan.num_classes:
    rows = min(gan.num_classes, 10)
    cols = max(n // rows, 1)
    z = gan.sample_z(key, (cols,))
    z = jnp.tile(z, (rows, 1))
    y = jnp.repeat(jnp.arange(rows), cols)
    return z, y, rows
  return gan.sample_z(key, (n,)), None, None


def toy_eval_samples(sampler, state, n: int) -> np.ndarray:
  """The samples of a toy run's mode metrics: the same noise at every log
  step, and in ``gan_jax.evaluate`` (which reproduces the logged numbers)."""
  return sampler.sample(state, jax.random.fold_in(state.rng, _EVAL_KEY), n)[0]


def interpolation_inputs(gan, rng, pairs: int, points: int):
  """Fixed noise of the interpolation strips: ``(z, y)`` with rows pair 0
  linear, pair 0 spherical, pair 1 linear, ... of ``points`` each.

  The same pairs (z0, z1) at every log interval, so the strips show how the
  latent space evolves; conditional models keep one label (pair i: class
  i mod classes) along both strips of a pair. G's input may have any
  shape (an image for a translation method): it is interpolated as a
  vector.
  """
  key = jax.random.fold_in(rng, _INTERP_KEY)
  z0 = gan.sample_z(jax.random.fold_in(key, 0), (pairs,))
  z1 = gan.sample_z(jax.random.fold_in(key, 1), (pairs,))
  linear, spherical = interp_lib.strips(z0.reshape(pairs, -1),
                                        z1.reshape(pairs, -1), points,
                                        gan.z_support)
  z = jnp.stack([linear, spherical], 1).reshape(
      (2 * pairs * points,) + z0.shape[1:])
  y = None
  if gan.num_classes:
    y = jnp.repeat(jnp.arange(pairs) % gan.num_classes, 2 * points)
  return z, y
