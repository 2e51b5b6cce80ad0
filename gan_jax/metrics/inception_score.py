"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)).

As in the original code, the samples are cut into ``splits`` consecutive
parts; the score is computed per part and the mean and standard deviation
over parts are returned.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import special


def inception_score(logits, splits: int = 10) -> Tuple[float, float]:
  """(mean, std) of the IS of ``(N, C)`` class logits over ``splits`` parts."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2:
    raise ValueError(f"logits must be (N, C), got {logits.shape}")
  n = logits.shape[0]
  if not 1 <= splits <= n:
    raise ValueError(f"splits must be in [1, {n}], got {splits}")
  log_p = special.log_softmax(logits, axis=1)
  scores = []
  for k in range(splits):
    part = log_p[k * n // splits:(k + 1) * n // splits]
    log_py = special.logsumexp(part, axis=0) - np.log(part.shape[0])
    kl = np.sum(np.exp(part) * (part - log_py), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))
