"""Tests of gan_jax.models.conv: DCGAN's strided convolutions and their
hand-written derivatives against XLA's convolutions and NumPy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.errors import UserError
from gan_jax.models import conv


def _key(seed):
  # The rbg generator compiles several times faster than threefry on CPU.
  return jax.random.key(seed, impl="rbg")


def test_depth_to_space_matches_numpy():
  x = np.arange(2 * 3 * 3 * 8, dtype=np.float32).reshape(2, 3, 3, 8)
  got = np.asarray(conv.depth_to_space(jnp.asarray(x), 2))
  want = np.zeros((2, 6, 6, 2), np.float32)
  for i in range(3):
    for j in range(3):
      for a in range(2):
        for b in range(2):
          want[:, 2 * i + a, 2 * j + b] = x[:, i, j, (2 * a + b) * 2:
                                            (2 * a + b) * 2 + 2]
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["subpixel", "transpose"])
def test_upsample_shapes_match(mode):
  x = jnp.ones((2, 7, 7, 8))
  up = conv.Upsample(4, mode)
  out = up.apply(up.init(_key(0), x), x)
  assert out.shape == (2, 14, 14, 4)


@pytest.mark.parametrize("taps_max", [0, 16])
def test_subpixel_equals_the_transposed_convolution(taps_max, monkeypatch):
  """A 4x4 stride-2 transposed convolution equals the sub-pixel layer whose
  2x2 kernel is read off the transposed one's impulse responses (computed
  by convolution, or by taps for few channels)."""
  monkeypatch.setattr(conv, "SUBPIXEL_TAPS_MAX_CHANNELS", taps_max)
  cin, cout = 2, 3
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(2, 5, 4, cin).astype(np.float32))
  tr = conv.Upsample(cout, "transpose")
  vt = tr.init(_key(0), x)
  vt = {"params": {"ConvTranspose_0": {
      "kernel": vt["params"]["ConvTranspose_0"]["kernel"],
      "bias": jnp.asarray(rs.randn(cout).astype(np.float32))}}}
  zero_bias = {"params": {"ConvTranspose_0": {
      "kernel": vt["params"]["ConvTranspose_0"]["kernel"],
      "bias": jnp.zeros(cout)}}}
  # Sub-pixel output (2p+a-1, 2q+b-1) reads inputs (p-1+di, q-1+dj): with
  # the impulse at (2, 2), p = 3 - di.
  kernel = np.zeros((2, 2, cin, 4 * cout), np.float32)
  for ci in range(cin):
    delta = np.zeros((1, 5, 5, cin), np.float32)
    delta[0, 2, 2, ci] = 1.0
    y = np.asarray(tr.apply(zero_bias, jnp.asarray(delta)))[0]
    for di in range(2):
      for dj in range(2):
        for a in range(2):
          for b in range(2):
            kernel[di, dj, ci, (2 * a + b) * cout:(2 * a + b + 1) * cout] = (
                y[5 - 2 * di + a, 5 - 2 * dj + b])
  sp = conv.Upsample(cout, "subpixel")
  vs = {"params": {"kernel": jnp.asarray(kernel),
                   "bias": vt["params"]["ConvTranspose_0"]["bias"]}}
  assert jax.tree_util.tree_map(jnp.shape, sp.init(_key(0), x)) == (
      jax.tree_util.tree_map(jnp.shape, vs))
  np.testing.assert_allclose(sp.apply(vs, x), tr.apply(vt, x), atol=1e-5)


@pytest.mark.parametrize("h,w", [(7, 7), (5, 8)])
def test_subpixel_taps_match_the_convolution_path(h, w):
  """The by-taps sub-pixel path (few output channels): same values and
  derivatives (to second order) as the convolution path."""
  rs = np.random.RandomState(1)
  x = jnp.asarray(rs.randn(2, h, w, 6).astype(np.float32))
  kernel = jnp.asarray(0.3 * rs.randn(2, 2, 6, 4 * 3).astype(np.float32))

  def conv_path(x, k):
    return conv.down_conv_transpose(x, conv.strided_kernel(k),
                                    ((1, 1), (1, 1)), (2 * h, 2 * w))

  def loss(f):
    return lambda x, k: jnp.sum(jnp.sin(f(x, k)))

  def grad_norm(f):
    return lambda x, k: sum(jnp.sum(g ** 2) for g in
                            jax.grad(loss(f), (0, 1))(x, k))

  taps = conv._subpixel_by_taps  # pylint: disable=protected-access
  np.testing.assert_allclose(taps(x, kernel), conv_path(x, kernel),
                             rtol=1e-5, atol=1e-5)
  for order, tol in ((loss, 1e-4), (grad_norm, 1e-3)):
    for got, want in zip(jax.grad(order(taps), (0, 1))(x, kernel),
                         jax.grad(order(conv_path), (0, 1))(x, kernel)):
      np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("h,w", [(14, 14), (7, 7), (9, 6), (6, 10)])
def test_strided_conv_gradients_match_xla(h, w):
  """down_conv / down_conv_transpose: XLA's values, and custom VJPs equal to
  XLA's own derivatives, to first and second order (gradient penalties
  differentiate D's input gradient)."""
  cin, cout = 3, 5
  x = jax.random.normal(_key(0), (2, h, w, cin))
  k = jax.random.normal(_key(1), (4, 4, cin, cout))
  (oh, ow), pads = conv.down_conv_geometry(h, w)
  xla = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (2, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda x, k: conv.down_conv(x, k, pads)
  y = xla(x, k)
  assert y.shape == (2, oh, ow, cout)
  np.testing.assert_allclose(ours(x, k), y, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(_key(2), y.shape)
  first = lambda f: jax.grad(lambda x, k: (f(x, k) * g).sum(), (0, 1))(x, k)
  for a, b in zip(first(ours), first(xla)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # The transpose: <g, D x> = <D^T g, x>, and its gradients.
  t = lambda g, k: conv.down_conv_transpose(g, k, pads, (h, w))
  np.testing.assert_allclose(
      (y * g).sum(), (t(g, k) * x).sum(), rtol=1e-4, atol=1e-3)
  xla_t = lambda g, k: jax.vjp(lambda x: xla(x, k), x)[1](g)[0]
  c = jax.random.normal(_key(3), x.shape)
  gt = lambda f: jax.grad(lambda g, k: (f(g, k) * c).sum(), (0, 1))(g, k)
  for a, b in zip(gt(t), gt(xla_t)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  second = lambda f: jax.grad(lambda k: (jax.grad(
      lambda x: jnp.tanh(f(x, k)).sum())(x) ** 2).sum())(k)
  np.testing.assert_allclose(second(ours), second(xla), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mode", ["conv", "patches", "xla", "auto"])
@pytest.mark.parametrize("shape", [(2, 7, 7, 6), (2, 28, 28, 1),
                                   (3, 8, 5, 3)])
def test_down_conv_modes_agree(mode, shape):
  x = jax.random.normal(_key(0), shape)
  ref = nn.Conv(4, (4, 4), (2, 2), "SAME")
  v = ref.init(_key(1), x)
  m = conv.DownConv(4, mode=mode)
  np.testing.assert_allclose(m.apply(v, x), ref.apply(v, x), rtol=1e-5,
                             atol=1e-5)
  loss = lambda mod, v: (jnp.sin(mod.apply(v, x))).sum()
  for a, b in zip(jax.tree.leaves(jax.grad(lambda v: loss(m, v))(v)),
                  jax.tree.leaves(jax.grad(lambda v: loss(ref, v))(v))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_down_conv_rejects_unknown_mode():
  with pytest.raises(UserError):
    conv.DownConv(4, mode="fft").init(_key(0), jnp.ones((1, 4, 4, 1)))


def test_upsample_rejects_unknown_mode():
  up = conv.Upsample(4, "bilinear")
  with pytest.raises(UserError):
    up.init(_key(0), jnp.ones((1, 2, 2, 1)))
