"""The shipped classifier weights load and reach their test accuracy."""

import numpy as np
import pytest

from gan_jax.errors import UserError
from gan_jax.features import classifier

# Accuracies of the shipped weights are recorded in docs/evaluation.md.
TARGETS = {"mnist": 0.993, "fashion_mnist": 0.92}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_shipped_weights_accuracy(name):
  images = pytest.importorskip("gan_jax.data.images")
  if images.default_manual_dir(name) is None:
    pytest.skip(f"../shared/data/{name} not present")
  x, y = images.load_arrays(name, "test")
  apply = classifier.load(name)
  feats, logits = classifier.batched(apply, classifier.to_model_input(x),
                                     batch_size=2000)
  assert feats.shape == (10000, classifier.FEATURE_DIM)
  assert logits.shape == (10000, classifier.NUM_CLASSES)
  accuracy = np.mean(np.argmax(logits, -1) == y)
  assert accuracy >= TARGETS[name], accuracy


def test_weight_files_are_small():
  import os  # pylint: disable=g-import-not-at-top
  for name in TARGETS:
    assert os.path.getsize(classifier.weights_path(name)) < 2 * 2**20


def test_unknown_weights_one_line_error():
  with pytest.raises(UserError) as e:
    classifier.load("no_such_dataset")
  assert "\n" not in str(e.value) and "train_classifier" in str(e.value)


def test_batched_pads_last_batch():
  calls = []

  def apply_fn(x):
    calls.append(x.shape)
    return x.sum(axis=(1, 2, 3)), x[:, 0, 0, 0]

  x = np.arange(7 * 4).reshape(7, 2, 2, 1).astype(np.float32)
  s, first = classifier.batched(apply_fn, x, batch_size=3)
  np.testing.assert_allclose(s, x.sum(axis=(1, 2, 3)))
  np.testing.assert_allclose(first, x[:, 0, 0, 0])
  assert set(calls) == {(3, 2, 2, 1)}
