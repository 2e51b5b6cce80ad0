"""Tests of the DCGAN generator and discriminator (tiny widths)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import flags
from gan_jax.errors import UserError
from helpers import discriminator, generator
from model_init import discriminate as _discriminate
from model_init import generate as _generate

SHAPES = [(28, 28, 1), (32, 32, 3), (64, 64, 3)]


def _cfg(**kw):
  return flags.defaults(**{"g.channels": 4, "d.channels": 4, "z_dim": 3,
                           "d.mbd_kernels": 3, "d.mbd_kernel_dim": 2, **kw})


def test_real_init():
  """The real initializers: weights from N(0, 0.02) (Radford et al.)."""
  cfg = _cfg(**{"g.channels": 8, "d.channels": 8})
  g = generator("dcgan", cfg, (28, 28, 1), 0)
  d = discriminator("dcgan", cfg, (28, 28, 1), 0)
  # The rbg generator compiles several times faster than threefry on CPU.
  key = jax.random.key(0, impl="rbg")
  vg = jax.jit(lambda k: g.init(k, jnp.ones((2, 3)), train=False))(key)
  vd = jax.jit(lambda k: d.init(k, jnp.ones((2, 28, 28, 1)),
                                train=False))(key)
  for v in (vg, vd):
    kernels = [np.ravel(leaf) for path, leaf in
               jax.tree_util.tree_leaves_with_path(v["params"])
               if jax.tree_util.keystr(path).endswith("['kernel']")]
    std = np.concatenate(kernels).std()
    assert 0.018 < std < 0.022


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_and_ranges(shape):
  cfg = _cfg()
  g = generator("dcgan", cfg, shape, 0)
  d = discriminator("dcgan", cfg, shape, 0)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 3))
  x, _, upd = _generate(g, z)
  assert x.shape == (2,) + shape and x.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  assert "batch_stats" in upd  # BatchNorm in G
  logits, _, _ = _discriminate(d, x)
  assert logits.shape == (2,) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_generator_widths_follow_dcgan_layout():
  cfg = _cfg(**{"g.channels": 64, "d.channels": 64, "g.upsample": "transpose"})
  g = generator("dcgan", cfg, (28, 28, 1), 0)
  z = jnp.ones((1, 3))
  shapes = jax.tree_util.tree_map(
      jnp.shape, jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), z)))
  # Radford-style MNIST G: 7x7x128 -> 14x14x64 -> 28x28x1.
  assert shapes["params"]["Dense_0"]["kernel"] == (3, 7 * 7 * 128)
  assert shapes["params"]["Upsample_0"]["ConvTranspose_0"]["kernel"] == (
      4, 4, 128, 64)
  d = discriminator("dcgan", cfg, (64, 64, 3), 0)
  shapes = jax.tree_util.tree_map(jnp.shape, jax.eval_shape(
      lambda: d.init(jax.random.PRNGKey(0), jnp.ones((1, 64, 64, 3)))))
  assert [shapes["params"][f"Conv_{i}"]["kernel"][-1] for i in range(4)] == [
      64, 128, 256, 512]
  assert shapes["params"]["Dense_0"]["kernel"] == (4 * 4 * 512, 1)


def test_subpixel_and_transpose_give_the_same_shapes():
  z = jnp.ones((2, 3))
  out = {}
  for mode in ("subpixel", "transpose"):
    g = generator("dcgan", _cfg(**{"g.upsample": mode}), (32, 32, 3), 0)
    out[mode] = jax.eval_shape(
        lambda: g.apply(g.init(jax.random.PRNGKey(0), z), z, train=False))
  assert out["subpixel"].shape == out["transpose"].shape == (2, 32, 32, 3)


def test_conditional_generator_depends_on_label():
  g = generator("dcgan", _cfg(), (28, 28, 1), 10)
  z = jnp.repeat(jax.random.normal(jax.random.PRNGKey(0), (1, 3)), 4, axis=0)
  y = jnp.array([0, 1, 2, 3])
  x, _, _ = _generate(g, z, y, train=False)
  x = np.asarray(x).reshape(4, -1)
  for i in range(4):
    for j in range(i):
      assert np.max(np.abs(x[i] - x[j])) > 1e-6


def test_projection_discriminator_depends_on_label():
  d = discriminator("dcgan", _cfg(), (28, 28, 1), 10)
  x = jnp.repeat(jax.random.normal(jax.random.PRNGKey(0), (1, 28, 28, 1)),
                 2, axis=0)
  logits, v, _ = _discriminate(d, x, jnp.array([3, 7]), train=False)
  assert logits.shape == (2,)
  assert v["params"]["Embed_0"]["embedding"].shape == (10, 7 * 7 * 8)
  assert abs(float(logits[0] - logits[1])) > 1e-6


def test_conditional_model_needs_labels():
  g = generator("dcgan", _cfg(), (28, 28, 1), 10)
  with pytest.raises(UserError):
    g.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))


@pytest.mark.parametrize("norm", ["none", "batch", "spectral", "layer"])
def test_discriminator_norms(norm):
  d = discriminator("dcgan", _cfg(**{"d.norm": norm}), (28, 28, 1), 0)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  logits, v, upd = _discriminate(d, x)
  assert logits.shape == (2,)
  stats = jax.tree_util.tree_leaves_with_path(upd.get("batch_stats", {}))
  names = [jax.tree_util.keystr(p) for p, _ in stats]
  assert any("SpectralNorm" in n for n in names) == (norm == "spectral")
  assert any("BatchNorm" in n for n in names) == (norm == "batch")


def test_generator_without_norm():
  g = generator("dcgan", _cfg(**{"g.norm": "none"}), (28, 28, 1), 0)
  x, v, _ = _generate(g, jnp.ones((2, 3)))
  assert x.shape == (2, 28, 28, 1) and "batch_stats" not in v


@pytest.mark.parametrize("kind", ["salimans", "stddev"])
def test_minibatch_features(kind):
  d = discriminator("dcgan", _cfg(**{"d.minibatch": kind}), (28, 28, 1), 0)
  logits, v, _ = _discriminate(d, jnp.ones((4, 28, 28, 1)))
  assert logits.shape == (4,)
  extra = 3 if kind == "salimans" else 7 * 7  # kernels, or one channel
  assert v["params"]["Dense_0"]["kernel"].shape == (7 * 7 * 8 + extra, 1)


@pytest.mark.parametrize("shape", [(30, 30, 1), (28, 32, 1), (784,)])
def test_unsupported_resolution_is_a_user_error(shape):
  with pytest.raises(UserError):
    generator("dcgan", _cfg(), shape, 0)
  with pytest.raises(UserError):
    discriminator("dcgan", _cfg(), shape, 0)


def test_d_conv_flag_selects_the_convolution_without_changing_the_function():
  """--d.conv picks how D's convolutions are computed; the parameters and
  the logits are the same in every mode."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  logits = {}
  for mode in ("auto", "conv", "patches", "xla"):
    d = discriminator("dcgan", _cfg(**{"d.conv": mode}), (28, 28, 1), 0)
    assert d.conv == mode
    logits[mode], _, _ = _discriminate(d, x)  # same seed: same parameters
  for mode in ("conv", "patches", "xla"):
    np.testing.assert_allclose(logits[mode], logits["auto"], rtol=1e-4,
                               atol=1e-5)
