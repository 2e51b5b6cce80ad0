"""Precision/recall: 1 for identical sets, drop as one set moves away."""

import numpy as np
import pytest

from gan_jax import metrics
import importlib

pr_lib = importlib.import_module("gan_jax.metrics.precision_recall")


def brute_force(real, fake, k):
  def radii(x):
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return np.sort(d, axis=1)[:, k]

  def covered(q, ref, r):
    d = np.linalg.norm(q[:, None] - ref[None], axis=-1)
    return (d <= r[None]).any(1).mean()

  return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def test_identical_sets():
  x = np.random.default_rng(0).normal(size=(300, 5))
  assert metrics.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_drops_when_moved_away():
  rng = np.random.default_rng(1)
  real, fake = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
  p0, r0 = metrics.precision_recall(real, fake)
  p1, r1 = metrics.precision_recall(real, fake + 1.0)
  p2, r2 = metrics.precision_recall(real, fake + 100.0)
  assert p0 > p1 > p2 == 0.0 and r0 > r1 > r2 == 0.0


def test_matches_brute_force_with_padded_blocks():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(53, 4))
  fake = rng.normal(0.3, 1.2, size=(41, 4))
  got = pr_lib.precision_recall(real, fake, k=3, block=16)
  want = brute_force(real, fake, 3)
  assert got == pytest.approx(want, abs=1e-12)


def test_explicit_devices_round_robin():
  """Row blocks spread over all local devices give the same answer (run
  with XLA_FLAGS=--xla_force_host_platform_device_count=N for N > 1)."""
  import jax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  real, fake = rng.normal(size=(70, 3)), rng.normal(0.2, 1, size=(50, 3))
  got = pr_lib.precision_recall(real, fake, block=16,
                                devices=jax.local_devices())
  assert got == pytest.approx(brute_force(real, fake, 3), abs=1e-12)


def test_knn_radii():
  x = np.arange(10, dtype=np.float32)[:, None]
  r2 = pr_lib.knn_radii2(x, k=2, block=4)
  np.testing.assert_allclose(np.sqrt(r2), [2, 1, 1, 1, 1, 1, 1, 1, 1, 2])
