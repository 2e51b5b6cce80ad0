"""Tests of the Goodfellow et al. (2014) and conditional MLP GANs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import flags
from gan_jax.errors import UserError
from helpers import discriminator, generator
from model_init import host_init

SHAPES = [(28, 28, 1), (32, 32, 3), (64, 64, 3)]


def _cfg(**kw):
  return flags.defaults(**{"g.hidden": 8, "g.layers": 2, "d.hidden": 6,
                           "d.layers": 2, "d.pieces": 3, "z_dim": 3,
                           "d.mbd_kernels": 3, "d.mbd_kernel_dim": 2, **kw})


def test_real_init():
  """The real initializers: uniform in +-0.05 (G) and +-0.005 (D)."""
  cfg = _cfg()
  g = generator("goodfellow_mlp", cfg, (28, 28, 1), 0)
  d = discriminator("goodfellow_maxout", cfg, (28, 28, 1), 0)
  key = jax.random.key(0, impl="rbg")
  vg = jax.jit(lambda k: g.init(k, jnp.ones((2, 3)), train=False))(key)
  vd = jax.jit(lambda k: d.init(k, jnp.ones((2, 28, 28, 1)),
                                train=False))(key)
  for v, scale in ((vg, 0.05), (vd, 0.005)):
    for path, leaf in jax.tree_util.tree_leaves_with_path(v["params"]):
      if jax.tree_util.keystr(path).endswith("['kernel']"):
        assert float(jnp.max(jnp.abs(leaf))) <= scale
        assert float(jnp.max(jnp.abs(leaf))) > 0.8 * scale
  assert vg["params"]["Dense_0"]["kernel"].shape == (3, 8)
  assert vd["params"]["MaxoutDense_0"]["Dense_0"]["kernel"].shape == (
      784, 6 * 3)


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_and_ranges(shape):
  cfg = _cfg()
  g = generator("goodfellow_mlp", cfg, shape, 0)
  d = discriminator("goodfellow_maxout", cfg, shape, 0)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 3))
  vg = host_init(g, z, train=False)
  x = jax.jit(lambda v: g.apply(v, z, train=False))(vg)
  assert x.shape == (2,) + shape
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  assert "batch_stats" not in vg  # no BatchNorm in the original G
  vd = host_init(d, x, train=False)
  logits = jax.jit(lambda v, k: d.apply(v, x, train=True,
                                        rngs={"dropout": k}))(
                                            vd, jax.random.PRNGKey(1))
  assert logits.shape == (2,) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_dropout_only_in_training():
  d = discriminator("goodfellow_maxout", _cfg(), (28, 28, 1), 0)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  v = host_init(d, x, train=False)
  apply = jax.jit(lambda k, train: d.apply(v, x, train=train,
                                           rngs={"dropout": k}),
                  static_argnums=1)
  k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  assert not np.allclose(apply(k1, True), apply(k2, True))
  np.testing.assert_array_equal(apply(k1, False), apply(k2, False))


def test_generator_batchnorm_option():
  g = generator("goodfellow_mlp", _cfg(**{"g.norm": "batch"}), (28, 28, 1), 0)
  v = host_init(g, jnp.ones((2, 3)), train=False)
  assert "batch_stats" in v


@pytest.mark.parametrize("gname,dname", [("goodfellow_mlp",
                                          "goodfellow_maxout"),
                                         ("cgan_mlp", "cgan_maxout")])
def test_conditional_depends_on_label(gname, dname):
  cfg = _cfg()
  g = generator(gname, cfg, (28, 28, 1), 10)
  d = discriminator(dname, cfg, (28, 28, 1), 10)
  z = jnp.repeat(jax.random.normal(jax.random.PRNGKey(0), (1, 3)), 3, axis=0)
  y = jnp.array([0, 1, 2])
  vg = host_init(g, z, y, train=False)
  assert vg["params"]["Dense_0"]["kernel"].shape == (3 + 10, 8)
  x = np.asarray(jax.jit(lambda v: g.apply(v, z, y, train=False))(vg))
  x = x.reshape(3, -1)
  assert np.max(np.abs(x[0] - x[1])) > 1e-6
  assert np.max(np.abs(x[1] - x[2])) > 1e-6
  xs = jnp.asarray(np.repeat(x[:1], 2, axis=0).reshape(2, 28, 28, 1))
  vd = host_init(d, xs, y[:2], train=False)
  logits = jax.jit(lambda v: d.apply(v, xs, y[:2], train=False))(vd)
  assert abs(float(logits[0] - logits[1])) > 1e-6


def test_input_dropout_drops_pixels_not_the_label():
  """Goodfellow's input dropout is on x; with x black (pixels 0 in the
  networks' [0, 1] scale: nothing to drop) and
  no hidden dropout, training mode must then equal evaluation mode. When
  the label went through the input dropout too, some rows lost it and the
  rest got it scaled by 1/0.8."""
  d = discriminator("cgan_maxout", _cfg(**{"d.input_dropout": 0.2, "d.dropout": 0.0}),
                     (28, 28, 1), 10)
  x = -jnp.ones((64, 28, 28, 1))
  y = jnp.arange(64) % 10
  v = host_init(d, x, y, train=False)
  apply = jax.jit(lambda k, train: d.apply(v, x, y, train=train,
                                           rngs={"dropout": k}),
                  static_argnums=1)
  np.testing.assert_allclose(apply(jax.random.PRNGKey(3), True),
                             apply(jax.random.PRNGKey(3), False), rtol=1e-6)


def test_cgan_requires_labels():
  with pytest.raises(UserError):
    generator("cgan_mlp", _cfg(), (28, 28, 1), 0)
  with pytest.raises(UserError):
    discriminator("cgan_maxout", _cfg(), (28, 28, 1), 0)


@pytest.mark.parametrize("norm", ["spectral", "layer", "batch"])
def test_discriminator_norms(norm):
  d = discriminator("goodfellow_maxout", _cfg(**{"d.norm": norm}), (28, 28, 1), 0)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  v = host_init(d, x, train=False)
  logits, upd = jax.jit(lambda v: d.apply(
      v, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)},
      mutable=["batch_stats"]))(v)
  assert logits.shape == (2,)
  if norm == "spectral":
    assert "SpectralNorm_0" in upd["batch_stats"]


@pytest.mark.parametrize("kind,extra", [("salimans", 3), ("stddev", 1)])
def test_minibatch_features(kind, extra):
  d = discriminator("goodfellow_maxout", _cfg(**{"d.minibatch": kind}),
                     (28, 28, 1), 0)
  x = jnp.ones((4, 28, 28, 1))
  v = host_init(d, x, train=False)
  assert v["params"]["Dense_0"]["kernel"].shape == (6 + extra, 1)
  logits = jax.jit(lambda v: d.apply(v, x, train=False))(v)
  assert logits.shape == (4,)


def test_the_networks_are_the_authors_functions_on_pixels_in_0_1():
  """G's output is the authors' sigmoid mapped to [-1, 1], 2 sigmoid(a) - 1
  for its output layer's a, and D's first layer reads (x + 1) / 2."""
  shape, cfg = (28, 28, 1), _cfg()
  g = generator("goodfellow_mlp", cfg, shape, 0)
  z = jax.random.uniform(jax.random.PRNGKey(0), (4, 3), minval=-1)
  vg = host_init(g, z, train=False)
  x, seen = g.apply(vg, z, train=False, capture_intermediates=True)
  (a,) = seen["intermediates"][f"Dense_{getattr(cfg, 'g.layers')}"]["__call__"]
  np.testing.assert_allclose(x, (2 * jax.nn.sigmoid(a) - 1).reshape(x.shape),
                             atol=1e-6)
  d = discriminator("goodfellow_maxout", cfg, shape, 0)
  vd = host_init(d, x, train=False)
  _, seen = d.apply(vd, x, train=False, capture_intermediates=True)
  (h,) = seen["intermediates"]["MaxoutDense_0"]["Dense_0"]["__call__"]
  first = vd["params"]["MaxoutDense_0"]["Dense_0"]
  np.testing.assert_allclose(
      h, 0.5 * (x.reshape(4, -1) + 1) @ first["kernel"] + first["bias"],
      atol=1e-6)
