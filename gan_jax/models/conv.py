"""DCGAN's 4x4 stride-2 convolutions, fast on CPU: hand-written VJPs.

DCGAN's layers are 4x4 stride-2 convolutions (D: ``DownConv``) and their
transposes (G: ``Upsample``). On XLA:CPU the forward convolution is fast,
but XLA's gradients of strided and transposed convolutions are slow, and so
is im2col (patches x matrix) for wide layers, which spends most of its time
building the patch matrix. Measured on the 2-core machine
(docs/benchmarks.md):

* G's 7x7x128 -> 14x14x64 layer, forward + backward at batch 64: 251 ms
  with XLA's gradients of the transposed convolution, 20 ms sub-pixel; its
  sub-pixel forward at batch 256: 55 ms as im2col, 26 ms as a convolution.
* D's 14x14x64 -> 7x7x128 layer at batch 256, forward + both gradients:
  im2col 139 ms, XLA's own gradients 124 ms, ``down_conv`` 95 ms (forward
  29, input gradient 25).
* Its kernel gradient inside a ``lax.scan`` (the fused training loop) at
  batch 64: 290 ms as XLA emits it, 5-7 ms as ``_kernel_grad``.

So the layers here compute the same functions from fast pieces: XLA's
forward convolutions, each strided layer's input gradient as the other's
forward form, kernel gradients as one canonical convolution, G's upsampling
sub-pixel (Shi et al. 2016; by taps for the few-channel image layer) and
D's few-channel input layer as im2col. They are numerically the same as
the convolutions they replace: same parameters, and the values and first
and second derivatives of ``nn.Conv`` / ``nn.ConvTranspose`` with XLA's
own gradients, to float rounding (tests/models/test_conv.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.errors import UserError
from gan_jax.models import layers


def depth_to_space(x, scale: int):
  """(N, H, W, C*s*s) -> (N, H*s, W*s, C), channels ordered (s, s, C)."""
  n, h, w, c = x.shape
  out_c = c // (scale * scale)
  x = x.reshape(n, h, w, scale, scale, out_c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * scale, w * scale, out_c)


# ------------------------------------------- strided convolutions (4x4, s2)
#
# ``down_conv`` and ``down_conv_transpose`` are mutually adjoint in x, and
# each one's custom VJP takes the input gradient from the other's *forward*
# form: the transpose of a stride-2 4x4 convolution is a stride-1 2x2
# convolution to 4x the channels followed by depth-to-space (sub-pixel,
# Shi et al. 2016), and the transpose of that is the stride-2 convolution.
# The kernel gradient is a stride-1 convolution in canonical form
# (``_kernel_grad``). Both rules are written with differentiable ops, so
# gradients of gradients (WGAN-GP, R1) work. The train step compiles
# convolutions with Eigen rather than YNNPACK on CPU
# (``steps.CPU_COMPILER_OPTIONS``; docs/benchmarks.md).

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, kernel, stride: int, padding):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                      dimension_numbers=_DN)


def _patch_matmul(x, kernel, pads, out_hw):
  """A 4x4 stride-2 convolution as patches times a matrix (im2col), the
  patches built from the space-to-depth input: tap (2u + r, 2v + s) of
  output (p, q) is pixel (r, s) of 2x2 block (p + u, q + v), so the patches
  are four shifted windows of the blocks (one pad, one reshape, one
  concatenate; 1.01x the DCGAN step at batch 64 against sixteen strided
  slices) and the kernel's taps are reordered to match."""
  n, _, _, cin = x.shape
  oh, ow = out_hw
  # Padded (or cropped) to exactly 2 * out + 2 rows and columns.
  padding = [(lo, 2 * o + 2 - size - lo)
             for (lo, _), o, size in zip(pads, out_hw, x.shape[1:3])]
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
  blocks = xp.reshape(n, oh + 1, 2, ow + 1, 2, cin).transpose(0, 1, 3, 2, 4, 5)
  blocks = blocks.reshape(n, oh + 1, ow + 1, 4 * cin)
  patches = jnp.concatenate([blocks[:, u:u + oh, v:v + ow]
                             for u in range(2) for v in range(2)], axis=-1)
  # kernel[2u + r, 2v + s, c, o] in (u, v, r, s, c) order.
  k = kernel.reshape(2, 2, 2, 2, cin, -1).transpose(0, 2, 1, 3, 4, 5)
  y = patches.reshape(-1, 16 * cin) @ k.reshape(16 * cin, -1)
  return y.reshape(n, oh, ow, kernel.shape[-1])


