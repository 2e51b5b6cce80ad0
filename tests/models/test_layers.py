"""Tests of gan_jax.models.layers against independent NumPy computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import flags
from gan_jax.errors import UserError
from gan_jax.models import layers
from helpers import discriminator, generator


def _key(seed):
  # The rbg generator compiles several times faster than threefry on CPU.
  return jax.random.key(seed, impl="rbg")


def test_maxout_dense_matches_numpy():
  x = np.random.RandomState(0).randn(3, 6).astype(np.float32)
  m = layers.MaxoutDense(4, 3)
  v = m.init(_key(0), x)
  k = np.asarray(v["params"]["Dense_0"]["kernel"])
  b = np.asarray(v["params"]["Dense_0"]["bias"])
  want = (x @ k + b).reshape(3, 4, 3).max(-1)
  np.testing.assert_allclose(m.apply(v, x), want, rtol=1e-5, atol=1e-6)


def test_maxout_derivatives_match_jnp_max():
  """The hand-written JVP gives jnp.max's gradient (distinct pieces), a
  first-winner gradient on ties, and second derivatives (gradient penalties
  and unrolled GANs differentiate through it)."""
  h = jax.random.normal(_key(1), (4, 12))
  w = jax.random.normal(_key(2), (4, 3))
  ref = lambda h: h.reshape(4, 3, 4).max(-1)
  ours = lambda h: layers.maxout(h, 4)
  np.testing.assert_array_equal(ours(h), ref(h))
  grad = lambda f: jax.grad(lambda h: (f(h) * w).sum())(h)
  np.testing.assert_allclose(grad(ours), grad(ref), rtol=1e-6)
  # Each unit's gradient goes to exactly one piece, the argmax.
  g = np.asarray(grad(ours)).reshape(4, 3, 4)
  np.testing.assert_array_equal((g != 0).sum(-1), np.ones((4, 3)))
  # Ties: the first piece takes the whole gradient (as in PyTorch).
  tie = jax.grad(lambda h: layers.maxout(h, 3).sum())(jnp.zeros((1, 6)))
  np.testing.assert_array_equal(tie, [[1, 0, 0, 1, 0, 0]])
  # Second order: gradient of a gradient norm (WGAN-GP / R1 style).
  gg = lambda f: jax.grad(lambda h: (jax.grad(
      lambda h: (jnp.tanh(f(h)) * w).sum())(h) ** 2).sum())(h)
  np.testing.assert_allclose(gg(ours), gg(ref), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------ spectral norm


class _SNDense(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    return layers.spectral_norm(nn.Dense(5), True, train)(x)


class _SNConv(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    return layers.spectral_norm(nn.Conv(6, (3, 3)), True, train)(x)


def _sn_state(variables, layer):
  stats = variables["batch_stats"]["SpectralNorm_0"]
  return (np.asarray(stats[f"{layer}/kernel/u"]),
          float(stats[f"{layer}/kernel/sigma"]))


def _normalize(v):
  return v / np.linalg.norm(v)


@pytest.mark.parametrize("module,x,layer", [
    (_SNDense(), np.ones((2, 3), np.float32), "Dense_0"),
    (_SNConv(), np.ones((2, 4, 4, 2), np.float32), "Conv_0"),
])
def test_spectral_norm_converges_to_unit_top_singular_value(module, x, layer):
  variables = module.init(_key(1), x, train=False)
  params = variables["params"]
  w = np.asarray(params[layer]["kernel"]).reshape(
      -1, params[layer]["kernel"].shape[-1])
  apply = jax.jit(lambda v: module.apply(v, x, train=True,
                                         mutable=["batch_stats"]))
  for _ in range(100):
    _, upd = apply(variables)
    variables = {"params": params, **upd}
  _, sigma = _sn_state(variables, layer)
  top = np.linalg.svd(w, compute_uv=False)[0]
  np.testing.assert_allclose(sigma, top, rtol=1e-4)
  np.testing.assert_allclose(np.linalg.svd(w / sigma, compute_uv=False)[0],
                             1.0, rtol=1e-4)


def test_spectral_norm_output_uses_normalized_weight():
  module = _SNDense()
  x = np.random.RandomState(0).randn(2, 3).astype(np.float32)
  variables = module.init(_key(1), x, train=False)
  out, upd = module.apply(variables, x, train=True, mutable=["batch_stats"])
  _, sigma = _sn_state(upd, "Dense_0")
  p = variables["params"]["Dense_0"]
  want = x @ (np.asarray(p["kernel"]) / sigma) + np.asarray(p["bias"])
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_spectral_norm_u_advances_once_per_train_call_only():
  module = _SNDense()
  x = np.ones((2, 3), np.float32)
  variables = module.init(_key(2), x, train=False)
  w = np.asarray(variables["params"]["Dense_0"]["kernel"])  # (3, 5)
  u0, _ = _sn_state(variables, "Dense_0")

  # train=False: the vectors do not move.
  _, upd = module.apply(variables, x, train=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(_sn_state(upd, "Dense_0")[0], u0)

  # train=True: exactly one power-iteration step, v = W u / |W u|,
  # u' = W^T v / |W^T v| (u is a row vector of the output dimension).
  _, upd = module.apply(variables, x, train=True, mutable=["batch_stats"])
  u1, sigma1 = _sn_state(upd, "Dense_0")
  v = _normalize(u0 @ w.T)
  want_u1 = _normalize(v @ w)
  np.testing.assert_allclose(u1, want_u1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sigma1, (v @ w @ want_u1.T).item(), rtol=1e-5)


# ------------------------------------------------------ minibatch features


def _mbd_numpy(x, t, b, c):
  m = (x @ t).reshape(len(x), b, c)
  d = np.abs(m[:, None] - m[None, :]).sum(-1)
  return np.concatenate([x, np.exp(-d).sum(1)], axis=-1)


def test_minibatch_discrimination_matches_numpy_and_sees_diversity():
  mbd = layers.MinibatchDiscrimination(num_kernels=3, kernel_dim=2)
  diverse = np.random.RandomState(0).randn(4, 5).astype(np.float32)
  same = np.repeat(diverse[:1], 4, axis=0)
  v = mbd.init(_key(0), diverse)
  t = np.asarray(v["params"]["T"]["kernel"])
  out = np.asarray(mbd.apply(v, diverse))
  np.testing.assert_allclose(out, _mbd_numpy(diverse, t, 3, 2), rtol=1e-5)
  assert out.shape == (4, 8)
  # Identical samples: every c_b(x_i, x_j) is 1, so o = batch size.
  np.testing.assert_allclose(np.asarray(mbd.apply(v, same))[:, 5:], 4.0)
  assert np.all(out[:, 5:] < 4.0)


def _mbstd_numpy(x, g):
  n = len(x)
  out = np.zeros((n,) + x.shape[1:-1] + (1,), np.float32)
  for m in range(n // g):
    members = [i for i in range(n) if i % (n // g) == m]
    s = x[members].std(axis=0).mean()
    out[members] = s
  return np.concatenate([x, out], axis=-1)


@pytest.mark.parametrize("shape", [(8, 5), (8, 3, 3, 2)])
def test_minibatch_stddev_matches_numpy_and_sees_diversity(shape):
  diverse = np.random.RandomState(1).randn(*shape).astype(np.float32)
  out = np.asarray(layers.minibatch_stddev(jnp.asarray(diverse), 4))
  np.testing.assert_allclose(out, _mbstd_numpy(diverse, 4), rtol=1e-4)
  assert np.all(out[..., -1] > 0.1)
  same = np.repeat(diverse[:1], 8, axis=0)
  out = np.asarray(layers.minibatch_stddev(jnp.asarray(same), 4))
  np.testing.assert_allclose(out[..., -1], 0.0, atol=1e-3)


def test_minibatch_stddev_group_divides_batch():
  assert layers._group_size(6, 4) == 3
  assert layers._group_size(2, 4) == 2
  assert layers._group_size(7, 4) == 1
  out = layers.minibatch_stddev(jnp.ones((6, 2)), 4)
  assert out.shape == (6, 3)


class _MBFeatures(nn.Module):
  kind: str

  @nn.compact
  def __call__(self, x):
    return layers.apply_minibatch_features(x, self.kind, num_kernels=3,
                                           kernel_dim=2)


@pytest.mark.parametrize("kind,width", [("none", 5), ("salimans", 8),
                                        ("stddev", 6)])
def test_apply_minibatch_features(kind, width):
  x = jnp.ones((4, 5))
  m = _MBFeatures(kind)
  assert m.apply(m.init(_key(0), x), x).shape == (4, width)


def test_apply_minibatch_features_rejects_unknown_kind():
  with pytest.raises(UserError):
    _MBFeatures("mystery").init(_key(0), jnp.ones((4, 5)))


# ----------------------------------------------------------- normalization


def test_default_norm_is_each_architecture_paper_choice():
  cfg = flags.defaults(**{"g.channels": 4, "d.channels": 4})
  shape = (28, 28, 1)
  assert generator("dcgan", cfg, shape).norm == "batch"
  assert discriminator("dcgan", cfg, shape).norm == "batch"
  assert generator("resnet", cfg, shape).norm == "batch"
  assert discriminator("resnet", cfg, shape).norm == "none"
  plain = flags.defaults()
  assert generator("goodfellow_mlp", plain, shape).norm == "none"
  assert discriminator("goodfellow_maxout", plain, shape).norm == "none"
  spectral = cfg.replace(**{"d.norm": "spectral"})
  assert discriminator("dcgan", spectral, shape).norm == "spectral"


class _Norm(nn.Module):
  kind: str

  @nn.compact
  def __call__(self, x, train):
    return layers.normalize(x, self.kind, train)


def test_layer_norm_standardizes_each_sample_over_all_axes():
  x = np.random.RandomState(0).randn(2, 3, 3, 4).astype(np.float32) * 5 + 2
  m = _Norm("layer")
  out = np.asarray(m.apply(m.init(_key(0), x, False), x, False))
  np.testing.assert_allclose(out.reshape(2, -1).mean(1), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.reshape(2, -1).std(1), 1.0, rtol=1e-3)


def test_conditional_batch_norm_depends_on_label():
  cbn = layers.ConditionalBatchNorm(num_classes=3)
  x = np.random.RandomState(0).randn(2, 2, 2, 4).astype(np.float32)
  y = jnp.array([0, 1])
  v = cbn.init(_key(0), x, y, False)
  v = {"params": {"scale": {"embedding": jnp.arange(12.).reshape(3, 4)},
                  "shift": {"embedding": jnp.zeros((3, 4))}},
       "batch_stats": v["batch_stats"]}
  out = np.asarray(cbn.apply(v, x, y, False))
  # Running stats are (0, 1): output = x / sqrt(1 + eps) * gamma[y].
  want = x / np.sqrt(1 + 1e-5) * np.arange(12.).reshape(3, 4)[[0, 1]][
      :, None, None, :]
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_image_levels():
  assert layers.image_levels((28, 28, 1), "x") == (7, 2)
  assert layers.image_levels((32, 32, 3), "x") == (4, 3)
  assert layers.image_levels((64, 64, 3), "x") == (4, 4)
  assert layers.image_levels((8, 8, 1), "x") == (4, 1)
  assert layers.image_levels((14, 14, 1), "x") == (7, 1)
  for bad in [(30, 30, 1), (28, 32, 1), (2,), (7, 7, 1), (4, 4, 1)]:
    with pytest.raises(UserError):
      layers.image_levels(bad, "x")
  # The message's list of sizes is the rule's (4x4 used to read as allowed).
  with pytest.raises(UserError, match=r"k >= 1 \(8, 14, 16, 28, 32, 56, 64"):
    layers.image_levels((4, 4, 1), "x")


# ------------------------------------------------ dtype and cross-replica BN


def test_bfloat16_activations_with_float32_params():
  cfg = flags.defaults(compute_dtype="bfloat16", **{"g.channels": 4, "d.channels": 4},
                       z_dim=3)
  g = generator("dcgan", cfg, (28, 28, 1), 0)
  d = discriminator("dcgan", cfg, (28, 28, 1), 0)
  z = jnp.ones((2, 3))
  vg = jax.jit(lambda k: g.init(k, z, train=False))(_key(0))
  assert all(p.dtype == jnp.float32
             for p in jax.tree_util.tree_leaves(vg["params"]))
  x, state = jax.jit(lambda v: g.apply(
      v, z, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=True))(vg)
  assert x.dtype == jnp.bfloat16
  acts = jax.tree_util.tree_leaves(state["intermediates"])
  assert acts and all(a.dtype == jnp.bfloat16 for a in acts)
  vd = jax.jit(lambda k: d.init(k, x, train=False))(_key(0))
  assert all(p.dtype == jnp.float32
             for p in jax.tree_util.tree_leaves(vd["params"]))
  logits = jax.jit(lambda v: d.apply(v, x, train=False))(vd)
  assert logits.dtype == jnp.float32 and logits.shape == (2,)


def test_cross_replica_batch_norm_uses_data_axis():
  cfg = flags.defaults(cross_replica_bn=True, **{"g.channels": 4}, z_dim=3)
  g = generator("dcgan", cfg, (28, 28, 1), 0)
  n = min(len(jax.devices()), 4)
  z = jax.random.normal(_key(0), (2 * n, 3))
  v = jax.jit(lambda k: g.init(k, z, train=False))(_key(1))
  # With train=True BatchNorm reduces over the 'data' axis: unbound outside a
  # mapped context; inside shard_map over n devices, the statistics of the
  # global batch (so the result equals plain BatchNorm on one device).
  with pytest.raises(NameError):
    g.apply(v, z, train=True, mutable=["batch_stats"])
  mesh = jax.make_mesh((n,), ("data",), devices=jax.devices()[:n])
  P = jax.sharding.PartitionSpec

  def step(z):
    x, upd = g.apply(v, z, train=True, mutable=["batch_stats"])
    return x, upd["batch_stats"]

  with jax.set_mesh(mesh):
    zs = jax.device_put(z, P("data"))
    got, stats = jax.jit(jax.shard_map(step, in_specs=P("data"),
                                       out_specs=(P("data"), P())))(zs)
  plain = generator("dcgan", cfg.replace(cross_replica_bn=False),
                     (28, 28, 1), 0)
  want, upd = jax.jit(lambda v, z: plain.apply(
      v, z, train=True, mutable=["batch_stats"]))(v, z)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      jax.device_get(stats), jax.device_get(upd["batch_stats"]))
