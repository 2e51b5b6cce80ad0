"""FID: zero on itself, symmetric, matches the Gaussian closed form."""

import numpy as np
import pytest

from gan_jax import metrics
import importlib

fid_lib = importlib.import_module("gan_jax.metrics.fid")


def closed_form(mu1, s1, mu2, s2):
  # Tr((S1 S2)^(1/2)) = sum of sqrt of the (real, >= 0) eigenvalues of S1 S2.
  eig = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.sum(np.sqrt(eig)))


def random_cov(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_self_is_zero():
  x = np.random.default_rng(0).normal(size=(500, 16))
  assert abs(metrics.fid(x, x)) < 1e-6


def test_symmetric():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(400, 8)), rng.normal(1.0, 2.0, size=(300, 8))
  assert metrics.fid(x, y) == pytest.approx(metrics.fid(y, x), rel=1e-6)


def test_frechet_distance_closed_form():
  rng = np.random.default_rng(2)
  d = 6
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = random_cov(rng, d), random_cov(rng, d)
  assert fid_lib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
      closed_form(mu1, s1, mu2, s2), rel=1e-8)


def test_samples_match_parameters():
  rng = np.random.default_rng(3)
  d, n = 4, 40000
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = random_cov(rng, d), random_cov(rng, d)
  x = rng.multivariate_normal(mu1, s1, size=n)
  y = rng.multivariate_normal(mu2, s2, size=n)
  expected = closed_form(mu1, s1, mu2, s2)
  assert metrics.fid(x, y) == pytest.approx(expected, rel=0.03)


def test_singular_covariance_is_finite():
  # Fewer samples than dimensions: the covariance product is singular.
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(10, 32)), rng.normal(size=(10, 32))
  value = metrics.fid(x, y)
  assert np.isfinite(value) and value > 0
  assert abs(metrics.fid(x, x)) < 1e-3


def test_dimension_mismatch():
  with pytest.raises(ValueError):
    metrics.fid(np.zeros((5, 3)), np.zeros((5, 4)))


def test_generated_images_are_quantized_like_the_real_ones():
  """The evaluator scores generated images on the 256 levels real images
  (uint8 / 127.5 - 1) take."""
  from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
  real = np.arange(256, dtype=np.uint8).astype(np.float32) / 127.5 - 1.0
  np.testing.assert_array_equal(evaluate.quantize(real), real)
  x = np.array([-1.5, -1.0, -0.9999, 0.0021, 0.999, 1.0, 2.0], np.float32)
  q = evaluate.quantize(x)
  levels = (q + 1.0) * 127.5
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
  assert q.min() == -1.0 and q.max() == 1.0 and q.dtype == np.float32
  np.testing.assert_allclose(q, np.clip(x, -1, 1), atol=1 / 127.5)
