"""Stacked MNIST mode counting (VEEGAN, Srivastava et al. 2017; PacGAN).

A generated (28, 28, 3) image is a digit triple: the MNIST classifier labels
each channel, the mode is ``100 * d0 + 10 * d1 + d2`` (1000 modes). Reported:
the number of modes with at least one sample and KL(p_generated || uniform).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

NUM_MODES = 1000


def modes_of(digit_predictions) -> np.ndarray:
  """``(N, 3)`` per-channel digits -> mode index in [0, 1000)."""
  d = np.asarray(digit_predictions).astype(np.int64)
  if d.ndim != 2 or d.shape[1] != 3:
    raise ValueError(f"digit predictions must be (N, 3), got {d.shape}")
  if d.min(initial=0) < 0 or d.max(initial=0) > 9:
    raise ValueError("digit predictions must be in 0..9")
  return d @ np.array([100, 10, 1])


def mode_stats(digit_predictions) -> Dict[str, float]:
  """dict(modes=covered modes, kl=KL(generated histogram || uniform))."""
  modes = modes_of(digit_predictions)
  if modes.size == 0:
    raise ValueError("no samples to count modes of")
  counts = np.bincount(modes, minlength=NUM_MODES)
  p = counts / counts.sum()
  nz = p > 0
  # KL(p || u) = sum p log(p / (1/1000)); empty modes contribute 0.
  kl = float(np.sum(p[nz] * (np.log(p[nz]) + np.log(NUM_MODES))))
  return {"modes": int(nz.sum()), "kl": kl}


def classify_channels(images, apply_fn: Optional[Callable] = None,
                      batch_size: int = 1000) -> np.ndarray:
  """Digits of each channel of ``(N, H, W, 3)`` images in [-1, 1] -> (N, 3).

  ``apply_fn(x) -> (features, logits)`` defaults to the shipped MNIST
  classifier (which resizes other sizes than 28x28 to it).
  """
  from gan_jax.features import classifier  # pylint: disable=g-import-not-at-top
  x = np.asarray(images, np.float32)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"images must be (N, H, W, 3), got {x.shape}")
  if apply_fn is None:
    apply_fn = classifier.cached("mnist")
  n, h, w, _ = x.shape
  # (N, H, W, 3) -> (3N, H, W, 1), channel-major so each channel's
  # predictions come back as one contiguous block.
  channels = np.transpose(x, (3, 0, 1, 2)).reshape(3 * n, h, w, 1)
  _, logits = classifier.batched(apply_fn, channels, batch_size)
  return np.argmax(logits, -1).reshape(3, n).T


def evaluate_images(images, apply_fn: Optional[Callable] = None
                    ) -> Dict[str, float]:
  """mode_stats of generated Stacked MNIST images."""
  return mode_stats(classify_channels(images, apply_fn))
