"""Tests of Stacked MNIST: channels, labels and determinism."""

import numpy as np
import pytest

from gan_jax.data import images
from gan_jax.data import stacked_mnist


@pytest.fixture(name="digits")
def fixture_digits():
  """30 fake digit images whose pixels encode their label: 10 * label + 3."""
  labels = np.arange(30, dtype=np.int32) % 10
  pics = np.broadcast_to((10 * labels + 3).astype(np.uint8)[:, None, None,
                                                            None],
                         (30, 28, 28, 1)).copy()
  return pics, labels


def test_labels_match_channels(digits):
  ds = stacked_mnist.StackedMnist(*digits, seed=1)
  assert (ds.kind, ds.shape, ds.num_classes) == ("image", (28, 28, 3), 1000)
  b = ds.batches(4, 3, 2, 10)
  assert b["image"].shape == (3, 2, 10, 28, 28, 3)
  pixels = np.rint((b["image"][..., 0, 0, :] + 1) * 127.5).astype(int)
  d = (pixels - 3) // 10  # digit in each channel, (3, 2, 10, 3)
  np.testing.assert_array_equal(b["label"],
                                100 * d[..., 0] + 10 * d[..., 1] + d[..., 2])
  assert b["label"].min() >= 0 and b["label"].max() < 1000


def test_channels_are_independent_and_deterministic(digits):
  ds = stacked_mnist.StackedMnist(*digits, seed=1)
  b = ds.batches(0, 1, 1, 30)
  np.testing.assert_array_equal(b["image"],
                                ds.batches(0, 1, 1, 30)["image"])
  ch = b["image"][0, 0, :, 0, 0, :]
  assert not np.array_equal(ch[:, 0], ch[:, 1])
  assert not np.array_equal(ch[:, 1], ch[:, 2])
  # Each channel walks a permutation: one epoch uses every digit once.
  pixels = np.rint((ch + 1) * 127.5).astype(np.uint8)
  for c in range(3):
    assert sorted(pixels[:, c]) == sorted(digits[0][:, 0, 0, 0])
  other = stacked_mnist.StackedMnist(*digits, seed=2).batches(0, 1, 1, 30)
  assert not np.array_equal(other["label"], b["label"])


def test_shards_and_steps_compose(digits):
  ds = stacked_mnist.StackedMnist(*digits, seed=0)
  full = ds.batches(2, 2, 1, 8)
  halves = [ds.batches(2, 2, 1, 8, p, 2) for p in range(2)]
  np.testing.assert_array_equal(
      full["label"], np.concatenate([h["label"] for h in halves], axis=2))
  parts = np.concatenate([ds.batches(2, 1, 1, 8)["label"],
                          ds.batches(3, 1, 1, 8)["label"]])
  np.testing.assert_array_equal(full["label"], parts)


def test_stack_closed_form():
  pics = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1)
  img, label = stacked_mnist.stack(pics, np.array([7, 8, 9, 1]),
                                   np.array([[0, 1, 2], [3, 3, 0]]))
  np.testing.assert_array_equal(img[:, 0, 0], [[0, 1, 2], [3, 3, 0]])
  np.testing.assert_array_equal(label, [789, 117])


def test_resolves_by_name():
  assert images.is_tfds_name("stacked_mnist")
  from gan_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  assert data_lib.DATASETS.get("stacked_mnist") is stacked_mnist.make
