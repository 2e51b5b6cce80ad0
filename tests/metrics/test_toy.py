"""Toy mode metrics on constructed samples (PacGAN protocol)."""

import numpy as np

from gan_jax.data import toy
from gan_jax.metrics.toy import mode_metrics


def test_all_modes_uniform():
  ds = toy.ring()
  x = np.repeat(ds.modes, 100, axis=0)  # exactly on the means
  m = mode_metrics(x, ds.modes, ds.std)
  assert m["modes"] == 8
  assert m["high_quality"] == 1.0
  assert abs(m["reverse_kl"]) < 1e-12


def test_single_mode():
  ds = toy.grid()
  x = np.tile(ds.modes[3], (50, 1)) + 0.01
  m = mode_metrics(x, ds.modes, ds.std)
  assert m["modes"] == 1
  assert m["high_quality"] == 1.0
  np.testing.assert_allclose(m["reverse_kl"], np.log(25))


def test_off_mode_samples_are_low_quality():
  ds = toy.ring()
  # Half the samples sit on modes 0 and 1, half at the origin (100 std away).
  on = np.concatenate([np.tile(ds.modes[0], (30, 1)),
                       np.tile(ds.modes[1], (10, 1))])
  off = np.zeros((40, 2))
  m = mode_metrics(np.concatenate([on, off]), ds.modes, ds.std)
  assert m["modes"] == 2
  np.testing.assert_allclose(m["high_quality"], 0.5)
  h = np.array([0.75, 0.25])
  np.testing.assert_allclose(m["reverse_kl"], np.sum(h * np.log(h * 8)))


def test_three_std_threshold_uses_per_axis_std():
  ds = toy.ring()
  inside = ds.modes[0] + np.array([2.9 * 0.01, 0.0])
  outside = ds.modes[0] + np.array([2.1 * 0.01, 2.2 * 0.01])  # sqrt(9.25)>3
  m = mode_metrics(np.stack([inside, outside]), ds.modes, ds.std)
  np.testing.assert_allclose(m["high_quality"], 0.5)


def test_toy_samplers_match_their_protocol():
  import jax
  key = jax.random.PRNGKey(0)
  ring = toy.ring()
  x, _ = ring.sample(key, 4000)
  m = mode_metrics(np.asarray(x), ring.modes, ring.std)
  assert m["modes"] == 8 and m["high_quality"] > 0.97
  np.testing.assert_allclose(np.linalg.norm(ring.modes, axis=1), 1.0,
                             rtol=1e-6)
  grid = toy.grid()
  assert sorted(set(grid.modes[:, 0].tolist())) == [-4, -2, 0, 2, 4]
  for name in ["8gaussians", "25gaussians"]:
    ds = toy.DATASETS.get(name)(None)
    x, _ = ds.sample(key, 4000)
    m = mode_metrics(np.asarray(x), ds.modes, ds.std)
    assert m["modes"] == len(ds.modes) and m["high_quality"] > 0.97
  x, _ = toy.swissroll().sample(key, 1000)
  assert np.all(np.isfinite(np.asarray(x))) and x.shape == (1000, 2)
