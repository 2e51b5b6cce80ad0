"""The pure compiled step: Algorithm 1's k D updates, data parallelism,
determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import gan as gan_lib
from gan_jax import state as state_lib
from gan_jax import steps
from helpers import tiny_config


def run(cfg, n_devices, calls=2, steps_per_call=2):
  gan = gan_lib.build(cfg)
  mesh = jax.make_mesh((n_devices,), ("data",),
                       devices=jax.devices()[:n_devices])
  with jax.set_mesh(mesh):
    st = jax.jit(lambda: state_lib.create(gan, cfg.seed),
                 out_shardings=NamedSharding(mesh, P()))()
    fn = steps.make_train_step(gan, mesh, steps_per_call)
    for _ in range(calls):
      st, metrics = fn(st, None)
  return jax.device_get(st), jax.device_get(metrics)


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_d_steps_k_updates_d_k_times_per_g_update():
  st, metrics = run(tiny_config(d_steps=3), 1, calls=1, steps_per_call=2)
  d_count = int(st.opt_state["D"][0].count)
  g_count = int(st.opt_state["G"][0].count)
  assert int(st.step) == 2
  assert g_count == 2
  assert d_count == 3 * g_count
  assert metrics["d_loss"].shape == (2,)


def test_data_parallel_equals_single_device():
  # Cross-replica BatchNorm makes the 8-shard batch statistics those of the
  # whole batch, so 8 devices must reproduce 1 device up to float rounding.
  cfg = tiny_config(batch_size=32, cross_replica_bn=True, d_steps=2)
  one, m1 = run(cfg, 1)
  eight, m8 = run(cfg, 8)
  for a, b in zip(leaves((one.g_params, one.d_params, one.g_state)),
                  leaves((eight.g_params, eight.d_params, eight.g_state))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m1["d_loss"], m8["d_loss"], rtol=1e-4)
  np.testing.assert_allclose(m1["g_loss"], m8["g_loss"], rtol=1e-4)


@pytest.mark.parametrize("loss", ["rasgan", "ralsgan", "rahinge"])
def test_relativistic_losses_data_parallel_equal_single_device(loss):
  """The average logits are over the global batch (pmean of the devices'
  means), so 8 devices train as 1 device does, in both networks' steps.
  (SGD: Adam's first steps turn gradient entries that are zero up to
  rounding into +-lr, whatever the device count.)"""
  cfg = tiny_config(batch_size=32, cross_replica_bn=True, loss=loss,
                    g_optimizer="sgd", d_optimizer="sgd", **{"g_optimizer.lr": 0.1, "d_optimizer.lr": 0.1})
  one, m1 = run(cfg, 1)
  eight, m8 = run(cfg, 8)
  for a, b in zip(leaves((one.g_params, one.d_params)),
                  leaves((eight.g_params, eight.d_params))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for name in ("d_loss", "g_loss", "d_loss_real", "d_loss_fake"):
    np.testing.assert_allclose(m1[name], m8[name], rtol=1e-4)
  assert not np.allclose(m1["g_loss"], run(
      tiny_config(batch_size=32, cross_replica_bn=True, loss="ns"), 1)[1][
          "g_loss"])


def test_per_device_batchnorm_differs_from_cross_replica():
  cfg = tiny_config(batch_size=32)
  one, _ = run(cfg, 1, calls=1)
  eight, _ = run(cfg, 8, calls=1)
  diffs = [np.abs(a - b).max() for a, b in zip(leaves(one.g_params),
                                               leaves(eight.g_params))]
  assert max(diffs) > 1e-6


def test_same_seed_same_parameters_different_seed_differs():
  a, _ = run(tiny_config(seed=1), 2, calls=1)
  b, _ = run(tiny_config(seed=1), 2, calls=1)
  c, _ = run(tiny_config(seed=2), 2, calls=1)
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(leaves(a.g_params),
                                                      leaves(c.g_params)))


def test_state_is_an_immutable_pytree():
  cfg = tiny_config()
  gan = gan_lib.build(cfg)
  st = state_lib.create(gan, 0)
  names = {"step", "rng", "params", "net_state", "opt_state", "ema",
           "extra"}
  assert names == set(st.__dataclass_fields__)
  assert set(st.params) == set(st.net_state) == set(st.opt_state) == {
      "G", "D"}
  try:
    st.step = 3
    raise AssertionError("TrainState should be frozen")
  except Exception as e:  # dataclasses.FrozenInstanceError
    assert "frozen" in type(e).__name__.lower() or "cannot" in str(e)
  assert "batch_stats" in st.g_state  # BatchNorm statistics are state


def test_dcgan_data_parallel_equals_single_device():
  """The DCGAN layers' hand-written convolution gradients (conv.down_conv)
  under shard_map: 8 devices reproduce 1 device, for D (replicated
  parameters made per-device) and G (D's parameters left replicated, their
  cotangent summed over devices)."""
  from gan_jax.data import images as images_lib  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(dataset="tiny_digits", generator="dcgan",
                    discriminator="dcgan", **{"g.channels": 4, "d.channels": 4},
                    z_dim=8, batch_size=16, cross_replica_bn=True)
  x = np.random.RandomState(0).uniform(-1, 1, (2, 1, 16, 28, 28, 1))
  results = []
  for n in (1, 8):
    data = images_lib.ImageDataset(np.zeros((8, 28, 28, 1), np.uint8), None,
                                   10, 0, "synthetic")
    gan = gan_lib.build(cfg, data)
    mesh = jax.make_mesh((n,), ("data",), devices=jax.devices()[:n])
    with jax.set_mesh(mesh):
      st = jax.jit(lambda: state_lib.create(gan, cfg.seed),
                   out_shardings=NamedSharding(mesh, P()))()
      sharding = NamedSharding(mesh, P(None, None, "data"))
      host = {"image": jax.device_put(x.astype(np.float32), sharding),
              "label": jax.device_put(np.zeros(x.shape[:3], np.int32),
                                      sharding)}
      st, metrics = steps.make_train_step(gan, mesh, 2)(st, host)
    results.append(jax.device_get((st.g_params, st.d_params, metrics)))
  for a, b in zip(leaves(results[0]), leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cpu_compiler_options_send_convolutions_to_eigen(monkeypatch):
  """On CPU the train step compiles convolutions outside YNNPACK
  (steps.CPU_COMPILER_OPTIONS; docs/benchmarks.md), unless XLA_FLAGS
  already chooses the YNNPACK fusion types."""
  def conv(x, k):
    return jax.lax.conv_general_dilated(
        x, k, (2, 2), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  x, k = jnp.ones((2, 8, 8, 32)), jnp.ones((4, 4, 32, 32))
  lowered = jax.jit(conv).lower(x, k)
  assert "__ynn_fusion" in lowered.compile().as_text()  # XLA's default
  monkeypatch.setenv("XLA_FLAGS", "")
  opts = steps.compiler_options()
  assert opts == steps.CPU_COMPILER_OPTIONS
  assert "__ynn_fusion" not in lowered.compile(compiler_options=opts).as_text()
  monkeypatch.setenv("XLA_FLAGS",
                     "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
  assert steps.compiler_options() is None


def test_compiler_options_fall_back_when_xla_rejects_them(monkeypatch):
  """An XLA that does not know the options (another jaxlib) compiles the
  step with its defaults instead of failing."""
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setattr(steps, "CPU_COMPILER_OPTIONS", {
      "xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"})
  assert steps.compiler_options() is None
