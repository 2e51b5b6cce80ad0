"""Tests of the SNGAN / WGAN-GP CIFAR ResNets (tiny widths)."""

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
  return flags.defaults(**{"g.channels": 4, "d.channels": 4, "z_dim": 3,
                           "d.mbd_kernels": 3, "d.mbd_kernel_dim": 2, **kw})


def _blocks(params, prefix):
  return sorted(k for k in params if k.startswith(prefix))


@pytest.mark.parametrize("shape,g_blocks,d_blocks", [
    ((28, 28, 1), 2, 4), ((32, 32, 3), 3, 4), ((64, 64, 3), 4, 5)])
def test_shapes_ranges_and_layout(shape, g_blocks, d_blocks):
  cfg = _cfg()
  g = generator("resnet", cfg, shape, 0)
  d = discriminator("resnet", cfg, shape, 0)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 3))
  vg = host_init(g, z, train=False)
  assert len(_blocks(vg["params"], "GBlock_")) == g_blocks
  x, _ = jax.jit(lambda v: g.apply(v, z, train=True,
                                   mutable=["batch_stats"]))(vg)
  assert x.shape == (2,) + shape
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  vd = host_init(d, x, train=False)
  # WGAN-GP: no normalization in D by default.
  assert "batch_stats" not in vd
  assert len(_blocks(vd["params"], "DBlock_")) == d_blocks
  logits = jax.jit(lambda v: d.apply(v, x, train=True))(vd)
  assert logits.shape == (2,) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_real_init():
  cfg = _cfg()
  g = generator("resnet", cfg, (32, 32, 3), 0)
  d = discriminator("resnet", cfg, (32, 32, 3), 0)
  key = jax.random.key(0, impl="rbg")
  vg = jax.jit(lambda k: g.init(k, jnp.ones((2, 3)), train=False))(key)
  vd = jax.jit(lambda k: d.init(k, jnp.ones((2, 32, 32, 3)),
                                train=False))(key)
  assert vg["params"]["Dense_0"]["kernel"].shape == (3, 4 * 4 * 4)
  assert vd["params"]["Dense_0"]["kernel"].shape == (4, 1)
  for v in (vg, vd):
    assert all(np.all(np.isfinite(leaf))
               for leaf in jax.tree_util.tree_leaves(v))


def test_spectral_norm_discriminator():
  d = discriminator("resnet", _cfg(**{"d.norm": "spectral"}), (32, 32, 3), 10)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  y = jnp.array([1, 2])
  v = host_init(d, x, y, train=False)
  stats = jax.tree_util.tree_leaves_with_path(v["batch_stats"])
  us = [jax.tree_util.keystr(p) for p, _ in stats
        if jax.tree_util.keystr(p).endswith("/u']")]
  # 2 convs per block + 2 shortcuts (first block, the down block), the output
  # layer and the projection embedding.
  assert len(us) == 4 * 2 + 2 + 2
  apply = jax.jit(lambda v, train: d.apply(v, x, y, train=train,
                                           mutable=["batch_stats"]),
                  static_argnums=1)
  _, frozen = apply(v, False)
  _, moved = apply(v, True)
  same = jax.tree_util.tree_map(np.array_equal, v["batch_stats"],
                                frozen["batch_stats"])
  assert all(jax.tree_util.tree_leaves(same))
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b),
                                   v["batch_stats"], moved["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))


def test_conditional_generator_and_projection():
  cfg = _cfg()
  g = generator("resnet", cfg, (32, 32, 3), 10)
  d = discriminator("resnet", cfg, (32, 32, 3), 10)
  z = jnp.repeat(jax.random.normal(jax.random.PRNGKey(0), (1, 3)), 3, axis=0)
  y = jnp.array([0, 1, 2])
  vg = host_init(g, z, y, train=False)
  # Class-conditional BatchNorm: per-class scales and shifts.
  assert vg["params"]["GBlock_0"]["ConditionalBatchNorm_0"]["scale"][
      "embedding"].shape == (10, 4)
  x = np.asarray(jax.jit(lambda v: g.apply(v, z, y, train=False))(vg))
  x = x.reshape(3, -1)
  assert np.max(np.abs(x[0] - x[1])) > 1e-6
  assert np.max(np.abs(x[1] - x[2])) > 1e-6
  xs = jnp.asarray(np.repeat(x[:1], 2, axis=0).reshape(2, 32, 32, 3))
  vd = host_init(d, xs, y[:2], train=False)
  assert vd["params"]["Embed_0"]["embedding"].shape == (10, 4)
  logits = jax.jit(lambda v: d.apply(v, xs, y[:2], train=False))(vd)
  assert abs(float(logits[0] - logits[1])) > 1e-6


def test_conditional_generator_without_batchnorm_joins_label_to_z():
  g = generator("resnet", _cfg(**{"g.norm": "none"}), (32, 32, 3), 10)
  v = host_init(g, jnp.ones((2, 3)), jnp.array([0, 1]), train=False)
  assert v["params"]["Dense_0"]["kernel"].shape == (3 + 10, 4 * 4 * 4)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_discriminator_norms(norm):
  d = discriminator("resnet", _cfg(**{"d.norm": norm}), (32, 32, 3), 0)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  v = host_init(d, x, train=False)
  logits, _ = jax.jit(lambda v: d.apply(v, x, train=True,
                                        mutable=["batch_stats"]))(v)
  assert logits.shape == (2,)


@pytest.mark.parametrize("kind,extra", [("salimans", 3), ("stddev", 1)])
def test_minibatch_features(kind, extra):
  d = discriminator("resnet", _cfg(**{"d.minibatch": kind}), (32, 32, 3), 0)
  x = jnp.ones((4, 32, 32, 3))
  v = host_init(d, x, train=False)
  width = 8 * 8 * 4 + extra if kind == "salimans" else 4 + extra
  assert v["params"]["Dense_0"]["kernel"].shape == (width, 1)


def test_unsupported_resolution_is_a_user_error():
  with pytest.raises(UserError):
    generator("resnet", _cfg(), (48, 48, 3), 0)


def test_global_pooling_sum_or_mean():
  """--d.pool: SN-GAN's sum or WGAN-GP's mean over the final 8x8
  features, the same parameters otherwise."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  d_sum = discriminator("resnet", _cfg(), (32, 32, 3), 0)
  d_mean = discriminator("resnet", _cfg(**{"d.pool": "mean"}), (32, 32, 3),
                          0)
  v = host_init(d_sum, x, train=False)
  bias = v["params"]["Dense_0"]["bias"][0]
  s = d_sum.apply(v, x, train=False)
  m = d_mean.apply(v, x, train=False)
  np.testing.assert_allclose(np.asarray(m) - bias,
                             (np.asarray(s) - bias) / 64, rtol=1e-4,
                             atol=1e-6)
