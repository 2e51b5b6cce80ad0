"""Spectral norm, EMA, weight clipping, gradient-norm metrics (through the
real compiled train step) and the optimizers (TTUR, schedules, RMSProp)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gan_jax import checkpoint as ckpt_lib
from gan_jax import optim
from gan_jax import state as state_lib
from gan_jax import sampler
from step_runner import Runner, toy_config


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


# -------------------------------------------------------------- spectral norm


def _sn(state):
  """{layer: (u (1, out), sigma, kernel (in, out))} of the MLP critic."""
  out = {}
  for mod, stats in state.d_state["batch_stats"].items():
    del mod
    for key, value in stats.items():
      layer, _, what = key.split("/")
      entry = out.setdefault(layer, {})
      entry[what] = np.asarray(value, np.float64)
  for layer, entry in out.items():
    entry["kernel"] = np.asarray(state.d_params[layer]["kernel"], np.float64)
  return out


def _power_iteration(u, w, n=1):
  """Miyato et al. 2018, Algorithm 1: v = W u / |W u|, u = W^T v / |W^T v|
  (here W is stored (in, out) and u is a row vector over ``out``)."""
  for _ in range(n):
    v = u @ w.T
    v /= np.linalg.norm(v)
    u = v @ w
    u /= np.linalg.norm(u)
  return u


def test_spectral_norm_advances_once_per_d_update_and_converges(tmp_path):
  # d_lr 0 keeps W fixed. Each step runs 2 D updates (each with R1's extra
  # passes through D) and a G step through D: only the 2 D-loss passes may
  # advance u, so after one step u = P^2 u0, not P^3 or more.
  k = 2
  run = Runner(toy_config(loss="hinge", **{"d.norm": "spectral"}, penalties=["r1"],
                          **{"d_optimizer.lr": 0.0}, d_steps=k))
  before = _sn(run.host())
  assert len(before) == 3  # two hidden layers and the output layer
  run.steps(1)
  after = _sn(run.host())
  for layer, b in before.items():
    np.testing.assert_allclose(after[layer]["u"],
                               _power_iteration(b["u"], b["kernel"], k),
                               rtol=1e-5, atol=1e-6)
    if layer != "Dense_2":  # ((8, 1) kernel: a 1-D u is always converged)
      assert not np.allclose(after[layer]["u"],
                             _power_iteration(b["u"], b["kernel"], k + 1),
                             rtol=1e-5, atol=1e-6)
  # The vectors carry over between steps (never restart from scratch): after
  # many steps sigma is W's top singular value and W / sigma has top one 1.
  for _ in range(59):
    run.steps(1)
  for layer, a in _sn(run.host()).items():
    w = a["kernel"]
    np.testing.assert_array_equal(w, before[layer]["kernel"])
    top = np.linalg.svd(w, compute_uv=False)[0]
    np.testing.assert_allclose(a["sigma"], top, rtol=1e-4)
    np.testing.assert_allclose(
        np.linalg.svd(w / a["sigma"], compute_uv=False)[0], 1.0, rtol=1e-4)

  # They are part of the checkpointed train state.
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "ckpt"), async_save=False)
  ckpts.save(60, run.state, {"x": 1})
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=run.replicated), run.state)
  with jax.set_mesh(run.mesh):
    restored, _, step = ckpts.restore(abstract)
  ckpts.close()
  assert step == 60
  assert "SpectralNorm_0" in restored.d_state["batch_stats"]
  for x, y in zip(leaves(run.host().d_state), leaves(restored.d_state)):
    np.testing.assert_array_equal(x, y)


def test_spectral_norm_advances_once_when_d_sees_real_and_fake_apart():
  # With minibatch features (or BatchNorm) D scores real and fake in two
  # calls per update; the second must reuse the first's u, not iterate again.
  k = 2
  run = Runner(toy_config(loss="hinge", **{"d.norm": "spectral", "d_optimizer.lr": 0.0},
                          d_steps=k, **{"d.minibatch": "stddev"}))
  before = _sn(run.host())
  run.steps(1)
  after = _sn(run.host())
  for layer, b in before.items():
    np.testing.assert_allclose(after[layer]["u"],
                               _power_iteration(b["u"], b["kernel"], k),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ EMA


def test_ema_copies_g_before_its_start_then_follows_the_closed_form():
  # g_lr = 0 keeps G's weights p constant. Before --ema.start the EMA is G;
  # from it, starting at e0 = 0, e_n = d^n e0 + (1 - d^n) p.
  d = 0.8
  run = Runner(toy_config(**{"ema.decay": d, "ema.start": 2,
                          "g_optimizer.lr": 0.0}))
  p = run.host().g_params
  zeros = jax.tree.map(np.zeros_like, p)
  run.set(ema={"G": zeros})
  run.steps(1)
  run.steps(1)  # steps 0 and 1: before the start the EMA copies G
  for e, q in zip(leaves(run.host().ema_params), leaves(p)):
    np.testing.assert_array_equal(e, q)
  run.set(ema={"G": zeros})
  for _ in range(4):  # steps 2..5 average
    run.steps(1)
  st = run.host()
  for a, b in zip(leaves(st.g_params), leaves(p)):
    np.testing.assert_array_equal(a, b)
  for e, q in zip(leaves(st.ema_params), leaves(p)):
    np.testing.assert_allclose(e, (1 - d ** 4) * q, rtol=1e-5, atol=1e-7)

  # Sampling and evaluation (sampler.Sampler) use the EMA weights.
  assert state_lib.sampling_params(st)["G"] is st.ema_params
  z = jnp.ones((4, run.cfg.z_dim))
  got = sampler.Sampler(run.gan, run.mesh)(run.state, z)
  ema = run.gan.generate(st.ema_params, st.g_state, z, None, train=False)[0]
  raw = run.gan.generate(st.g_params, st.g_state, z, None, train=False)[0]
  np.testing.assert_allclose(got, ema, rtol=1e-5, atol=1e-6)
  assert not np.allclose(got, raw)
  off = st.replace(ema={})  # --ema.decay=0
  assert off.ema_params is None
  assert state_lib.sampling_params(off)["G"] is off.g_params


# ------------------------------------------- WGAN: clipping, gradient norms


def test_grad_norms_and_weight_clipping_in_the_wgan_step():
  # WGAN (Algorithm 1): RMSProp critic, weights clipped to [-c, c] after each
  # update. d_steps 1, no penalty and a deterministic G, so both gradient
  # norms of the first step can be recomputed here independently.
  c = 0.01
  run = Runner(toy_config(loss="wgan", d_clip=c, d_optimizer="rmsprop",
                          **{"d_optimizer.lr": 0.05}))
  st0 = run.host()
  assert max(np.abs(x).max() for x in leaves(st0.d_params)) > c
  inputs = run.inputs(0)
  m = run.steps(1)
  st1 = run.host()
  gan = run.gan
  real, z_d, z_g = inputs["d"]["real"][0], inputs["d"]["z"][0], inputs["g"]["z"]

  def gen(g_params, z):
    return gan.generator.apply({"params": g_params, **st0.g_state}, z, None,
                               train=True, mutable=list(st0.g_state))[0]

  def disc(d_params, x):
    return gan.discriminator.apply({"params": d_params, **st0.d_state}, x,
                                   None, train=True)

  fake = gen(st0.g_params, z_d)

  def d_loss(d_params):
    return gan.loss.d(disc(d_params, real), disc(d_params, fake))[0]

  def g_loss(g_params):  # G's step sees the updated (clipped) critic
    return gan.loss.g(disc(st1.d_params, gen(g_params, z_g)))

  gd = optax.tree.norm(jax.grad(d_loss)(st0.d_params))
  gg = optax.tree.norm(jax.grad(g_loss)(st0.g_params))
  np.testing.assert_allclose(m["d_grad_norm"][0], gd, rtol=1e-4)
  np.testing.assert_allclose(m["g_grad_norm"][0], gg, rtol=1e-4)

  for _ in range(3):
    params = leaves(run.host().d_params)
    assert all(np.abs(p).max() <= c for p in params)
    # The bound is active: weights pushed past it sit on it.
    assert any(np.isclose(np.abs(p).max(), c) for p in params)
    run.steps(1)


# ---------------------------------------------------- optimizers (TTUR, WGAN)


def test_rmsprop_matches_the_pytorch_update_of_wgan():
  # PyTorch RMSprop: s = 0.99 s + 0.01 g^2; p -= lr g / (sqrt(s) + 1e-8).
  tx = optim.rmsprop(optax.constant_schedule, False, lr=5e-5)
  g = {"w": jnp.array([1e-9, 1e-3, -2.0])}
  p = {"w": jnp.zeros(3)}
  s = tx.init(p)
  sq = np.zeros(3)
  for _ in range(3):
    u, s = tx.update(g, s, p)
    sq = 0.99 * sq + 0.01 * np.asarray(g["w"], np.float64) ** 2
    want = -5e-5 * np.asarray(g["w"], np.float64) / (np.sqrt(sq) + 1e-8)
    np.testing.assert_allclose(u["w"], want, rtol=1e-5)


def test_ttur_learning_rates_and_linear_schedule_per_network():
  cfg = toy_config(**{"g_optimizer.lr": 1e-4, "d_optimizer.lr": 4e-4, "g_optimizer.b1": 0.0, "d_optimizer.b1": 0.0,
                   "g_optimizer.b2": 0.9, "d_optimizer.b2": 0.9}, lr_schedule="linear",
                   num_steps=10, d_steps=5)
  p = {"w": jnp.zeros(2)}
  g = {"w": jnp.array([0.5, -3.0])}

  def first_steps(tx, n):
    s = tx.init(p)
    sizes = []
    for _ in range(n):
      u, s = tx.update(g, s, p)
      sizes.append(float(jnp.max(jnp.abs(u["w"]))))
    return sizes

  # Adam with a constant gradient moves each weight by lr(t) per update.
  g_sizes = first_steps(optim.generator(cfg), 11)
  d_sizes = first_steps(optim.discriminator(cfg), 51)
  np.testing.assert_allclose(g_sizes[0], 1e-4, rtol=1e-3)
  np.testing.assert_allclose(d_sizes[0], 4e-4, rtol=1e-3)
  # Linear decay to 0 over num_steps G updates and num_steps * d_steps D ones.
  np.testing.assert_allclose(g_sizes[5], 0.5e-4, rtol=1e-3)
  np.testing.assert_allclose(d_sizes[25], 2e-4, rtol=1e-3)
  assert g_sizes[10] == 0.0 and d_sizes[50] == 0.0
