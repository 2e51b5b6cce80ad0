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


def discriminator_output(module: nn.Module, h, y=None, *, outputs: int = 1,
                         num_classes: int = 0, spectral: bool = False,
                         train: bool = True, dtype: Any = jnp.float32,
                         kernel_init=nn.initializers.lecun_normal()):
  """The output of every built-in discriminator, on its trunk's final
  features ``h`` (batch, features); called inside ``module``'s compact
  ``__call__`` (its layers are the module's own: ``Dense_k``, ``Embed_0``).

  Sows ``h`` for the heads above (``layers.sow_features``), then one linear
  logit per sample ((batch,) float32), or ``outputs`` > 1 logits (MAD-GAN's
  k+1), plus the projection of the label's embedding on ``h`` when
  ``num_classes`` > 0 (projection discriminator, Miyato & Koyama 2018,
  eq. 3), spectrally normalized with ``spectral``."""
  layers.sow_features(module, h)
  logits = layers.spectral_norm(
      nn.Dense(outputs, dtype=dtype, kernel_init=kernel_init), spectral,
      train)(h)
  if outputs > 1:
    return logits.astype(jnp.float32)
  logit = logits[:, 0]
  if num_classes > 0:
    embed = layers.spectral_norm(
        nn.Embed(num_classes, h.shape[-1], dtype=dtype,
                 embedding_init=kernel_init), spectral, train)(y)
    logit = logit + jnp.sum(embed * h, axis=-1)
  return logit.astype(jnp.float32)
