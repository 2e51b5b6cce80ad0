"""The original GAN's MNIST networks (Goodfellow et al. 2014) and the
conditional MLP GAN (Mirza & Osindero 2014).

Source: the authors' ``adversarial`` repository (``mnist.yaml``): G is an MLP
of two ReLU layers of 1200 units with a sigmoid output; D has two maxout
layers of 240 units with 5 pieces and a sigmoid output unit, with dropout
(inputs kept with probability 0.8, hidden units 0.5); weights uniform in
+-0.05 (G) and +-0.005 (D), on pixels in [0, 1]. The networks compute the
authors' functions on the project's [-1, 1] data: D reads (x + 1) / 2, and
G's output tanh(a / 2) = 2 sigmoid(a) - 1 is their sigmoid output mapped to
[-1, 1]. With plain SGD that scale matters: on [-1, 1] pixels
goodfellow2014_mnist.flags diverged within 300 updates.
D returns the logit (the loss applies the sigmoid). Not reproduced: G's
output biases initialized from the data's pixel means (a run with them
collapsed by 5,000 updates). The max column norm
constraint of the original D is not reproduced. Widths and depths come from
``--g.hidden/--g.layers/--d.hidden/--d.layers/--d.pieces`` (the
flagfile sets the paper's values), dropout from ``--d.dropout`` and
``--d.input_dropout``.

Registry names: ``goodfellow_mlp`` / ``goodfellow_maxout``, and
``cgan_mlp`` / ``cgan_maxout``, the same networks required to be conditional:
with ``num_classes > 0`` a one-hot label is joined to z and to D's flattened
input (Mirza & Osindero 2014, Sec. 3.2; their separate label layers before the
joint layer are folded into the first layer).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from gan_jax import models
from gan_jax.errors import UserError
from gan_jax.models import DISCRIMINATORS, GENERATORS
from gan_jax.models import heads, layers


def _uniform(scale: float):
  """U(-scale, scale) initializer."""
  base = nn.initializers.uniform(2 * scale)

  def init(key, shape, dtype=jnp.float32):
    return base(key, shape, dtype) - scale

  return init


class MLPGenerator(nn.Module):
  """G(z, y=None, train=True) -> samples in [-1, 1] of ``out_shape``."""
  out_shape: Sequence[int]
  hidden: int = 1200
  num_layers: int = 2
  norm: str = "none"
  num_classes: int = 0
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, y=None, train: bool = True):
    layers.require_label(y, self.num_classes, "goodfellow_mlp")
    init = _uniform(0.05)
    h = z.astype(self.dtype).reshape(z.shape[0], -1)
    label = layers.one_hot_label(y, self.num_classes, self.dtype)
    if label is not None:
      h = jnp.concatenate([h, label], axis=-1)
    for _ in range(self.num_layers):
      h = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=init)(h)
      h = nn.relu(layers.normalize(h, self.norm, train,
                                   axis_name=self.bn_axis_name,
                                   dtype=self.dtype))
    x = nn.Dense(math.prod(self.out_shape), dtype=self.dtype,
                 kernel_init=init)(h)
    x = 0.5 * x  # tanh(x / 2) = 2 sigmoid(x) - 1: the authors' sigmoid output
    return jnp.tanh(x).reshape((z.shape[0],) + tuple(self.out_shape))


class MaxoutDiscriminator(nn.Module):
  """D(x, y=None, train=True) -> float32 logits of shape (batch,).

  Dropout (when ``train``) draws from the ``dropout`` RNG stream.
  """
  hidden: int = 240
  num_layers: int = 2
  pieces: int = 5
  dropout: float = 0.5
  input_dropout: float = 0.2
  norm: str = "none"
  num_classes: int = 0
  minibatch: str = "none"
  mbd_kernels: int = 100
  mbd_kernel_dim: int = 5
  mbstd_group_size: int = 4
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y=None, train: bool = True):
    layers.require_label(y, self.num_classes, "goodfellow_maxout")
    init = _uniform(0.005)
    sn = self.norm == "spectral"
    h = x.astype(self.dtype).reshape(x.shape[0], -1)
    h = 0.5 * (h + 1.0)  # the authors' pixels in [0, 1]
    # Input dropout (Goodfellow et al.'s 0.8 keep rate on the pixels) drops
    # x only: a dropped label would have D judge the sample unconditioned.
    if self.input_dropout > 0:
      h = nn.Dropout(self.input_dropout, deterministic=not train)(h)
    label = layers.one_hot_label(y, self.num_classes, self.dtype)
    if label is not None:
      h = jnp.concatenate([h, label], axis=-1)
    for _ in range(self.num_layers):
      h = layers.spectral_norm(
          layers.MaxoutDense(self.hidden, self.pieces, dtype=self.dtype,
                             kernel_init=init), sn, train)(h)
      h = layers.normalize(h, self.norm, train, axis_name=self.bn_axis_name,
                           dtype=self.dtype)
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = layers.apply_minibatch_features(
        h, self.minibatch, num_kernels=self.mbd_kernels,
        kernel_dim=self.mbd_kernel_dim, group_size=self.mbstd_group_size,
        dtype=self.dtype)
    return heads.discriminator_output(self, h, spectral=sn, train=train,
                                      dtype=self.dtype, kernel_init=init)


models.knob("d", "pieces", "integer", "Pieces per maxout unit (default "
            "5).", bounds=">= 1")
models.knob("d", "dropout", "float_", "Dropout rate on the hidden layers "
            "of maxout discriminators (goodfellow_maxout, cgan_maxout; "
            "default 0.5).", bounds="[0, 1)")
models.knob("d", "input_dropout", "float_", "Dropout rate on the input of "
            "maxout discriminators (goodfellow_maxout, cgan_maxout; default "
            "0.2).", bounds="[0, 1)")


def _generator(shape, num_classes: int, common: models.Common, *,
               hidden: int = 400, layers: int = 4,  # pylint: disable=redefined-outer-name
               norm: str = "none") -> nn.Module:
  return MLPGenerator(
      out_shape=tuple(shape), hidden=hidden, num_layers=layers, norm=norm,
      num_classes=num_classes, bn_axis_name=common.bn_axis_name,
      dtype=common.dtype)


def _discriminator(shape, num_classes: int, common: models.Common, *,
                   hidden: int = 200, layers: int = 3, pieces: int = 5,  # pylint: disable=redefined-outer-name
                   dropout: float = 0.5, input_dropout: float = 0.2,
                   norm: str = "none", minibatch: str = "none",
                   mbd_kernels: int = 100, mbd_kernel_dim: int = 5,
                   mbstd_group_size: int = 4) -> nn.Module:
  del shape  # the input is flattened
  return MaxoutDiscriminator(
      hidden=hidden, num_layers=layers, pieces=pieces, dropout=dropout,
      input_dropout=input_dropout, norm=norm, num_classes=num_classes,
      minibatch=minibatch, mbd_kernels=mbd_kernels,
      mbd_kernel_dim=mbd_kernel_dim, mbstd_group_size=mbstd_group_size,
      bn_axis_name=common.bn_axis_name, dtype=common.dtype)


def _conditional(factory, name: str):
  @functools.wraps(factory)
  def make(shape, num_classes: int, common, **knobs) -> nn.Module:
    if num_classes <= 0:
      raise UserError(f"{name} is a conditional GAN: add --conditional (on "
                      "a labelled dataset), or use goodfellow_* for an "
                      "unconditional one")
    return factory(shape, num_classes, common, **knobs)
  return make


GENERATORS.register("goodfellow_mlp", _generator)
DISCRIMINATORS.register("goodfellow_maxout", _discriminator)
GENERATORS.register("cgan_mlp", _conditional(_generator, "cgan_mlp"))
DISCRIMINATORS.register("cgan_maxout",
                        _conditional(_discriminator, "cgan_maxout"))
