"""Inception Score: 1 for constant predictions, C for confident uniform ones."""

import numpy as np
import pytest

from gan_jax import metrics


def test_constant_predictions_give_one():
  logits = np.tile(np.random.default_rng(0).normal(size=(1, 10)), (100, 1))
  mean, std = metrics.inception_score(logits, splits=5)
  assert mean == pytest.approx(1.0, abs=1e-9) and std < 1e-9


def test_confident_uniform_gives_num_classes():
  c = 7
  logits = 100.0 * np.eye(c)[np.arange(c * 20) % c]
  mean, std = metrics.inception_score(logits, splits=4)
  assert mean == pytest.approx(c, rel=1e-6) and std < 1e-6


def test_between_bounds():
  logits = np.random.default_rng(1).normal(size=(200, 10)) * 3
  mean, _ = metrics.inception_score(logits, splits=2)
  assert 1.0 < mean < 10.0
