"""Building blocks shared by the architectures.

* Maxout dense layer (Goodfellow et al. 2013).
* Injected normalization (compare_gan style): architectures call
  ``normalize`` on activations and ``spectral_norm`` on their weight layers,
  and the flags decide what happens (``--g.norm``, ``--d.norm``).
* Conditional BatchNorm (class-dependent scale and shift).
* Minibatch features for discriminators: minibatch discrimination (Salimans et
  al. 2016) and the minibatch standard deviation (Karras et al. 2018).

The functions that create modules (``normalize``, ``spectral_norm``,
``apply_minibatch_features``) are meant to be called inside the ``@nn.compact``
method of the calling module, which then owns the created submodules.
DCGAN's strided convolutions (``Upsample``, ``DownConv``) are in
``gan_jax.models.conv``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.errors import UserError


# Radford et al. (2015): every weight drawn from N(0, 0.02).
dcgan_init = nn.initializers.normal(stddev=0.02)


# ------------------------------------------------------------ normalization


def normalize(x, kind: str, train: bool, *, axis_name: Optional[str] = None,
              dtype: Any = jnp.float32, name: Optional[str] = None):
  """Normalizes activations: 'batch' or 'layer'; identity otherwise.

  BatchNorm uses PyTorch's momentum (0.1, i.e. Flax 0.9) and epsilon (1e-5).
  Layer norm standardizes each sample over all its non-batch axes with a
  per-channel scale and shift (the WGAN-GP critic's choice, Gulrajani et al.
  2017, Sec. 4).
  """
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, axis_name=axis_name, dtype=dtype,
                        name=name)(x)
  if kind == "layer":
    return nn.LayerNorm(epsilon=1e-5, reduction_axes=tuple(range(1, x.ndim)),
                        feature_axes=-1, dtype=dtype, name=name)(x)
  return x


def spectral_norm(layer: nn.Module, enabled: bool, train: bool) -> Callable:
  """``layer``, spectrally normalized when ``enabled`` (Miyato et al. 2018).

  Uses ``flax.linen.SpectralNorm``: every parameter of rank >= 2 (a Dense or
  Conv kernel, reshaped to (fan_in, out)) is divided by its largest singular
  value, estimated with one power iteration per call. The vector ``u`` lives
  in ``batch_stats`` and advances only when ``train`` is True, so it carries
  over between steps instead of restarting (Algorithm 1 of the paper).
  Usage: ``h = spectral_norm(nn.Dense(8), sn, train)(x)``.
  """
  if not enabled:
    return layer
  return functools.partial(nn.SpectralNorm(layer), update_stats=train)


class ConditionalBatchNorm(nn.Module):
  """BatchNorm whose scale and shift are looked up from the class label.

  Used by conditional ResNet generators (Miyato & Koyama 2018; de Vries et al.
  2017). Scale embeddings start at 1 and shift embeddings at 0.
  """
  num_classes: int
  axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y, train: bool):
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, use_scale=False, use_bias=False,
                     axis_name=self.axis_name, dtype=self.dtype)(x)
    c = x.shape[-1]
    gamma = nn.Embed(self.num_classes, c, dtype=self.dtype,
                     embedding_init=nn.initializers.ones, name="scale")(y)
    beta = nn.Embed(self.num_classes, c, dtype=self.dtype,
                    embedding_init=nn.initializers.zeros, name="shift")(y)
    expand = (slice(None),) + (None,) * (x.ndim - 2) + (slice(None),)
    return x * gamma[expand] + beta[expand]


# ------------------------------------------------------------------ layers


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def maxout(h, pieces: int):
  """Max over groups of ``pieces`` consecutive features of the last axis:
  (..., features * pieces) -> (..., features).

  Same values as ``h.reshape(..., features, pieces).max(-1)``, with the
  derivative written out: the winning piece takes the whole tangent (the
  first one on exact ties, as in PyTorch). ``jnp.max``'s own derivative
  splits ties evenly and needs a tie count per unit, and on XLA:CPU the
  resulting reduction fused with the next matmul made the gradient of the
  PacGAN discriminator's three maxout layers about 45% of the whole toy
  train step (53 -> 81 steps/s without it; docs/benchmarks.md). A custom
  JVP (not VJP) keeps every order of differentiation available: WGAN-GP and
  R1 take gradients of gradients, unrolled GANs differentiate D's update.
  """
  return _group(h, pieces).max(-1)


def _group(h, pieces):
  return h.reshape(h.shape[:-1] + (h.shape[-1] // pieces, pieces))


@maxout.defjvp
def _maxout_jvp(pieces, primals, tangents):
  (h,), (t,) = primals, tangents
  g = _group(h, pieces)
  win = jnp.argmax(g, axis=-1)[..., None] == jnp.arange(pieces)
  return g.max(-1), jnp.sum(jnp.where(win, _group(t, pieces), 0), axis=-1)


class MaxoutDense(nn.Module):
  """Dense layer of ``features`` units, each the max of ``pieces`` linear
  pieces (Goodfellow et al. 2013)."""
  features: int
  pieces: int
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(self.features * self.pieces, dtype=self.dtype,
                 kernel_init=self.kernel_init)(x)
    return maxout(h, self.pieces)


# -------------------------------------------------------- minibatch features


class MinibatchDiscrimination(nn.Module):
  """Minibatch discrimination (Salimans et al. 2016, Sec. 3.2).

  Features f(x_i) in R^A are mapped by a tensor T in R^{A x B x C} to rows
  M_i in R^{B x C}; c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_L1) and
  o(x_i)_b = sum_j c_b(x_i, x_j). The sum includes j = i, as in the
  paper's equation; the authors' improved-GAN code excludes it (and adds a
  bias per kernel), which differs by the constant 1 per kernel that D's
  next layer can absorb. Returns [f(x_i), o(x_i)], shape (N, A + B).
  Defaults B=100, C=5 as in the authors' code. T is not spectrally
  normalized under ``--d.norm=spectral`` (it is not a linear layer of D's
  path but a projection inside the feature).
  """
  num_kernels: int = 100
  kernel_dim: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    m = nn.Dense(self.num_kernels * self.kernel_dim, use_bias=False,
                 dtype=self.dtype, kernel_init=nn.initializers.normal(0.05),
                 name="T")(x)
    m = m.reshape(-1, self.num_kernels, self.kernel_dim).astype(jnp.float32)
    dist = jnp.sum(jnp.abs(m[:, None] - m[None, :]), axis=-1)  # (N, N, B)
    o = jnp.sum(jnp.exp(-dist), axis=1)
    return jnp.concatenate([x, o.astype(x.dtype)], axis=-1)


def _group_size(batch: int, group_size: int) -> int:
  """The largest divisor of ``batch`` that is at most ``group_size``."""
  g = max(1, min(group_size, batch))
  while batch % g:
    g -= 1
  return g


def minibatch_stddev(x, group_size: int = 4):
  """Minibatch standard deviation (Karras et al. 2018, Sec. 3).

  The batch is split into groups (sample n in group n mod N/G, as in the
  authors' code); the standard deviation of each feature over a group is
  averaged over features into one number, appended to every member of the
  group as an extra feature (an extra channel for (N, H, W, C) inputs).
  """
  n = x.shape[0]
  g = _group_size(n, group_size)
  y = x.astype(jnp.float32).reshape((g, n // g) + x.shape[1:])
  y = y - jnp.mean(y, axis=0, keepdims=True)
  std = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)
  s = jnp.mean(std.reshape(n // g, -1), axis=1)  # (N/G,)
  s = jnp.tile(s, g).astype(x.dtype)  # sample n gets s[n mod N/G]
  s = jnp.broadcast_to(s.reshape((n,) + (1,) * (x.ndim - 1)),
                       x.shape[:-1] + (1,))
  return jnp.concatenate([x, s], axis=-1)


def apply_minibatch_features(x, kind: str, *, num_kernels: int = 100,
                             kernel_dim: int = 5, group_size: int = 4,
                             dtype: Any = jnp.float32):
  """Appends minibatch features to a discriminator's features ``x``.

  ``kind``: 'none' (returns ``x``), 'salimans' (minibatch discrimination;
  flattens ``x`` to (N, A) and returns (N, A + num_kernels)) or 'stddev'
  (one extra feature or channel, same rank as ``x``). Call it inside a
  compact method, before the output layer. Statistics are over the batch the
  module sees (each device's shard under data parallelism).
  """
  if kind == "none":
    return x
  if kind == "salimans":
    return MinibatchDiscrimination(num_kernels, kernel_dim, dtype=dtype)(x)
  if kind == "stddev":
    return minibatch_stddev(x, group_size)
  raise UserError(f"unknown minibatch_disc {kind!r}; valid: none, salimans, "
                  "stddev")


# ---------------------------------------------------------------- shapes


def sow_features(module: nn.Module, h) -> None:
  """Offers a discriminator's final features ``h`` (batch, ...) to heads
  that share its trunk (InfoGAN's Q, ACGAN's classifier: ``models.heads``):
  sown into the ``intermediates`` collection, which only a caller that asks
  for it (``mutable=["intermediates"]``) keeps; otherwise a no-op."""
  module.sow("intermediates", "features", h)


def image_levels(shape, arch: str):
  """(base size, doublings) for a square image: 28 -> (7, 2), 32 -> (4, 3),
  64 -> (4, 4); any 4*2^k or 7*2^k with k >= 1."""
  if len(shape) != 3 or shape[0] != shape[1]:
    raise UserError(f"{arch} needs square images of shape (H, H, C); got "
                    f"{tuple(shape)}")
  size = shape[0]
  for base in (4, 7):
    k, s = 0, size
    while s > base and s % 2 == 0:
      s //= 2
      k += 1
    if s == base and k >= 1:
      return base, k
  raise UserError(f"{arch} supports resolutions 4*2^k or 7*2^k with k >= 1 "
                  f"(8, 14, 16, 28, 32, 56, 64, ...); got {size}x{size}")


def one_hot_label(y, num_classes: int, dtype):
  """One-hot label, or None when unconditional."""
  if num_classes <= 0 or y is None:
    return None
  return jax.nn.one_hot(y, num_classes, dtype=dtype)


def require_label(y, num_classes: int, arch: str):
  """Raises when a conditional model is called without labels."""
  if num_classes > 0 and y is None:
    raise UserError(f"{arch} is conditional ({num_classes} classes) and "
                    "needs labels y")