def _kernel_grad(x, g, pads):
  """Kernel gradient of ``down_conv(x, ., pads)`` at cotangent ``g``.

  dk[a, b, i, o] = sum_{n, p, q} xpad[n, 2p + a, 2q + b, i] g[n, p, q, o],
  written as a stride-1 convolution in canonical NHWC/HWIO form: the input
  with batch and channels swapped (i, H, W, n), padded by the convolution,
  convolved with the cotangent as a 2-dilated (p, q, n, o) kernel gives
  (i, 4, 4, o). XLA's own transpose rule emits the same convolution with
  non-canonical dimension labels, and inside a ``lax.scan`` (the fused
  training loop) XLA:CPU runs that through its generic loop emitter, about
  30-50x slower (290 ms against 9 ms outside a loop, D's 14x14x64 -> 7x7x128
  layer at batch 64). In this form it is Eigen's convolution: 5-7 ms at
  batch 64 (26-35 at 256) against 11 (48) for im2col (patches^T x
  cotangent), inside a scan, with YNNPACK's convolutions off
  (``steps.CPU_COMPILER_OPTIONS``).
  """
  oh, ow = g.shape[1:3]
  # x padded (or cropped: negative high padding) to exactly 2 * out + 2.
  padding = [(lo, 2 * o + 2 - size - lo)
             for (lo, _), o, size in zip(pads, (oh, ow), x.shape[1:3])]
  dk = jax.lax.conv_general_dilated(
      x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), padding,
      rhs_dilation=(2, 2), dimension_numbers=_DN,
      preferred_element_type=jnp.float32)
  return dk.transpose(1, 2, 0, 3).astype(g.dtype)


def _varying_axes(x) -> set:
  t = jax.typeof(x)
  mat = getattr(t, "manual_axis_type", None)  # JAX 0.10
  if mat is not None:
    return set(mat.varying)
  return set(getattr(t, "vma", ()) or ())


def _like(ct, primal):
  """A cotangent with ``primal``'s varying-manual-axes type. Inside
  ``shard_map`` a replicated input (a parameter G's update does not
  train) gets the cotangent summed over the axes along which the cotangent
  varies, as JAX's own rules do."""
  extra = tuple(sorted(_varying_axes(ct) - _varying_axes(primal)))
  return jax.lax.psum(ct, extra) if extra else ct


