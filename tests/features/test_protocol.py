"""Which feature network and metrics fit each dataset; compute()."""

import jax
import numpy as np
import pytest

from gan_jax import features
from gan_jax import metrics
from gan_jax.errors import UserError


@pytest.mark.parametrize("dataset,extractor", [
    ("mnist", "mnist"), ("fashion_mnist", "fashion_mnist"),
    ("stacked_mnist", "mnist_channels"), ("cifar10", "inception")])
def test_protocol(dataset, extractor):
  p = features.protocol(dataset)
  assert p.extractor == extractor
  for name in p.metrics:
    assert name in metrics.METRICS


def test_inception_without_weights_is_one_line_error():
  with pytest.raises(UserError, match="--inception_weights=PATH"):
    features.extractor("inception", None)


def test_compute_shapes():
  x = np.random.default_rng(0).uniform(-1, 1, (5, 28, 28, 1))
  out = features.compute("mnist", x, batch_size=4)
  assert out["features"].shape == (5, 128) and out["logits"].shape == (5, 10)
  x3 = np.random.default_rng(1).uniform(-1, 1, (5, 28, 28, 3))
  digits = features.compute("mnist_channels", x3)["digits"]
  assert digits.shape == (5, 3) and digits.min() >= 0 and digits.max() <= 9
  # Other --data.image_size values are resized to the classifiers' 28x28.
  small = np.asarray(jax.image.resize(x, (5, 14, 14, 1), "linear"))
  out14 = features.compute("fashion_mnist", small, batch_size=4)
  assert out14["features"].shape == (5, 128)
  digits = features.compute("mnist_channels", np.repeat(small, 3, -1))
  assert digits["digits"].shape == (5, 3)
  # A smooth 28x28 image at 56x56 gives nearly its own features.
  smooth = np.asarray(jax.image.resize(
      np.random.default_rng(2).uniform(-1, 1, (5, 7, 7, 1)), (5, 28, 28, 1),
      "linear"))
  big = np.asarray(jax.image.resize(smooth, (5, 56, 56, 1), "linear"))
  want = features.compute("mnist", smooth, batch_size=4)["features"]
  got = features.compute("mnist", big, batch_size=4)["features"]
  assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_registry_end_to_end():
  rng = np.random.default_rng(0)
  real = {"features": rng.normal(size=(60, 4)),
          "logits": rng.normal(size=(60, 10))}
  fake = {"features": rng.normal(size=(60, 4)) + 0.5,
          "logits": rng.normal(size=(60, 10)),
          "digits": rng.integers(0, 10, (60, 3))}
  out = {}
  for name in ("fid", "kid", "inception_score", "precision_recall",
               "stacked_mnist_modes"):
    m = metrics.METRICS.get(name)
    out.update(m(real if m.needs_real else None, fake))
  assert set(out) == {"fid", "kid", "kid_std", "inception_score",
                      "inception_score_std", "precision", "recall", "modes",
                      "kl"}
  assert all(np.isfinite(v) for v in out.values())


def test_chosen_metrics_replace_the_default_and_are_checked():
  assert features.protocol("mnist", ("kid", "fid", "kid")).metrics == (
      "kid", "fid")
  assert features.protocol("stacked_mnist", ()).metrics == (
      "stacked_mnist_modes",)
  with pytest.raises(UserError, match="unknown metric 'fdi'; valid: "):
    features.protocol("mnist", ("fdi",))
  # Stacked MNIST's network gives per-channel digits, not features.
  with pytest.raises(UserError, match="'fid' needs features, which the "
                     "feature network of --dataset=stacked_mnist"):
    features.protocol("stacked_mnist", ("fid",))
  assert metrics.METRICS["fid"] is metrics.METRICS.get("fid")
  with pytest.raises(UserError, match="unknown metric"):
    metrics.METRICS["nope"]  # pylint: disable=pointless-statement
