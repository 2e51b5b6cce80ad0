"""Stacked MNIST: 1000 modes from three MNIST digits stacked as RGB channels.

As in VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018): each
sample stacks three MNIST training images drawn independently, one per
channel; its mode is ``100 * d0 + 10 * d1 + d2`` with ``d0`` the digit in the
red channel. Channel ``c`` of epoch ``e`` walks its own permutation of MNIST,
``numpy.random.default_rng([seed, e, c])``, so a sample is a function of
(seed, stream position) like every image stream here.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from gan_jax.data import DATASETS
from gan_jax.data import images as images_lib

NUM_CLASSES = 1000
CHANNELS = 3


def stack(digits: np.ndarray, digit_labels: np.ndarray,
          idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Stacks ``digits[idx[..., c]]`` as channels c; labels in base 10.

  ``digits`` is uint8 (N, H, W, 1); ``idx`` int (..., 3). Returns uint8
  (..., H, W, 3) and int32 (...) labels ``100 d0 + 10 d1 + d2``.
  """
  image = np.concatenate([digits[idx[..., c]] for c in range(CHANNELS)],
                         axis=-1)
  d = digit_labels[idx].astype(np.int32)
  return image, d[..., 0] * 100 + d[..., 1] * 10 + d[..., 2]


class StackedMnist(images_lib.ImageDataset):
  """The Stacked MNIST stream over the MNIST training digits."""

  def __init__(self, digits: np.ndarray, digit_labels: np.ndarray, seed: int,
               eval_loader=None):
    super().__init__(digits, digit_labels, NUM_CLASSES, seed,
                     "stacked_mnist", eval_loader=eval_loader)
    self.shape = self.shape[:2] + (CHANNELS,)

  def examples(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    idx = np.stack([self._indices(positions, c) for c in range(CHANNELS)],
                   axis=-1)
    return stack(self.images, self.labels, idx)


def load_arrays(split: str, *, data_dir: Optional[str] = None,
                manual_dir: Optional[str] = None, image_size: int = 0,
                seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """A fixed Stacked MNIST set of ``len(split)`` samples (for evaluation).

  Epoch 0 of the stream of ``seed`` over the MNIST ``split`` digits.
  """
  digits, labels = images_lib.load_arrays(
      "mnist", split, data_dir=data_dir,
      manual_dir=manual_dir or images_lib.default_manual_dir("mnist"),
      image_size=image_size)
  data = StackedMnist(digits, labels, seed)
  return data.examples(np.arange(len(digits)))


def make(context, image_size: Optional[int] = None) -> StackedMnist:
  """The Stacked MNIST training stream (``context``: a
  ``data.DataContext``), its digits resized to ``image_size`` if given."""
  kwargs = dict(data_dir=context.data_dir,
                manual_dir=context.manual_dir or
                images_lib.default_manual_dir("mnist"),
                image_size=image_size or 0)
  digits, labels = images_lib.load_arrays("mnist", "train", **kwargs)
  return StackedMnist(
      digits, labels, context.seed,
      eval_loader=lambda split: load_arrays(split, **kwargs))


DATASETS.register("stacked_mnist", make)