def down_conv_geometry(h: int, w: int):
  """Output size and 'SAME' padding of a 4x4 stride-2 convolution."""
  oh, ow = -(-h // 2), -(-w // 2)
  pads = []
  for size, out in ((h, oh), (w, ow)):
    total = max((out - 1) * 2 + 4 - size, 0)
    pads.append((total // 2, total - total // 2))
  return (oh, ow), tuple(pads)


def subpixel_kernel(kernel):
  """[4, 4, cin, cout] stride-2 kernel -> [2, 2, cout, 4 * cin] kernel of the
  stride-1 convolution whose depth-to-space is the stride-2 convolution's
  transpose: K[r, c, o, (a, b, i)] = W[a + 2(1 - r), b + 2(1 - c), i, o]."""
  cin, cout = kernel.shape[2], kernel.shape[3]
  k = kernel.reshape(2, 2, 2, 2, cin, cout)[::-1, :, ::-1]  # (r, a, c, b)
  return k.transpose(0, 2, 5, 1, 3, 4).reshape(2, 2, cout, 4 * cin)


def strided_kernel(kernel):
  """Inverse of ``subpixel_kernel``: [2, 2, cin, 4 * f] -> [4, 4, f, cin]."""
  cin, f = kernel.shape[2], kernel.shape[3] // 4
  k = kernel.reshape(2, 2, cin, 2, 2, f).transpose(0, 3, 1, 4, 5, 2)
  return k[::-1, :, ::-1].reshape(4, 4, f, cin)


def _down_conv_transpose(y, kernel, pads, hw):
  n, h, w, _ = y.shape
  ks = subpixel_kernel(kernel)  # (2, 2, cin, (a, b, f))
  # The convolutions pad y by one pixel themselves: a separate jnp.pad (and
  # its slices) was a copy of the input per call (DCGAN step +2% at batch
  # 64 and 256 without it).
  if pads == ((1, 1), (1, 1)) and tuple(hw) == (2 * h, 2 * w):
    # The 2x2 convolution of the padded input gives h + 1 rows per row phase
    # a, and the crop keeps h of them: output row 2m is phase 1 at u = m,
    # row 2m + 1 phase 0 at u = m + 1. One convolution per row phase over
    # just the rows it needs does 1/8 fewer products at h = 7 (the DCGAN
    # step at batch 256: 3.56 -> 3.65 steps/s).
    f = ks.shape[-1] // 4
    kr = ks.reshape(ks.shape[:3] + (2, 2 * f))
    z = jnp.stack([_conv(y, kr[:, :, :, 1], 1, ((1, 0), (1, 1))),
                   _conv(y, kr[:, :, :, 0], 1, ((0, 1), (1, 1)))], axis=2)
    z = z.reshape(n, 2 * h, 2 * w + 2, f)  # (n, h, 2, w + 1, (b, f))
    return z[:, :, 1:2 * w + 1]
  z = depth_to_space(_conv(y, ks, 1, ((1, 1), (1, 1))), 2)
  (p0, _), (q0, _) = pads
  return z[:, p0:p0 + hw[0], q0:q0 + hw[1]]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def down_conv(x, kernel, pads):
  """4x4 stride-2 convolution of NHWC ``x`` with an HWIO ``kernel``."""
  return _conv(x, kernel, 2, pads)


def _down_conv_fwd(x, kernel, pads):
  return _conv(x, kernel, 2, pads), (x, kernel)


def _down_conv_bwd(pads, res, g):
  x, kernel = res
  dx = down_conv_transpose(g, kernel, pads, x.shape[1:3])
  return _like(dx, x), _like(_kernel_grad(x, g, pads), kernel)


down_conv.defvjp(_down_conv_fwd, _down_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def down_conv_transpose(y, kernel, pads, hw):
  """Transpose (in x) of ``down_conv(x, kernel, pads)`` for x of spatial size
  ``hw``: a 4x4 stride-2 transposed convolution, computed sub-pixel."""
  return _down_conv_transpose(y, kernel, pads, hw)


def _down_conv_transpose_fwd(y, kernel, pads, hw):
  return _down_conv_transpose(y, kernel, pads, hw), (y, kernel)


def _down_conv_transpose_bwd(pads, hw, res, g):
  del hw
  y, kernel = res
  # <g, D^T y> = <D g, y>: the input gradient is D g, the kernel gradient
  # that of <D_k g, y>.
  return (_like(down_conv(g, kernel, pads), y),
          _like(_kernel_grad(g, y, pads), kernel))


down_conv_transpose.defvjp(_down_conv_transpose_fwd, _down_conv_transpose_bwd)


# Upsample layers with at most this many sub-pixel channels (4 x features)
# use ``_subpixel_by_taps``.
SUBPIXEL_TAPS_MAX_CHANNELS = 16


def _subpixel_by_taps(x, kernel):
  """The sub-pixel upsampling of ``Upsample`` for few output channels
  (an image layer): one product of x with all 4 taps of the 2x2 kernel,
  then the taps shifted and summed, depth-to-space and the crop. Same
  function as the convolution path; XLA:CPU's convolutions run a 4-channel
  output at ~25 GFLOP/s (1.1 ms for DCGAN's 14x14x64 -> 28x28x1 layer at
  batch 64, plus a 1 ms transpose for its kernel gradient), while this form
  is a few small matrix products and elementwise adds, with plain autodiff.
  """
  n, h, w, cin = x.shape
  taps = jnp.einsum("nhwi,rcio->nhwrco", x, kernel,
                    preferred_element_type=jnp.float32).astype(x.dtype)
  # Output row u of the 1-padded 2x2 convolution reads input rows u - 1
  # (tap r = 0) and u (r = 1), for u = 0..h; likewise columns.
  z = sum(jnp.pad(taps[:, :, :, r, c], ((0, 0), (1 - r, r), (1 - c, c),
                                        (0, 0)))
          for r in range(2) for c in range(2))
  return depth_to_space(z, 2)[:, 1:2 * h + 1, 1:2 * w + 1]


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
  parameter count. Its gradients come from ``down_conv_transpose`` (above):
  on CPU XLA's gradients of a transposed convolution are slow (251 ms
  forward+backward for 7x7x128 -> 14x14x64 at batch 64).
  """
  features: int
  mode: str = "subpixel"
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable = layers.dcgan_init

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
    if 4 * self.features <= SUBPIXEL_TAPS_MAX_CHANNELS:
      y = _subpixel_by_taps(x, kernel)
    else:
      y = down_conv_transpose(x, strided_kernel(kernel), ((1, 1), (1, 1)),
                              (2 * h, 2 * w))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,))
      y = y + bias.astype(y.dtype)
    return y


class DownConv(nn.Module):
  """A 4x4 stride-2 'SAME' convolution (DCGAN's downsampling layer).

  Same parameters and function as ``nn.Conv(features, (4, 4), (2, 2),
  'SAME')``, computed by ``mode``:

  * ``conv``: ``down_conv`` (XLA's convolution forward, the custom input
    gradient above);
  * ``patches``: patches times a matrix (im2col): fastest for few input
    channels, where XLA's kernel gradient is slow (D's 28x28x1 input layer
    at batch 256: 4 ms forward and both gradients, 35 ms with XLA's
    convolution gradients);
  * ``xla``: ``lax.conv_general_dilated`` with XLA's own gradients;
  * ``auto`` (default): ``patches`` for at most 4 input channels, else
    ``conv``.
  """
  features: int
  use_bias: bool = True
  mode: str = "auto"
  dtype: Any = jnp.float32
  kernel_init: Callable = layers.dcgan_init

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (4, 4, cin,
                                                     self.features))
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    n, h, w, _ = x.shape
    (oh, ow), pads = down_conv_geometry(h, w)
    mode = self.mode
    if mode == "auto":
      mode = "patches" if cin <= 4 else "conv"
    if mode == "conv":
      y = down_conv(x, kernel, pads)
    elif mode == "xla":
      y = _conv(x, kernel, 2, pads)
    elif mode == "patches":
      y = _patch_matmul(x, kernel, pads, (oh, ow))
    else:
      raise UserError(f"unknown convolution mode {self.mode!r}; valid: "
                      "auto, conv, patches, xla")
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,))
      y = y + bias.astype(y.dtype)
    return y
