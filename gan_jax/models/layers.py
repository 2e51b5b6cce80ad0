"""Building blocks shared by the architectures.

* Upsampling for generators: a 4x4 stride-2 transposed convolution, or the
  same function as a sub-pixel convolution (convolution, then depth-to-space;
  Shi et al. 2016). On CPU, XLA's gradient of a strided transposed
  convolution is pathologically slow (7x7x128 -> 14x14x64 at batch 64: 251 ms
  forward+backward against 20 ms for a sub-pixel form), so sub-pixel is the
  default.
* Downsampling for discriminators (``DownConv``): a 4x4 stride-2 convolution
  written as patches times a matrix, for the same reason.
* Maxout dense layer (Goodfellow et al. 2013).
* Injected normalization (compare_gan style): architectures call
  ``normalize`` on activations and ``spectral_norm`` on their weight layers,
  and the flags decide what happens (``--g_norm``, ``--d_norm``).
* Conditional BatchNorm (class-dependent scale and shift).
* Minibatch features for discriminators: minibatch discrimination (Salimans et
  al. 2016) and the minibatch standard deviation (Karras et al. 2018).

The functions that create modules (``normalize``, ``spectral_norm``,
``apply_minibatch_features``) are meant to be called inside the ``@nn.compact``
method of the calling module, which then owns the created submodules.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.errors import UserError

NORMS = ("none", "batch", "spectral", "layer")

# Radford et al. (2015): every weight drawn from N(0, 0.02).
dcgan_init = nn.initializers.normal(stddev=0.02)


def model_dtype(cfg) -> Any:
  """Activation dtype of ``--compute_dtype`` (parameters stay float32)."""
  return jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32


def bn_axis_name(cfg) -> Optional[str]:
  """BatchNorm ``axis_name``: 'data' for cross-replica statistics."""
  return "data" if cfg.cross_replica_bn else None


def resolve_norm(kind: str, auto: str) -> str:
  """``kind`` with 'auto' replaced by the architecture's default ``auto``."""
  kind = auto if kind == "auto" else kind
  if kind not in NORMS:
    raise UserError(f"unknown normalization {kind!r}; valid: "
                    f"{', '.join(NORMS)}")
  return kind


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


def depth_to_space(x, scale: int):
  """(N, H, W, C*s*s) -> (N, H*s, W*s, C), channels ordered (s, s, C)."""
  n, h, w, c = x.shape
  out_c = c // (scale * scale)
  x = x.reshape(n, h, w, scale, scale, out_c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * scale, w * scale, out_c)


class Upsample(nn.Module):
  """Doubles the spatial size while mapping to ``features`` channels.

  ``mode='transpose'``: ``nn.ConvTranspose`` with a 4x4 kernel, stride 2,
  'SAME' padding (DCGAN's PyTorch layer: kernel 4, stride 2, padding 1).
  ``mode='subpixel'``: the same function computed without a transposed
  convolution (Shi et al. 2016). Output pixel (2m+a, 2n+b) of that
  transposed convolution depends on a 2x2 window of inputs, rows {m-1, m}
  for a=0 and {m, m+1} for a=1; so a 2x2 convolution of the 1-padded input
  to 4*features channels (one group per phase (a, b)), depth-to-space and a
  one-pixel crop express exactly the transposed convolutions, with the same
  parameter count. The convolution is written as patches times a matrix:
  on CPU XLA's convolution gradients are slow (251 ms forward+backward for
  the transposed 7x7x128 -> 14x14x64 layer at batch 64), matrix products
  are not.
  """
  features: int
  mode: str = "subpixel"
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable = dcgan_init

  @nn.compact
  def __call__(self, x):
    if self.mode == "transpose":
      return nn.ConvTranspose(self.features, (4, 4), strides=(2, 2),
                              padding="SAME", use_bias=self.use_bias,
                              dtype=self.dtype,
                              kernel_init=self.kernel_init)(x)
    if self.mode != "subpixel":
      raise UserError(f"unknown upsampling {self.mode!r}; valid: subpixel, "
                      "transpose")
    cin = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init,
                        (2, 2, cin, 4 * self.features))
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([xp[:, i:i + h + 1, j:j + w + 1]
                               for i in range(2) for j in range(2)], axis=-1)
    y = patches.reshape(-1, 4 * cin) @ kernel.reshape(4 * cin, -1)
    y = depth_to_space(y.reshape(n, h + 1, w + 1, -1), 2)[:, 1:-1, 1:-1]
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,))
      y = y + bias.astype(y.dtype)
    return y


class DownConv(nn.Module):
  """A 4x4 stride-2 'SAME' convolution (DCGAN's downsampling layer).

  Same parameters and function as ``nn.Conv(features, (4, 4), (2, 2),
  'SAME')``. ``mode='patches'`` computes it as patches times a matrix
  (im2col): on CPU XLA's convolution gradients are slow, above all for few
  input channels (D's input layer: 28x28x1 -> 14x14x64 at batch 128, about
  20x slower forward+backward than the patches form), while matrix products
  run near the machine's peak. ``mode='conv'``: ``lax.conv_general_dilated``.
  """
  features: int
  use_bias: bool = True
  mode: str = "patches"
  dtype: Any = jnp.float32
  kernel_init: Callable = dcgan_init

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (4, 4, cin,
                                                     self.features))
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    n, h, w, _ = x.shape
    oh, ow = -(-h // 2), -(-w // 2)
    pads = []
    for size, out in ((h, oh), (w, ow)):
      total = max((out - 1) * 2 + 4 - size, 0)
      pads.append((total // 2, total - total // 2))
    if self.mode == "conv":
      y = jax.lax.conv_general_dilated(
          x, kernel, (2, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    elif self.mode == "patches":
      xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
      patches = jnp.concatenate(
          [xp[:, i:i + 2 * oh - 1:2, j:j + 2 * ow - 1:2]
           for i in range(4) for j in range(4)], axis=-1)
      y = patches.reshape(-1, 16 * cin) @ kernel.reshape(16 * cin, -1)
      y = y.reshape(n, oh, ow, self.features)
    else:
      raise UserError(f"unknown convolution mode {self.mode!r}; valid: "
                      "patches, conv")
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,))
      y = y + bias.astype(y.dtype)
    return y


# -------------------------------------------------------- minibatch features


class MinibatchDiscrimination(nn.Module):
  """Minibatch discrimination (Salimans et al. 2016, Sec. 3.2).

  Features f(x_i) in R^A are mapped by a tensor T in R^{A x B x C} to rows
  M_i in R^{B x C}; c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_L1) and
  o(x_i)_b = sum_j c_b(x_i, x_j) (the sum includes j = i, as in the paper's
  equation). Returns [f(x_i), o(x_i)], shape (N, A + B). Defaults B=100,
  C=5 as in the authors' improved-GAN code.
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


def minibatch_features_from_config(x, cfg, dtype: Any = jnp.float32):
  """``apply_minibatch_features`` with the ``--minibatch_disc`` flags."""
  return apply_minibatch_features(
      x, cfg.minibatch_disc, num_kernels=cfg.mbd_kernels,
      kernel_dim=cfg.mbd_kernel_dim, group_size=cfg.mbstd_group_size,
      dtype=dtype)


# ---------------------------------------------------------------- shapes


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
  raise UserError(f"{arch} supports resolutions 4*2^k or 7*2^k (28, 32, 64, "
                  f"...); got {size}x{size}")


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
