"""Heads on a discriminator's trunk: networks of their own (own params,
own optimizer state) that read the features a discriminator sows before
its output layer (``layers.sow_features``).

InfoGAN's Q network and ACGAN's auxiliary classifier are ``Head``s; a
method names the head as one of its networks (``"Q"``, ``"C"``) and applies
it to ``GAN.discriminate(..., features=True)``'s features, so a head
combines with any backbone that sows its features (dcgan, resnet,
goodfellow, mlp).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from gan_jax.models import layers


class Head(nn.Module):
  """features -> [Dense(hidden) -> norm -> leaky ReLU(0.2)] -> Dense(out).

  ``hidden`` 0: one linear layer (ACGAN's softmax classifier). Features
  of any rank are flattened first. Returns float32 (batch, out)."""
  out: int
  hidden: int = 0
  norm: str = "batch"  # batch | none
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, train: bool = True):
    h = h.reshape(h.shape[0], -1).astype(self.dtype)
    if self.hidden:
      # No bias before BatchNorm (it would be cancelled: its gradient is
      # rounding noise, which Adam magnifies into real steps).
      h = nn.Dense(self.hidden, use_bias=self.norm == "none",
                   dtype=self.dtype)(h)
      h = layers.normalize(h, self.norm, train, axis_name=self.bn_axis_name,
                           dtype=self.dtype)
      h = nn.leaky_relu(h, 0.2)
    return nn.Dense(self.out, dtype=self.dtype)(h).astype(jnp.float32)
