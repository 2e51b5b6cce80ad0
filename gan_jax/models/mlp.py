"""MLP generators and discriminators for 2-D toy data.

* ``pacgan_mlp`` / ``pacgan_maxout``: the PacGAN toy pair (Lin et al. 2018,
  authors' code): G = 4 fully connected layers of 400 units with ReLU and
  BatchNorm, linear 2-D output; D = 3 maxout layers of 200 units with 5 pieces,
  then a linear output; every weight from N(0, 0.02), as the authors' config
  (``weights_init_std``).
* ``mlp`` (G and D): plain ReLU MLPs, e.g. the WGAN-GP toy script's 3 hidden
  layers of 512 units (Gulrajani et al. 2017), Flax's lecun_normal
  initialization (the authors' script: He for hidden layers, Glorot for the
  output; ``--mlp_init=he_normal`` is the nearer choice).
``--mlp_init`` overrides the initialization of either.

Widths and depths come from ``--g_hidden/--g_layers/--d_hidden/--d_layers``.
``--d_norm`` (auto = none) normalizes D's hidden layers: ``spectral``
(Miyato et al. 2018; every weight layer, output included, power-iteration
vectors in ``batch_stats``), ``layer`` or ``batch``.
Conditioning (``num_classes > 0``) joins a one-hot label to the input, as in
Mirza & Osindero (2014).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models import DISCRIMINATORS, GENERATORS
from gan_jax.models import heads
from gan_jax.models import layers as mb_layers


def join_label(x, y, num_classes: int, dtype):
  """Concatenates a one-hot label to flat features (Mirza & Osindero 2014)."""
  if num_classes <= 0 or y is None:
    return x
  return jnp.concatenate([x, jax.nn.one_hot(y, num_classes, dtype=dtype)],
                         axis=-1)


class MLPGenerator(nn.Module):
  """z -> hidden ReLU layers (optionally BatchNorm) -> linear output."""
  out_shape: Sequence[int]
  hidden: int = 400
  layers: int = 4
  batchnorm: bool = True
  num_classes: int = 0
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, z, y=None, train: bool = True):
    h = join_label(z.astype(self.dtype), y, self.num_classes, self.dtype)
    for _ in range(self.layers):
      # A bias before BatchNorm is cancelled by its mean subtraction; its
      # gradient is pure rounding noise, which Adam would amplify.
      h = nn.Dense(self.hidden, use_bias=not self.batchnorm,
                   dtype=self.dtype, kernel_init=self.kernel_init)(h)
      if self.batchnorm:
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         axis_name=self.bn_axis_name, dtype=self.dtype)(h)
      h = nn.relu(h)
    size = 1
    for s in self.out_shape:
      size *= s
    x = nn.Dense(size, dtype=self.dtype, kernel_init=self.kernel_init)(h)
    return x.reshape(x.shape[:-1] + tuple(self.out_shape))


class MLPDiscriminator(nn.Module):
  """x -> hidden layers (maxout or ReLU) -> one logit per sample.

  The input is flattened, so packed inputs (PacGAN's m samples concatenated)
  need no special handling. ``minibatch`` appends minibatch features
  (Salimans et al. 2016 or Karras et al. 2018, ``layers.py``) before the
  output layer. ``outputs`` > 1 gives (batch, outputs) logits (MAD-GAN's k+1
  classes).
  """
  hidden: int = 200
  layers: int = 3
  pieces: int = 0  # 0 = ReLU layers; > 1 = maxout with that many pieces
  num_classes: int = 0
  minibatch: str = "none"
  mbd_kernels: int = 100
  mbd_kernel_dim: int = 5
  mbstd_group_size: int = 4
  outputs: int = 1
  norm: str = "none"  # none | spectral | layer | batch (hidden layers)
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x, y=None, train: bool = True):
    sn = self.norm == "spectral"
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    h = join_label(h, y, self.num_classes, self.dtype)
    for i in range(self.layers):
      if self.pieces > 1:
        # Named as before the shared layer existed: same parameter paths,
        # same initialization from a seed.
        layer = mb_layers.MaxoutDense(self.hidden, self.pieces,
                                      dtype=self.dtype,
                                      kernel_init=self.kernel_init,
                                      name=f"Maxout_{i}")
      else:
        layer = nn.Dense(self.hidden, dtype=self.dtype,
                         kernel_init=self.kernel_init)
      h = mb_layers.spectral_norm(layer, sn, train)(h)
      h = mb_layers.normalize(h, self.norm, train,
                              axis_name=self.bn_axis_name, dtype=self.dtype)
      if self.pieces <= 1:
        h = nn.relu(h)
    h = mb_layers.apply_minibatch_features(
        h, self.minibatch, num_kernels=self.mbd_kernels,
        kernel_dim=self.mbd_kernel_dim, group_size=self.mbstd_group_size,
        dtype=self.dtype)
    return heads.discriminator_output(
        self, h, outputs=self.outputs, spectral=sn, train=train,
        dtype=self.dtype, kernel_init=self.kernel_init)


_INITS = {"lecun_normal": nn.initializers.lecun_normal(),
          "normal_0.02": nn.initializers.normal(0.02),
          "he_normal": nn.initializers.he_normal()}


def _kernel_init(cfg, reference: str):
  """--mlp_init, ``reference`` for auto (the architecture's own)."""
  return _INITS[reference if cfg.mlp_init == "auto" else cfg.mlp_init]


def _generator(cfg, shape, num_classes, init):
  return MLPGenerator(out_shape=tuple(shape), hidden=cfg.g_hidden,
                      layers=cfg.g_layers, batchnorm=cfg.g_batchnorm,
                      num_classes=num_classes,
                      bn_axis_name=mb_layers.bn_axis_name(cfg),
                      dtype=mb_layers.model_dtype(cfg),
                      kernel_init=_kernel_init(cfg, init))


@GENERATORS.register("pacgan_mlp")
def pacgan_generator(cfg, shape, num_classes):
  # The authors' config: every weight from N(0, 0.02), biases 0.
  return _generator(cfg, shape, num_classes, "normal_0.02")


@GENERATORS.register("mlp")
def mlp_generator(cfg, shape, num_classes):
  return _generator(cfg, shape, num_classes, "lecun_normal")


def _d_options(cfg):
  """Minibatch features (--minibatch_disc). (MAD-GAN sets the ``outputs``
  field to its k+1.)"""
  return dict(minibatch=cfg.minibatch_disc, mbd_kernels=cfg.mbd_kernels,
              mbd_kernel_dim=cfg.mbd_kernel_dim,
              mbstd_group_size=cfg.mbstd_group_size,
              norm=mb_layers.resolve_norm(cfg.d_norm, "none"),
              bn_axis_name=mb_layers.bn_axis_name(cfg))


@DISCRIMINATORS.register("pacgan_maxout")
def pacgan_discriminator(cfg, shape, num_classes):
  del shape
  return MLPDiscriminator(hidden=cfg.d_hidden, layers=cfg.d_layers,
                          pieces=cfg.maxout_pieces, num_classes=num_classes,
                          dtype=mb_layers.model_dtype(cfg),
                          kernel_init=_kernel_init(cfg, "normal_0.02"),
                          **_d_options(cfg))


@DISCRIMINATORS.register("mlp")
def mlp_discriminator(cfg, shape, num_classes):
  del shape
  return MLPDiscriminator(hidden=cfg.d_hidden, layers=cfg.d_layers, pieces=0,
                          num_classes=num_classes, dtype=mb_layers.model_dtype(cfg),
                          kernel_init=_kernel_init(cfg, "lecun_normal"),
                          **_d_options(cfg))
