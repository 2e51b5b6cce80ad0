"""Stacked MNIST mode counting on constructed predictions."""

import numpy as np
import pytest

from gan_jax.metrics import stacked_mnist


def test_all_modes():
  digits = np.array([[i // 100, i // 10 % 10, i % 10] for i in range(1000)])
  stats = stacked_mnist.mode_stats(np.repeat(digits, 3, axis=0))
  assert stats["modes"] == 1000 and stats["kl"] == pytest.approx(0, abs=1e-12)


def test_one_mode():
  stats = stacked_mnist.mode_stats(np.tile([[3, 1, 4]], (500, 1)))
  assert stats["modes"] == 1
  assert stats["kl"] == pytest.approx(np.log(1000))


def test_two_modes_kl():
  stats = stacked_mnist.mode_stats([[0, 0, 0], [9, 9, 9]] * 10)
  assert stats["modes"] == 2
  assert stats["kl"] == pytest.approx(np.log(500))


def test_classify_channels_order():
  # A stand-in classifier: the digit is the image's mean brightness level.
  def apply_fn(x):
    level = np.rint((np.asarray(x).mean(axis=(1, 2, 3)) + 1) * 4.5)
    return None, np.eye(10)[level.astype(int)] * 10

  rng = np.random.default_rng(0)
  digits = rng.integers(0, 10, size=(37, 3))
  images = np.broadcast_to((digits / 4.5 - 1)[:, None, None, :],
                           (37, 28, 28, 3))
  got = stacked_mnist.classify_channels(images, apply_fn, batch_size=16)
  np.testing.assert_array_equal(got, digits)
