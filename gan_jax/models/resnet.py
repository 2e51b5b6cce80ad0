"""The CIFAR ResNets of WGAN-GP (Gulrajani et al. 2017, App. F) and SNGAN
(Miyato et al. 2018, App. B.4, Table 4); registry name ``resnet`` for both.

G: z -> dense to a 4x4 map (7x7 for 28x28 images) -> residual up blocks
(BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, shortcut up-conv1x1; nearest-neighbour
upsampling) to the output size -> BN, ReLU, conv3x3, tanh. 32x32: 3 blocks.
D: an "optimized" first block (conv-ReLU-conv-pool, shortcut pool-conv1x1),
down blocks (ReLU-conv-ReLU-conv-pool) until the map is at most 8x8, two
blocks without resampling, ReLU, global sum pooling (SN-GAN's; WGAN-GP's
authors take the mean: ``--d.pool=mean``), linear output.

Every block has ``--g.channels`` / ``--d.channels`` channels (128 in both
papers' CIFAR models except SNGAN's 256 in G). BatchNorm in G only by default
(WGAN-GP); ``--d.norm=spectral`` makes it SNGAN's D, spectral norm on every
layer. Conditioning (``num_classes > 0``): class-conditional BatchNorm in G
(or a one-hot label joined to z when ``--g.norm=none``) and a projection
discriminator (Miyato & Koyama 2018, Eq. 3) on the pooled features.
Convolutions use Glorot-uniform initialization, scaled by sqrt(2) inside the
residual branches (as in the SNGAN code).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from gan_jax import models
from gan_jax.models import DISCRIMINATORS, GENERATORS
from gan_jax.models import heads, layers

_init = nn.initializers.xavier_uniform()
_init_res = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")


def _upsample(x):
  """Nearest-neighbour 2x upsampling."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _downsample(x):
  """2x2 average pooling."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class GBlock(nn.Module):
  """Residual up block of the generator."""
  features: int
  norm: str = "batch"
  num_classes: int = 0
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  def _norm(self, h, y, train):
    if self.norm == "batch" and self.num_classes > 0:
      return layers.ConditionalBatchNorm(
          self.num_classes, axis_name=self.bn_axis_name, dtype=self.dtype)(
              h, y, train)
    return layers.normalize(h, self.norm, train, axis_name=self.bn_axis_name,
                            dtype=self.dtype)

  @nn.compact
  def __call__(self, x, y, train: bool):
    h = nn.relu(self._norm(x, y, train))
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype,
                kernel_init=_init_res)(_upsample(h))
    h = nn.relu(self._norm(h, y, train))
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype,
                kernel_init=_init_res)(h)
    s = nn.Conv(self.features, (1, 1), dtype=self.dtype,
                kernel_init=_init)(_upsample(x))
    return h + s


class DBlock(nn.Module):
  """Residual block of the discriminator (optionally downsampling).

  ``first``: the optimized input block, without a leading activation, with
  the shortcut pooled before its 1x1 convolution.
  """
  features: int
  down: bool = True
  first: bool = False
  norm: str = "none"
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    sn = self.norm == "spectral"

    def conv(features, size, init):
      return layers.spectral_norm(
          nn.Conv(features, (size, size), dtype=self.dtype,
                  kernel_init=init), sn, train)

    def act(h):
      return nn.relu(layers.normalize(h, self.norm, train,
                                      axis_name=self.bn_axis_name,
                                      dtype=self.dtype))

    h = x if self.first else act(x)
    h = conv(self.features, 3, _init_res)(h)
    h = conv(self.features, 3, _init_res)(act(h))
    if self.down:
      h = _downsample(h)
    s = x
    if self.first:
      s = conv(self.features, 1, _init)(_downsample(s))
    elif self.down or x.shape[-1] != self.features:
      s = conv(self.features, 1, _init)(s)
      s = _downsample(s) if self.down else s
    return h + s


class ResNetGenerator(nn.Module):
  """G(z, y=None, train=True) -> images in [-1, 1] of ``out_shape``."""
  out_shape: Sequence[int]
  channels: int = 128
  norm: str = "batch"
  num_classes: int = 0
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, y=None, train: bool = True):
    layers.require_label(y, self.num_classes, "resnet")
    base, ups = layers.image_levels(self.out_shape, "resnet")
    h = z.astype(self.dtype).reshape(z.shape[0], -1)
    if self.norm != "batch":  # no conditional BatchNorm: condition the input
      label = layers.one_hot_label(y, self.num_classes, self.dtype)
      if label is not None:
        h = jnp.concatenate([h, label], axis=-1)
    h = nn.Dense(base * base * self.channels, dtype=self.dtype,
                 kernel_init=_init)(h)
    h = h.reshape(-1, base, base, self.channels)
    for _ in range(ups):
      h = GBlock(self.channels, self.norm, self.num_classes,
                 self.bn_axis_name, self.dtype)(h, y, train)
    # The final BatchNorm is unconditional, as in the SNGAN code.
    h = nn.relu(layers.normalize(h, self.norm, train,
                                 axis_name=self.bn_axis_name,
                                 dtype=self.dtype))
    h = nn.Conv(self.out_shape[-1], (3, 3), dtype=self.dtype,
                kernel_init=_init)(h)
    return jnp.tanh(h)


class ResNetDiscriminator(nn.Module):
  """D(x, y=None, train=True) -> float32 logits of shape (batch,)."""
  in_shape: Sequence[int]
  channels: int = 128
  norm: str = "none"
  num_classes: int = 0
  minibatch: str = "none"
  mbd_kernels: int = 100
  mbd_kernel_dim: int = 5
  mbstd_group_size: int = 4
  pool: str = "sum"  # global pooling: sum (SN-GAN) or mean (WGAN-GP)
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y=None, train: bool = True):
    layers.require_label(y, self.num_classes, "resnet")
    layers.image_levels(self.in_shape, "resnet")
    sn = self.norm == "spectral"
    h = x.astype(self.dtype)
    block = dict(norm=self.norm, bn_axis_name=self.bn_axis_name,
                 dtype=self.dtype)
    h = DBlock(self.channels, down=True, first=True, **block)(h, train)
    while h.shape[1] > 8:
      h = DBlock(self.channels, down=True, **block)(h, train)
    for _ in range(2):
      h = DBlock(self.channels, down=False, **block)(h, train)
    h = nn.relu(h)
    h = layers.apply_minibatch_features(
        h, self.minibatch, num_kernels=self.mbd_kernels,
        kernel_dim=self.mbd_kernel_dim, group_size=self.mbstd_group_size,
        dtype=self.dtype)
    if h.ndim == 4:
      pool = jnp.sum if self.pool == "sum" else jnp.mean
      h = pool(h, axis=(1, 2))  # global pooling
    return heads.discriminator_output(
        self, h, y, num_classes=self.num_classes, spectral=sn, train=train,
        dtype=self.dtype, kernel_init=_init)


models.knob("d", "pool", "enum", "Global pooling of the resnet "
            "discriminator before its linear output: sum (SN-GAN's code, the "
            "default) or mean (WGAN-GP's gan_cifar_resnet.py).",
            ["sum", "mean"])


@GENERATORS.register("resnet")
def resnet_generator(shape, num_classes: int, common: models.Common, *,
                     channels: int = 64, norm: str = "batch") -> nn.Module:
  layers.image_levels(shape, "resnet")
  return ResNetGenerator(
      out_shape=tuple(shape), channels=channels, norm=norm,
      num_classes=num_classes, bn_axis_name=common.bn_axis_name,
      dtype=common.dtype)


@DISCRIMINATORS.register("resnet")
def resnet_discriminator(shape, num_classes: int, common: models.Common, *,
                         channels: int = 64, norm: str = "none",
                         pool: str = "sum", minibatch: str = "none",
                         mbd_kernels: int = 100, mbd_kernel_dim: int = 5,
                         mbstd_group_size: int = 4) -> nn.Module:
  layers.image_levels(shape, "resnet")
  return ResNetDiscriminator(
      in_shape=tuple(shape), channels=channels, norm=norm,
      num_classes=num_classes, minibatch=minibatch, mbd_kernels=mbd_kernels,
      mbd_kernel_dim=mbd_kernel_dim, mbstd_group_size=mbstd_group_size,
      pool=pool, bn_axis_name=common.bn_axis_name, dtype=common.dtype)
