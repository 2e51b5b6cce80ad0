"""MLP generators and discriminators for 2-D toy data.

* ``pacgan_mlp`` / ``pacgan_maxout``: the PacGAN toy pair (Lin et al. 2018,
  authors' code): G = 4 fully connected layers of 400 units with ReLU and
  BatchNorm, linear 2-D output; D = 3 maxout layers of 200 units with 5 pieces,
  then a linear output; every weight from N(0, 0.02), as the authors' config
  (``weights_init_std``).
* ``mlp`` (G and D): plain ReLU MLPs, e.g. the WGAN-GP toy script's 3 hidden
  layers of 512 units (Gulrajani et al. 2017), Flax's lecun_normal
  initialization (the authors' script: He for hidden layers, Glorot for the
  output; ``--g.init=he_normal --d.init=he_normal`` is the nearer choice).
``--g.init`` / ``--d.init`` override the initialization of either.

Widths and depths come from ``--g.hidden/--g.layers/--d.hidden/--d.layers``.
``--d.norm`` (default none) normalizes D's hidden layers: ``spectral``
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

from gan_jax import models
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

for _side, _net in (("g", "generators"), ("d", "discriminators")):
  models.knob(_side, "init", "enum", f"Kernel initialization of the MLP "
              f"{_net} (pacgan_*, mlp); biases start at 0. Default: the "
              f"architecture's reference: N(0, 0.02) for the PacGAN pair "
              f"(the authors' config), Flax's lecun_normal for mlp.",
              list(_INITS))
models.knob("g", "batchnorm", "boolean", "BatchNorm in MLP generators "
            "(default true).")


def _generator(shape, num_classes, common, hidden, layers, batchnorm, init):  # pylint: disable=redefined-outer-name
  return MLPGenerator(out_shape=tuple(shape), hidden=hidden, layers=layers,
                      batchnorm=batchnorm, num_classes=num_classes,
                      bn_axis_name=common.bn_axis_name, dtype=common.dtype,
                      kernel_init=_INITS[init])


@GENERATORS.register("pacgan_mlp")
def pacgan_generator(shape, num_classes, common, *, hidden: int = 400,
                     layers: int = 4, batchnorm: bool = True,  # pylint: disable=redefined-outer-name
                     init: str = "normal_0.02"):
  # The authors' config: every weight from N(0, 0.02), biases 0.
  return _generator(shape, num_classes, common, hidden, layers, batchnorm,
                    init)


@GENERATORS.register("mlp")
def mlp_generator(shape, num_classes, common, *, hidden: int = 400,
                  layers: int = 4, batchnorm: bool = True,  # pylint: disable=redefined-outer-name
                  init: str = "lecun_normal"):
  return _generator(shape, num_classes, common, hidden, layers, batchnorm,
                    init)


@DISCRIMINATORS.register("pacgan_maxout")
def pacgan_discriminator(shape, num_classes, common, *, hidden: int = 200,
                         layers: int = 3, pieces: int = 5,  # pylint: disable=redefined-outer-name
                         init: str = "normal_0.02", norm: str = "none",
                         minibatch: str = "none", mbd_kernels: int = 100,
                         mbd_kernel_dim: int = 5, mbstd_group_size: int = 4):
  del shape
  return MLPDiscriminator(
      hidden=hidden, layers=layers, pieces=pieces, num_classes=num_classes,
      dtype=common.dtype, kernel_init=_INITS[init], minibatch=minibatch,
      mbd_kernels=mbd_kernels, mbd_kernel_dim=mbd_kernel_dim,
      mbstd_group_size=mbstd_group_size, norm=norm,
      bn_axis_name=common.bn_axis_name)


@DISCRIMINATORS.register("mlp")
def mlp_discriminator(shape, num_classes, common, *, hidden: int = 200,
                      layers: int = 3, init: str = "lecun_normal",  # pylint: disable=redefined-outer-name
                      norm: str = "none", minibatch: str = "none",
                      mbd_kernels: int = 100, mbd_kernel_dim: int = 5,
                      mbstd_group_size: int = 4):
  del shape
  return MLPDiscriminator(
      hidden=hidden, layers=layers, pieces=0, num_classes=num_classes,
      dtype=common.dtype, kernel_init=_INITS[init], minibatch=minibatch,
      mbd_kernels=mbd_kernels, mbd_kernel_dim=mbd_kernel_dim,
      mbstd_group_size=mbstd_group_size, norm=norm,
      bn_axis_name=common.bn_axis_name)
