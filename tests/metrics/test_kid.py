"""KID: unbiased (near 0 for one distribution), grows with a shift."""

import itertools

import numpy as np
import pytest

from gan_jax import metrics
import importlib

kid_lib = importlib.import_module("gan_jax.metrics.kid")


def naive_mmd2(x, y):
  d = x.shape[1]
  k = lambda a, b: (a @ b / d + 1) ** 3
  m = len(x)
  pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
  xx = sum(k(x[i], x[j]) for i, j in pairs) / len(pairs)
  yy = sum(k(y[i], y[j]) for i, j in pairs) / len(pairs)
  xy = sum(k(a, b) for a in x for b in y) / m ** 2
  return xx + yy - 2 * xy


def test_matches_naive_formula():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(12, 3)), rng.normal(0.5, 1, size=(12, 3))
  assert kid_lib.mmd2_unbiased(x, y) == pytest.approx(naive_mmd2(x, y),
                                                      rel=1e-10)


def test_unbiased_and_grows_with_shift():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(600, 8))
  y = rng.normal(size=(600, 8))
  same, same_std = metrics.kid(x, y, num_subsets=20, subset_size=200)
  assert abs(same) < 3 * same_std + 1e-3
  small, _ = metrics.kid(x, y + 0.5, num_subsets=20, subset_size=200)
  large, _ = metrics.kid(x, y + 1.0, num_subsets=20, subset_size=200)
  assert same < small < large
  assert small > 10 * abs(same)


def test_subset_size_clipped_and_seeded():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(50, 4)), rng.normal(size=(40, 4))
  a = metrics.kid(x, y, num_subsets=5, subset_size=1000, seed=3)
  b = metrics.kid(x, y, num_subsets=5, subset_size=1000, seed=3)
  assert a == b and np.isfinite(a).all()
