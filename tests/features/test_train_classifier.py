"""The classifier's training step runs and fits a tiny batch."""

import jax
import numpy as np
import optax

from gan_jax.features import classifier
from gan_jax.features import train_classifier


def test_step_reduces_loss_and_accuracy_runs():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (16, 28, 28, 1)).astype(np.uint8)
  y = np.arange(16, dtype=np.int32) % 10
  v = classifier.init_variables(0)
  tx = optax.adam(3e-3)
  params, stats, opt = v["params"], v["batch_stats"], tx.init(v["params"])
  step = train_classifier.make_step(classifier.Classifier(), tx, shift=True,
                                    flip=True)
  xf = classifier.to_model_input(x)
  losses = []
  for i in range(8):
    params, stats, opt, loss, _ = step(params, stats, opt, xf, y,
                                       jax.random.PRNGKey(i))
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  acc = train_classifier.accuracy({"params": params, "batch_stats": stats},
                                  x, y, batch_size=8)
  assert 0.0 <= acc <= 1.0


def test_augment_keeps_shape_and_range():
  x = np.random.default_rng(1).uniform(-1, 1, (4, 28, 28, 1)).astype(
      np.float32)
  out = train_classifier.augment(jax.random.PRNGKey(0), x, True, True)
  assert out.shape == x.shape
  assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
