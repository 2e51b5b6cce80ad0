"""Metrics of generated samples against the labels they were made with."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """The share of samples whose predicted class is their label."""
  return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


def confusion(predicted: np.ndarray, codes: np.ndarray, num_codes: int,
              num_classes: int) -> np.ndarray:
  """(num_codes, num_classes) counts of (code, predicted class) pairs."""
  out = np.zeros((num_codes, num_classes), np.int64)
  np.add.at(out, (np.asarray(codes), np.asarray(predicted)), 1)
  return out


def cluster_accuracy(logits: np.ndarray, codes: np.ndarray) -> float:
  """Accuracy of the codes as class predictions after the one-to-one
  assignment of code values to classes that maximizes it (the Hungarian
  algorithm; codes beyond the number of classes count as errors)."""
  predicted = np.argmax(logits, -1)
  num_classes = logits.shape[-1]
  num_codes = int(np.max(codes)) + 1 if len(codes) else 0
  counts = confusion(predicted, codes, num_codes, num_classes)
  rows, cols = linear_sum_assignment(counts, maximize=True)
  return float(counts[rows, cols].sum() / max(len(codes), 1))
