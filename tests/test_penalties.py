"""Gradient penalties against closed forms and independent computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gan_jax import penalties
from helpers import tiny_config
from step_runner import Runner, toy_config

LAM = 3.0


def penalty(name, **kw):
  cfg = tiny_config(**{"gp.weight": LAM, "r1.gamma": LAM}, **kw)
  return penalties.build(cfg, name).fn


def keys(n, seed=0):
  return jax.random.split(jax.random.PRNGKey(seed), n)


def data(n=6, d=3, seed=0):
  rng = np.random.RandomState(seed)
  return (rng.randn(n, d).astype(np.float32),
          rng.randn(n, d).astype(np.float32))


def test_gp_on_a_linear_critic_is_the_closed_form():
  # D(x) = w.x + b has gradient w everywhere: lambda (||w|| - 1)^2.
  w = np.array([0.3, -2.0, 1.5], np.float32)
  real, fake = data()
  got = penalty("gp")(lambda x: x @ w + 0.7, real, fake, keys(6))
  want = LAM * (np.linalg.norm(w.astype(np.float64)) - 1.0) ** 2
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gp_norm_is_per_example_not_over_the_batch():
  # D(x) = sum(x^2)/2 has gradient x. With real == fake every interpolate is
  # that point, so the penalty is lambda mean_i (||x_i|| - 1)^2.
  real, _ = data(n=5, d=4)
  real[0] *= 0.1  # norms that differ a lot between examples
  got = penalty("gp")(lambda x: 0.5 * jnp.sum(x ** 2, axis=1), real, real,
                      keys(5))
  norms = np.linalg.norm(real.astype(np.float64), axis=1)
  want = LAM * np.mean((norms - 1.0) ** 2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  whole_batch = LAM * (np.linalg.norm(real.astype(np.float64)) - 1.0) ** 2
  assert not np.isclose(got, whole_batch, rtol=1e-2)


def test_gp_interpolates_are_drawn_per_example_from_their_keys():
  # D(x) = sum(x^2)/2 with real = 1 and fake = 0: x_hat_i = eps_i 1, so
  # ||grad D(x_hat_i)|| = eps_i sqrt(d).
  d, n = 4, 16
  real, fake = np.ones((n, d), np.float32), np.zeros((n, d), np.float32)
  f = lambda x: 0.5 * jnp.sum(x ** 2, axis=1)
  k = keys(n)
  got = penalty("gp")(f, real, fake, k)
  # Reassemble eps from the per-example keys alone: example i uses key i.
  eps = np.array([float(jax.random.uniform(k[i], ())) for i in range(n)])
  assert eps.std() > 0.1 and eps.min() >= 0 and eps.max() <= 1
  assert len(set(eps.tolist())) == n
  want = LAM * np.mean((eps * np.sqrt(d) - 1.0) ** 2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # The first half of the batch does not depend on the second half's keys.
  half = penalty("gp")(f, real[:8], fake[:8], k[:8])
  np.testing.assert_allclose(
      half, LAM * np.mean((eps[:8] * np.sqrt(d) - 1.0) ** 2), rtol=1e-5)


def test_per_example_norm_groups_packed_samples():
  # A packing critic (PacGAN, pack 2): one logit per pair of rows.
  x, _ = data(n=6, d=3)
  f = lambda v: 0.5 * jnp.sum(v.reshape(3, -1) ** 2, axis=1)
  got = penalties.per_example_grad_sq_norm(f, x)
  sq = np.sum(x.astype(np.float64) ** 2, axis=1)
  np.testing.assert_allclose(got, sq[0::2] + sq[1::2], rtol=1e-5)


def test_per_example_norm_needs_one_logit_per_example():
  """A D returning (N, 1) is read as (N,); one with several outputs per
  example (MAD-GAN's k+1) has no single gradient to penalize."""
  x, _ = data(n=4, d=3)
  column = lambda v: 0.5 * jnp.sum(v ** 2, axis=1, keepdims=True)
  np.testing.assert_allclose(penalties.per_example_grad_sq_norm(column, x),
                             np.sum(x.astype(np.float64) ** 2, axis=1),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="one logit per example"):
    penalties.per_example_grad_sq_norm(lambda v: jnp.stack([v[:, 0], v[:, 1]],
                                                           axis=1), x)


def test_r1_is_half_gamma_mean_squared_grad_norm_on_real_data():
  # D(x) = sum(tanh(x A)): grad_i = A (1 - tanh^2(A^T x_i)), in NumPy.
  rng = np.random.RandomState(1)
  a = rng.randn(3, 5).astype(np.float32)
  real, fake = data(n=7, d=3)
  got = penalty("r1")(lambda x: jnp.sum(jnp.tanh(x @ a), axis=1), real, fake,
                      keys(7))
  r, a64 = real.astype(np.float64), a.astype(np.float64)
  g = (1 - np.tanh(r @ a64) ** 2) @ a64.T
  want = 0.5 * LAM * np.mean(np.sum(g ** 2, axis=1))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Fake data does not enter R1.
  got2 = penalty("r1")(lambda x: jnp.sum(jnp.tanh(x @ a), axis=1), real,
                       fake * 10, keys(7, seed=3))
  np.testing.assert_allclose(got2, got, rtol=1e-6)


def _r1_at_initial_state(run):
  """R1 of the step-0 real batch at the initial D, one example at a time."""
  st = run.host()
  real = run.inputs(0)["d"]["real"][0]
  disc = run.gan.discriminator

  def d_one(x):
    return disc.apply({"params": st.d_params, **st.d_state}, x[None], None,
                      train=False)[0]

  g = np.asarray(jax.vmap(jax.grad(d_one))(jnp.asarray(real)), np.float64)
  return 0.5 * getattr(run.cfg, "r1.gamma") * np.mean(np.sum(g ** 2, axis=1))


@pytest.fixture(name="lazy_runs", scope="module")
def fixture_lazy_runs():
  """6 steps of a WGAN-GP + R1 critic with --r1.every=3 and --gp.every=2
  on 1 and 2 devices, and the R1 of step 0 computed independently."""
  cfg = toy_config(loss="wgan", penalties=["gp", "r1"],
                   **{"gp.weight": 10.0, "r1.gamma": 2.0, "r1.every": 3,
                      "gp.every": 2})
  one = Runner(cfg, 1)
  r1 = _r1_at_initial_state(one)
  return one.steps(6), Runner(cfg, 2).steps(6), r1


def test_r1_in_the_train_step_is_lazy_every_n_updates_scaled_by_n(lazy_runs):
  # The step's R1 on its real batch equals an independent per-example
  # computation; with --r1.every=3 it is applied at D updates 0, 3, ...
  # (d_steps 1: one per step) multiplied by 3, and is 0 in between; each
  # regularizer keeps its own interval (--gp.every=2).
  m, _, want = lazy_runs
  assert np.all(m["penalty/r1"][[0, 3]] > 0)
  np.testing.assert_array_equal(m["penalty/r1"][[1, 2, 4, 5]], 0.0)
  assert np.all(m["penalty/gp"][[0, 2, 4]] > 0)
  np.testing.assert_array_equal(m["penalty/gp"][[1, 3, 5]], 0.0)
  np.testing.assert_allclose(m["penalty/r1"][0], 3 * want, rtol=1e-4)


def test_step_metrics_and_gp_do_not_depend_on_the_device_count(lazy_runs):
  # Every update reports the loss, its parts, each penalty and both
  # gradient norms; WGAN-GP's per-example draws come from per-example keys,
  # so 1 and 2 devices agree.
  one, two, _ = lazy_runs
  for name in ("d_loss", "d_loss_real", "d_loss_fake", "g_loss",
               "penalty/gp", "penalty/r1", "d_grad_norm", "g_grad_norm"):
    assert one[name].shape == (6,), name
    assert np.all(np.isfinite(one[name])), name
    np.testing.assert_allclose(one[name][0], two[name][0], rtol=1e-4,
                               err_msg=name)
    np.testing.assert_allclose(one[name], two[name], rtol=2e-3, atol=1e-5,
                               err_msg=name)  # float sums in other orders
  np.testing.assert_allclose(one["d_loss"],
                             one["d_loss_real"] + one["d_loss_fake"],
                             rtol=1e-5, atol=1e-6)
  assert np.all(one["d_grad_norm"] > 0) and np.all(one["g_grad_norm"] > 0)


def test_path_length_is_the_norm_of_j_transpose_y_around_its_running_mean():
  # G(z) = tanh(z A) on 8x8x1 "images": J^T y computed column by column
  # with numpy, the running mean a updated before the penalty.
  rng = np.random.RandomState(1)
  a_mat = rng.randn(3, 64).astype(np.float32) * 0.3
  z = rng.randn(5, 3).astype(np.float32)
  k = keys(5, seed=2)
  fn = penalties.build(tiny_config(**{"pl.weight": 2.0, "pl.decay": 0.1}),
                       "pl").fn

  def g_fn(v):
    return jnp.tanh(v @ a_mat).reshape(-1, 8, 8, 1)

  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  value, new = jax.shard_map(  # it averages over the data axis
      lambda z_, k_: fn(g_fn=g_fn, z=z_, keys=k_,
                        state={"mean": jnp.float32(0.5)}),
      mesh=mesh, in_specs=P(), out_specs=P(), check_vma=False)(
          jnp.asarray(z), k)
  lengths = []
  for i in range(5):
    y = np.asarray(jax.random.normal(k[i], (8, 8, 1)), np.float64) / 8.0
    d = 1.0 - np.tanh(z[i].astype(np.float64) @ a_mat) ** 2
    jac = a_mat.astype(np.float64) * d[None, :]       # (3, 64)
    lengths.append(np.linalg.norm(jac @ y.reshape(-1)))
  lengths = np.array(lengths)
  mean = 0.5 + 0.1 * (lengths.mean() - 0.5)
  np.testing.assert_allclose(new["mean"], mean, rtol=1e-5)
  np.testing.assert_allclose(value, 2.0 * np.mean((lengths - mean) ** 2),
                             rtol=1e-4)


@pytest.fixture(name="pl_runs", scope="module")
def fixture_pl_runs():
  """6 steps with path-length regularization on G every 2 G updates, on 1
  and 2 devices: (metrics, the running mean after each step) each."""
  cfg = toy_config(penalties=["pl"], **{"pl.every": 2, "pl.decay": 0.5})
  out = []
  for n in (1, 2):
    run = Runner(cfg, n)
    assert float(run.host().extra["penalty_pl"]["mean"]) == 0.0
    metrics, means = [], []
    for _ in range(6):
      metrics.append(run.steps(1))
      means.append(float(run.host().extra["penalty_pl"]["mean"]))
    out.append(({k: np.concatenate([m[k] for m in metrics])
                 for k in metrics[0]}, np.array(means)))
  return out


def test_path_length_runs_on_g_every_n_updates_with_its_running_mean(
    pl_runs):
  (m, means), (m2, means2) = pl_runs
  assert np.all(m["penalty/pl"][[0, 2, 4]] > 0)
  np.testing.assert_array_equal(m["penalty/pl"][[1, 3, 5]], 0.0)
  # The running mean moves only on the steps that apply the regularizer.
  assert means[0] > 0 and means[2] != means[1] and means[4] != means[3]
  assert means[1] == means[0] and means[3] == means[2] and (
      means[5] == means[4])
  # Its per-example noise comes from per-example keys: 2 devices agree.
  np.testing.assert_allclose(means, means2, rtol=1e-4)
  np.testing.assert_allclose(m["penalty/pl"], m2["penalty/pl"], rtol=2e-3)


def test_a_regularizer_section_without_its_regularizer_is_warned(caplog):
  from gan_jax import gan as gan_lib
  gan_lib.build(toy_config(**{"r1.gamma": 3.0}))
  assert "--r1.gamma=3.0 has no effect here: --penalties does not name r1" \
      in caplog.text


def test_unknown_penalty_is_a_user_error():
  from gan_jax import gan as gan_lib
  from gan_jax.errors import UserError
  with pytest.raises(UserError, match="gp"):
    gan_lib.build(toy_config(penalties=["nope"]))


def test_a_regularizer_from_outside_brings_its_section_interval_and_state():
  """A D-side regularizer registered with penalties.register from outside
  the package: its own knob, its --<name>.every (default 2 here) and a
  state that moves only on the updates that apply it."""
  from gan_jax import sections
  name = "test_only_logit_l2"
  if name not in penalties.PENALTIES:
    sections.float_(name, "weight", 1.0, "A test's weight.", owner="penalty")

    @penalties.register(name, side="d", every=2, state={"calls": 0.0})
    def _logit_l2(weight=1.0):
      def penalty(d_fn, real, fake, keys, state):
        del fake, keys
        return (weight * jnp.mean(d_fn(real) ** 2),
                {"calls": state["calls"] + 1.0})
      return penalty

  run = Runner(toy_config(penalties=[name], **{f"{name}.weight": 0.5}))
  m = run.steps(4)
  assert np.all(m[f"penalty/{name}"][[0, 2]] > 0)
  np.testing.assert_array_equal(m[f"penalty/{name}"][[1, 3]], 0.0)
  assert float(run.host().extra[f"penalty_{name}"]["calls"]) == 2.0
