"""2-D toy distributions, sampled on device inside the compiled step.

PacGAN protocol (Lin et al. 2018, authors' code):
  ``ring``: 8 Gaussians with means (cos 2pi k/8, sin 2pi k/8), std 0.01.
  ``grid``: 25 Gaussians with means in {-4,-2,0,2,4}^2, std 0.05.
WGAN-GP toy script (Gulrajani et al. 2017, authors' code):
  ``8gaussians``: radius 2 on the 8 compass directions, std 0.02, / 1.414.
  ``25gaussians``: a fixed set of 100,000 points from 2*{-2..2}^2 + 0.05 N,
    / 2.828 (a finite training set, as in the script).
  ``swissroll``: scikit-learn's make_swiss_roll(noise=0.25), columns 0 and 2,
    / 7.5.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.data import DATASETS


@dataclasses.dataclass(frozen=True)
class ToyDataset:
  """A 2-D distribution: ``sample(key, n) -> (x, None)`` is pure JAX.

  ``modes`` (K, 2) and ``std`` (per-axis standard deviation) describe a
  Gaussian mixture for the mode metrics; both are None for continuous sets.
  """
  name: str
  sampler: Callable[[jax.Array, int], jax.Array]
  modes: Optional[np.ndarray] = None
  std: Optional[np.ndarray] = None
  kind: str = "toy"
  shape: Tuple[int, ...] = (2,)
  num_classes: int = 0

  def sample(self, key, n):
    return self.sampler(key, n), None

  def batches(self, *args, **kwargs):
    """Toy data lives on device; there is no host stream."""
    return None


def mixture(name, means, std, scale=1.0) -> ToyDataset:
  means = np.asarray(means, np.float32) / scale
  std_ = np.full((2,), std / scale, np.float32)

  def sampler(key, n):
    kc, kn = jax.random.split(key)
    comp = jax.random.randint(kc, (n,), 0, means.shape[0])
    return jnp.asarray(means)[comp] + std_ * jax.random.normal(kn, (n, 2))

  return ToyDataset(name, sampler, means, std_)


def ring_means(k=8, radius=1.0):
  angles = 2 * np.pi * np.arange(k) / k
  return radius * np.stack([np.cos(angles), np.sin(angles)], -1)


def grid_means(values):
  return np.array([(x, y) for x in values for y in values], np.float32)


@DATASETS.register("ring")
def ring(context=None):
  return mixture("ring", ring_means(8, 1.0), 0.01)


@DATASETS.register("grid")
def grid(context=None):
  return mixture("grid", grid_means([-4, -2, 0, 2, 4]), 0.05)


@DATASETS.register("8gaussians")
def eight_gaussians(context=None):
  s = math.sqrt(0.5)
  compass = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s),
             (-s, -s)]
  return mixture("8gaussians", 2.0 * np.array(compass), 0.02, scale=1.414)


@DATASETS.register("25gaussians")
def twentyfive_gaussians(context=None):
  means = grid_means([-4, -2, 0, 2, 4])
  # A fixed finite training set, like the authors' script (seeded, not drawn
  # from the run's seed, so every run sees the same 100,000 points).
  rng = np.random.default_rng(1234)
  points = means[rng.integers(0, 25, 100_000)] + 0.05 * rng.standard_normal(
      (100_000, 2))
  points = (points / 2.828).astype(np.float32)

  def sampler(key, n):
    return jnp.asarray(points)[jax.random.randint(key, (n,), 0, len(points))]

  base = mixture("25gaussians", means, 0.05, scale=2.828)
  return dataclasses.replace(base, sampler=sampler)


@DATASETS.register("swissroll")
def swissroll(context=None):
  def sampler(key, n):
    kt, kn = jax.random.split(key)
    t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(kt, (n,)))
    x = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], -1)
    return (x + 0.25 * jax.random.normal(kn, (n, 2))) / 7.5

  return ToyDataset("swissroll", sampler)
