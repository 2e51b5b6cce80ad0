"""DCGAN (Radford et al. 2015), unconditional and conditional; registry name
``dcgan`` for both networks.

G: z -> dense to a 7x7 (28x28 output) or 4x4 map of ``g_channels * 2^(k-1)``
channels -> BatchNorm, ReLU -> k-1 upsampling blocks halving the channels,
each with BatchNorm and ReLU -> an upsampling layer to the image channels and
tanh (no BatchNorm on the output). 28: 7->14->28; 32: 4->8->16->32;
64: 4->...->64. Upsampling is sub-pixel by default (``--g.upsample``).

D: 4x4 stride-2 convolutions doubling ``d_channels`` down to 7x7 or 4x4
(``conv.DownConv``: XLA's convolution with hand-written gradients, im2col
for the 1-channel input layer; far faster on CPU than XLA's own convolution
gradients), each followed by LeakyReLU 0.2, normalized
(``--d.norm``, BatchNorm by default) except the input layer; optional
minibatch features; a linear output.

Weights from N(0, 0.02). Conditioning (``num_classes > 0``): G joins a one-hot
label to z, so its first layer adds a learned per-class embedding
(W [z; onehot(y)] = W_z z + E[y]); D is a projection discriminator (Miyato &
Koyama 2018, Eq. 3): logit = w.h + <E[y], h> on the final features h.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from absl import logging

from gan_jax import models
from gan_jax.models import DISCRIMINATORS, GENERATORS
from gan_jax.models import conv, heads, layers


class DCGANGenerator(nn.Module):
  """G(z, y=None, train=True) -> images in [-1, 1] of ``out_shape``."""
  out_shape: Sequence[int]
  channels: int = 64
  upsample: str = "subpixel"
  norm: str = "batch"
  num_classes: int = 0
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, y=None, train: bool = True):
    layers.require_label(y, self.num_classes, "dcgan")
    base, ups = layers.image_levels(self.out_shape, "dcgan")
    h = z.astype(self.dtype).reshape(z.shape[0], -1)
    label = layers.one_hot_label(y, self.num_classes, self.dtype)
    if label is not None:
      h = jnp.concatenate([h, label], axis=-1)
    bias = self.norm == "none"  # a bias before BatchNorm is redundant
    width = self.channels * 2 ** (ups - 1)
    h = nn.Dense(base * base * width, use_bias=bias, dtype=self.dtype,
                 kernel_init=layers.dcgan_init)(h)
    h = h.reshape(-1, base, base, width)
    h = nn.relu(layers.normalize(h, self.norm, train,
                                 axis_name=self.bn_axis_name,
                                 dtype=self.dtype))
    for _ in range(ups - 1):
      width //= 2
      h = conv.Upsample(width, self.upsample, use_bias=bias,
                        dtype=self.dtype)(h)
      h = nn.relu(layers.normalize(h, self.norm, train,
                                   axis_name=self.bn_axis_name,
                                   dtype=self.dtype))
    h = conv.Upsample(self.out_shape[-1], self.upsample,
                      dtype=self.dtype)(h)
    return jnp.tanh(h)


class DCGANDiscriminator(nn.Module):
  """D(x, y=None, train=True) -> float32 logits of shape (batch,)."""
  in_shape: Sequence[int]
  channels: int = 64
  norm: str = "batch"
  num_classes: int = 0
  minibatch: str = "none"
  mbd_kernels: int = 100
  mbd_kernel_dim: int = 5
  mbstd_group_size: int = 4
  bn_axis_name: Optional[str] = None
  conv: str = "auto"  # conv.DownConv mode: auto, conv, patches, xla
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y=None, train: bool = True):
    layers.require_label(y, self.num_classes, "dcgan")
    _, downs = layers.image_levels(self.in_shape, "dcgan")
    sn = self.norm == "spectral"
    h = x.astype(self.dtype)
    width = self.channels
    for i in range(downs):
      norm = "none" if i == 0 else self.norm  # no normalization on the input
      h = layers.spectral_norm(
          conv.DownConv(width, use_bias=norm in ("none", "spectral"),
                        mode=self.conv, dtype=self.dtype,
                        kernel_init=layers.dcgan_init, name=f"Conv_{i}"),
          sn, train)(h)
      h = layers.normalize(h, norm, train, axis_name=self.bn_axis_name,
                           dtype=self.dtype)
      h = nn.leaky_relu(h, 0.2)
      width *= 2
    h = layers.apply_minibatch_features(
        h, self.minibatch, num_kernels=self.mbd_kernels,
        kernel_dim=self.mbd_kernel_dim, group_size=self.mbstd_group_size,
        dtype=self.dtype)
    h = h.reshape(h.shape[0], -1)
    return heads.discriminator_output(
        self, h, y, num_classes=self.num_classes, spectral=sn, train=train,
        dtype=self.dtype, kernel_init=layers.dcgan_init)


models.knob("g", "upsample", "enum", "DCGAN generator upsampling: "
            "convolution then depth-to-space, or a transposed convolution "
            "(whose gradient is very slow in XLA on CPU). Default subpixel.",
            ["subpixel", "transpose"])
models.knob("d", "conv", "enum", "How the DCGAN discriminator computes its "
            "4x4 stride-2 convolutions (same parameters and function; "
            "conv.DownConv): conv = XLA's convolution with hand-written "
            "gradients, patches = im2col x matrix, xla = XLA's own gradients "
            "(fast on GPU/TPU, very slow on CPU); auto (the default) = "
            "patches for at most 4 input channels, else conv.",
            ["auto", "conv", "patches", "xla"], safe=True)


@GENERATORS.register("dcgan")
def dcgan_generator(shape, num_classes: int, common: models.Common, *,
                    channels: int = 64, upsample: str = "subpixel",
                    norm: str = "batch") -> nn.Module:
  layers.image_levels(shape, "dcgan")  # fail early on unsupported shapes
  return DCGANGenerator(
      out_shape=tuple(shape), channels=channels, upsample=upsample,
      norm=norm, num_classes=num_classes,
      bn_axis_name=common.bn_axis_name, dtype=common.dtype)


@DISCRIMINATORS.register("dcgan")
def dcgan_discriminator(shape, num_classes: int, common: models.Common, *,
                        channels: int = 64, conv: str = "auto",  # pylint: disable=redefined-outer-name
                        norm: Optional[str] = None, minibatch: str = "none",
                        mbd_kernels: int = 100, mbd_kernel_dim: int = 5,
                        mbstd_group_size: int = 4) -> nn.Module:
  _, downs = layers.image_levels(shape, "dcgan")
  if norm is not None and downs == 1 and norm != "spectral":
    # One convolution (8 or 14 px): the input layer, never normalized;
    # only spectral norm (of it and the output layer) acts.
    logging.warning("--d.norm=%s has no effect here: the dcgan "
                    "discriminator of a %dx%d image has only its input "
                    "layer, never normalized", norm, shape[0], shape[1])
  return DCGANDiscriminator(
      in_shape=tuple(shape), channels=channels, conv=conv,
      norm=norm or "batch", num_classes=num_classes, minibatch=minibatch,
      mbd_kernels=mbd_kernels, mbd_kernel_dim=mbd_kernel_dim,
      mbstd_group_size=mbstd_group_size, bn_axis_name=common.bn_axis_name,
      dtype=common.dtype)
