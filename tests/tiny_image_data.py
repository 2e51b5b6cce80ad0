"""A tiny labelled image dataset for fast tests (``--extra_modules``).

``tiny_digits``: 64 random 8x8x1 uint8 images in 10 classes, registered
through the public dataset registry like a user's own dataset would be.
"""

import numpy as np

from gan_jax.data import DATASETS
from gan_jax.data import images


def make(context):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
  y = np.arange(64) % 10
  return images.ImageDataset(x, y, 10, context.seed, "tiny_digits")


if "tiny_digits" not in DATASETS:
  DATASETS.register("tiny_digits", make)
