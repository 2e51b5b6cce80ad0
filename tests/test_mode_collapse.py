"""Mode-collapse toolkit (issue 7): packing, minibatch features in the toy
discriminators, unrolled GAN, MAD-GAN and vectorized seeds."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import checkpoint as ckpt_lib
from gan_jax import gan as gan_lib
from gan_jax.methods import madgan
from gan_jax.methods.gan import GAN
from gan_jax import state as state_lib
from gan_jax import steps
from gan_jax.errors import UserError
from helpers import run_module, tiny_config


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_trees_equal(a, b):
  for x, y in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def mesh_of(n):
  return jax.make_mesh((n,), ("data",), devices=jax.devices()[:n])


def init(gan, mesh):
  cfg = gan.cfg
  return jax.jit(lambda: state_lib.create_replicas(gan, cfg.seed,
                                                   cfg.num_seeds),
                 out_shardings=NamedSharding(mesh, P()))()


def train(cfg, n_devices=1, steps_per_call=2, gan=None):
  gan = gan or gan_lib.build(cfg)
  mesh = mesh_of(n_devices)
  with jax.set_mesh(mesh):
    st = init(gan, mesh)
    st, metrics = steps.make_train_step(gan, mesh, steps_per_call)(st, None)
  return jax.device_get(st), jax.device_get(metrics)


# ------------------------------------------------------------------ packing


def test_pack_joins_consecutive_vectors():
  gan = gan_lib.build(tiny_config(pack=3, batch_size=12))
  x = np.arange(12 * 2, dtype=np.float32).reshape(12, 2)
  packed = np.asarray(gan.pack(jnp.asarray(x)))
  assert packed.shape == (4, 6)
  for i in range(4):
    np.testing.assert_array_equal(packed[i], x[3 * i:3 * i + 3].reshape(-1))


def test_pack_stacks_image_channels():
  gan = gan_lib.build(tiny_config(pack=2, batch_size=4))
  x = np.random.default_rng(0).normal(size=(4, 5, 5, 3)).astype(np.float32)
  packed = np.asarray(gan.pack(jnp.asarray(x)))
  assert packed.shape == (2, 5, 5, 6)
  for i in range(2):
    for j in range(2):
      np.testing.assert_array_equal(packed[i, ..., 3 * j:3 * j + 3],
                                    x[2 * i + j])


@pytest.mark.parametrize("m", [1, 2, 4])
def test_toy_discriminator_sees_packed_input(m):
  gan = gan_lib.build(tiny_config(pack=m, batch_size=8 * m))
  st = jax.eval_shape(lambda: state_lib.create(gan, 0))
  first = st.d_params["Maxout_0"]["Dense_0"]["kernel"]
  assert first.shape[0] == 2 * m  # (b, 2) -> (b / m, 2m)
  logits, _ = jax.eval_shape(
      lambda p, s: gan.discriminate(p, s, jnp.zeros((8 * m, 2)), None,
                                    train=True), st.d_params, st.d_state)
  assert logits.shape == (8,)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_conv_discriminator_sees_stacked_channels(arch):
  cfg = tiny_config(pack=3, batch_size=6, discriminator=arch, generator=arch,
                    z_dim=8, **{"g.channels": 4, "d.channels": 4})
  dataset = types.SimpleNamespace(shape=(16, 16, 1), num_classes=0,
                                  kind="image")
  gan = gan_lib.build(cfg, dataset=dataset)
  st = jax.eval_shape(lambda: state_lib.create(gan, 0))
  in_channels = {leaf.shape[-2] for path, leaf in
                 jax.tree_util.tree_leaves_with_path(st.d_params)
                 if leaf.ndim == 4}
  assert 3 in in_channels  # the first convolution reads 3 x 1 channels
  logits, _ = jax.eval_shape(
      lambda p, s: gan.discriminate(p, s, jnp.zeros((6, 16, 16, 1)), None,
                                    train=True), st.d_params, st.d_state)
  assert logits.shape == (2,)


class _NeverPacks(GAN):
  """The same GAN with packing removed from the code path."""

  def pack(self, x):
    return x


def test_pack_1_is_no_packing_bitwise():
  cfg = tiny_config(pack=1)
  gan = gan_lib.build(cfg)
  plain = _NeverPacks(cfg, gan.dataset)
  a, _ = train(cfg, gan=gan)
  b, _ = train(cfg, gan=plain)
  assert_trees_equal(a, b)


def test_pack_must_divide_the_batch():
  from gan_jax import train as train_lib
  gan = gan_lib.build(tiny_config(pack=3, batch_size=16))
  with pytest.raises(UserError, match=r"multiple of 3 \(1 devices x pack 3"):
    train_lib.check_config(gan.cfg, 1, *gan.batch_multiple)


# ---------------------------------------------------- minibatch features


@pytest.mark.parametrize("kind", ["salimans", "stddev"])
def test_toy_discriminator_minibatch_features_see_diversity(kind):
  # lecun_normal: at the PacGAN pair's N(0, 0.02) a fresh D's logits are
  # ~1e-5, too small for the absolute threshold below.
  gan = gan_lib.build(tiny_config(**{
      "d.minibatch": kind, "d.mbd_kernels": 6, "d.mbd_kernel_dim": 3,
      "d.mbstd_group_size": 4, "d.init": "lecun_normal"}))
  st = state_lib.create(gan, 0)
  x0 = jnp.array([[0.3, -0.2]])
  same = jnp.tile(x0, (8, 1))
  diverse = jnp.concatenate(
      [x0, jax.random.normal(jax.random.PRNGKey(1), (7, 2))])

  def logit0(x):
    return gan.discriminate(st.d_params, st.d_state, x, None,
                            train=False)[0][0]

  # Sample 0 is the same; only its batch-mates change.
  assert abs(float(logit0(same)) - float(logit0(diverse))) > 1e-4


def test_toy_discriminator_without_minibatch_features_is_per_sample():
  gan = gan_lib.build(tiny_config())
  st = state_lib.create(gan, 0)
  x0 = jnp.array([[0.3, -0.2]])
  same = jnp.tile(x0, (8, 1))
  diverse = jnp.concatenate(
      [x0, jax.random.normal(jax.random.PRNGKey(1), (7, 2))])
  a = gan.discriminate(st.d_params, st.d_state, same, None, train=False)[0]
  b = gan.discriminate(st.d_params, st.d_state, diverse, None, train=False)[0]
  np.testing.assert_allclose(a[0], b[0], rtol=1e-6)


@pytest.mark.parametrize("kind", ["salimans", "stddev"])
def test_minibatch_training_is_finite(kind):
  _, metrics = train(tiny_config(**{"d.minibatch": kind, "d.mbd_kernels": 4,
                                 "d.mbd_kernel_dim": 3}))
  assert np.all(np.isfinite(metrics["d_loss"]))
  assert np.all(np.isfinite(metrics["g_loss"]))


# --------------------------------------------------------------- unrolling


def _g_grad(cfg, loss_name, compiler_options=None):
  """G's gradient on the first step's G batch: the plain GAN's G objective
  (``loss_name`` "plain") or unrolled GAN's (``cfg``'s --unrolled.steps)."""
  cfg = (cfg.replace(method="unrolled") if loss_name == "unrolled"
         else cfg.replace(**{"unrolled.steps": 5}))
  gan = gan_lib.build(cfg)
  mesh = mesh_of(1)
  with jax.set_mesh(mesh):
    st = init(gan, mesh)

    def local(st, inputs):
      d_keys = jax.random.split(jax.random.fold_in(inputs["key"], 0),
                                cfg.d_steps)
      ctx = {"inputs": inputs, "d_keys": d_keys, "first": 0}
      batch = {**inputs["g"], "key": jax.random.fold_in(inputs["key"], 1)}

      def loss(g_params):
        params = {**st.params, "G": g_params}
        return gan.objective("g", params, st, batch, ctx)[0]

      return steps.pmean(jax.grad(loss)(steps.varying(st.g_params)))

    def fn(st):
      inputs = gan.sample_inputs(jax.random.fold_in(st.rng, 0), None)
      return jax.shard_map(local, mesh=mesh, in_specs=(P(), P()),
                           out_specs=P())(st, inputs)

    compiled = jax.jit(fn).lower(st).compile(compiler_options=compiler_options)
    return jax.device_get(compiled(st))


def test_unrolled_gradient_differs():
  plain = _g_grad(tiny_config(), "plain")
  unrolled = _g_grad(tiny_config(**{"d_optimizer.lr": 1e-2, "unrolled.steps": 3}),
                     "unrolled")
  diffs = [np.abs(a - b).max() for a, b in zip(leaves(plain),
                                               leaves(unrolled))]
  assert max(diffs) > 1e-6
  assert all(np.all(np.isfinite(x)) for x in leaves(unrolled))


def test_unrolled_gradient_is_finite_without_xla_optimizations():
  """Regression: with jnp.max's derivative in the maxout layers the unrolled
  gradient was NaN when XLA compiled at optimization level 0 (its JVP
  divides by the count of pieces equal to the max, and unoptimized kernels
  recomputed the max with different rounding: count 0, 0/0). layers.maxout's
  own JVP picks one winner by argmax."""
  unrolled = _g_grad(tiny_config(**{"d_optimizer.lr": 1e-2, "unrolled.steps": 3}),
                     "unrolled",
                     {"xla_backend_optimization_level": 0})
  assert all(np.all(np.isfinite(x)) for x in leaves(unrolled))


@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd"])
def test_unrolled_gradient_is_finite_with_other_d_optimizers(optimizer):
  """Regression: with --d_optimizer=rmsprop the unrolled G gradient was NaN
  at the first step (sqrt(nu) differentiated at nu = 0, a D gradient that
  is exactly 0)."""
  unrolled = _g_grad(tiny_config(d_optimizer=optimizer,
                                 **{"unrolled.steps": 2}),
                     "unrolled")
  assert all(np.all(np.isfinite(x)) for x in leaves(unrolled))


def test_differentiable_rmsprop_matches_the_plain_one():
  """The unrolled copy of RMSProp (eps inside the square root) has a finite
  derivative at a zero gradient and the plain one's values elsewhere."""
  import optax  # pylint: disable=g-import-not-at-top
  from gan_jax import optim  # pylint: disable=g-import-not-at-top
  plain = optim.rmsprop(optax.constant_schedule, False, lr=1e-3)
  diff = optim.rmsprop(optax.constant_schedule, True, lr=1e-3)
  params = jnp.zeros(4)
  def update(tx, g):
    return tx.update(g, tx.init(params), params)[0]
  g = jnp.array([0.0, 1e-3, 0.5, -2.0])
  # Apart within eps's own relative effect, 1e-8 / sqrt(nu) (1e-4 here).
  np.testing.assert_allclose(update(diff, g), update(plain, g), rtol=2e-4)
  grad = jax.grad(lambda g: update(diff, g).sum())(jnp.zeros(4))
  assert np.all(np.isfinite(grad))
  assert jax.tree.structure(diff.init(params)) == jax.tree.structure(
      plain.init(params))


def test_unrolled_updates_with_zero_learning_rate_change_nothing():
  # D updates of size 0 leave D where it is, so the unrolled gradient is the
  # plain one (a check that the unrolled D is d_update's, lr included).
  cfg = tiny_config(**{"unrolled.steps": 2, "d_optimizer.lr": 0.0})
  for a, b in zip(leaves(_g_grad(cfg, "plain")),
                  leaves(_g_grad(cfg, "unrolled"))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_unrolled_step_keeps_the_non_unrolled_discriminator():
  plain, _ = train(tiny_config(d_steps=2), steps_per_call=1)
  unrolled, m = train(tiny_config(d_steps=2, method="unrolled",
                                  **{"unrolled.steps": 3}),
                      steps_per_call=1)
  assert_trees_equal((plain.d_params, plain.d_state, plain.opt_state["D"]),
                     (unrolled.d_params, unrolled.d_state,
                      unrolled.opt_state["D"]))
  assert any(not np.array_equal(a, b) for a, b in
             zip(leaves(plain.g_params), leaves(unrolled.g_params)))
  assert np.all(np.isfinite(m["g_loss"]))


# ------------------------------------------------------------------ MAD-GAN


def test_madgan_labels_each_generator_block_with_its_index():
  k, n = 4, 12
  labels = np.asarray(madgan.generator_labels(n, k))
  np.testing.assert_array_equal(labels, np.repeat(np.arange(k), n // k))
  loss = gan_lib.build(tiny_config(method="madgan",
                                   **{"madgan.generators": k},
                                   batch_size=n)).loss
  rng = np.random.default_rng(0)
  real = rng.normal(size=(n, k + 1)).astype(np.float32)
  fake = rng.normal(size=(n, k + 1)).astype(np.float32)

  def ce(logits, y):  # an independent numpy softmax cross-entropy
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()

  d, lr, lf = (float(v) for v in loss.d(jnp.asarray(real),
                                        jnp.asarray(fake)))
  np.testing.assert_allclose(lr, ce(real, np.full(n, k)), rtol=1e-5)
  np.testing.assert_allclose(lf, ce(fake, labels), rtol=1e-5)
  np.testing.assert_allclose(d, lr + lf, rtol=1e-6)
  np.testing.assert_allclose(float(loss.g(jnp.asarray(fake))),
                             ce(fake, np.full(n, k)), rtol=1e-5)
  # A D that names each block's generator has a small fake loss.
  right = 20.0 * np.eye(k + 1, dtype=np.float32)[labels]
  wrong = 20.0 * np.eye(k + 1, dtype=np.float32)[(labels + 1) % k]
  assert float(loss.d(jnp.asarray(real), jnp.asarray(right))[2]) < 1e-6
  assert float(loss.d(jnp.asarray(real), jnp.asarray(wrong))[2]) > 10


def test_madgan_generate_splits_the_batch_between_generators():
  cfg = tiny_config(method="madgan", batch_size=8,
                    **{"madgan.generators": 2})
  gan = gan_lib.build(cfg)
  st = state_lib.create(gan, 0)
  assert jax.tree.leaves(st.g_params)[0].shape[0] == 2
  z = jax.random.normal(jax.random.PRNGKey(3), (8, 2))
  x, _ = gan.generate(st.g_params, st.g_state, z, None, train=False)
  for i in range(2):
    p_i = jax.tree.map(lambda a, i=i: a[i], st.g_params)
    s_i = jax.tree.map(lambda a, i=i: a[i], st.g_state)
    x_i, _ = GAN.generate(gan, p_i, s_i, z[4 * i:4 * i + 4], None,
                          train=False)
    np.testing.assert_allclose(x[4 * i:4 * i + 4], x_i, rtol=1e-6)
  # Odd sample counts (evaluation) are padded and trimmed.
  x5, _ = gan.generate(st.g_params, st.g_state, z[:5], None, train=False)
  assert x5.shape == (5, 2)
  logits, _ = gan.discriminate(st.d_params, st.d_state, x, None, train=False)
  assert logits.shape == (8, 3)


def test_madgan_training_is_finite_and_moves_every_generator():
  cfg = tiny_config(method="madgan", batch_size=16,
                    **{"madgan.generators": 2})
  gan = gan_lib.build(cfg)
  st0 = state_lib.create(gan, 0)
  st, m = train(cfg, n_devices=2)
  assert np.all(np.isfinite(m["d_loss"])) and np.all(np.isfinite(m["g_loss"]))
  for a, b in zip(leaves(st0.g_params), leaves(st.g_params)):
    assert all(not np.array_equal(a[i], b[i]) for i in range(2))


@pytest.mark.parametrize("overrides", [
    {"madgan.generators": 2},                        # method not madgan
    {"unrolled.steps": 2},                           # method not unrolled
    dict(method="madgan", pack=2),
    dict(method="madgan", discriminator="dcgan"),
    dict(method="madgan", penalties=("r1",)),
    dict(method="madgan", penalties=("gp",)),
])
def test_madgan_bad_flag_combinations(overrides):
  with pytest.raises(UserError):
    gan_lib.build(tiny_config(**overrides))


def test_madgan_batch_must_divide_by_devices_times_generators():
  from gan_jax import flags as flags_lib  # pylint: disable=g-import-not-at-top
  gan = gan_lib.build(tiny_config(method="madgan", batch_size=18,
                                  **{"madgan.generators": 3}))
  flags_lib.check_config(gan.cfg, 2, *gan.batch_multiple)
  with pytest.raises(UserError, match="multiple of 12 .4 devices x 3 "
                     "generators"):
    flags_lib.check_config(gan.cfg, 4, *gan.batch_multiple)


# ------------------------------------------------------ vectorized seeds


@pytest.mark.parametrize("seed", [-3, 2**31 + 5, 2**32 - 2])
def test_replica_seeds_use_all_32_bits(seed):
  """Replica i is create(seed + i) for any 32-bit seed (int32 arithmetic
  overflowed from 2**31 on: a traceback); past 2**32 - 1 is refused."""
  gan = gan_lib.build(tiny_config(num_seeds=2, seed=seed))
  many = jax.jit(lambda: state_lib.create_replicas(gan, seed, 2))()
  for i in range(2):
    one = jax.jit(lambda i=i: state_lib.create(gan, seed + i))()
    for a, b in zip(leaves(one), leaves(state_lib.replica(many, i)),
                    strict=True):
      np.testing.assert_array_equal(a, b)
  from gan_jax import flags as flags_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="reaches seed 4294967296"):
    flags_lib.check_new_run(tiny_config(num_seeds=3, seed=2**32 - 2))


@pytest.mark.parametrize("n_devices", [2])  # vmap over shard_map shards
@pytest.mark.parametrize("batching", ["vmap", "map"])
def test_replica_i_equals_the_run_with_seed_i(n_devices, batching):
  cfg = tiny_config(num_seeds=2, seed=5, d_steps=2, **{"d.minibatch": "stddev"},
                    seed_batching=batching)
  many, metrics = train(cfg, n_devices)
  assert metrics["d_loss"].shape == (2, 2)
  assert int(many.step[1]) == 2
  for i in range(2):
    one, m1 = train(cfg.replace(num_seeds=1, seed=5 + i), n_devices)
    rep = state_lib.replica(many, i)
    for a, b in zip(leaves(one), leaves(rep), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m1["g_loss"], metrics["g_loss"][:, i],
                               rtol=1e-5)


def test_num_seeds_on_stacked_mnist_trains_each_replica_on_triples(
    mnist_data_dir, tmp_path):
  """Replica streams of Stacked MNIST were plain 1-channel MNIST digits (a
  shape traceback in D): the benchmark the many-trial tables need."""
  from gan_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(dataset="stacked_mnist", generator="dcgan",
                    discriminator="dcgan", **{"g.channels": 4, "d.channels": 4},
                    z_dim=8, batch_size=8, num_seeds=2, num_steps=2,
                    log_every=2, steps_per_loop=2, num_devices=1,
                    tfds_data_dir=mnist_data_dir)
  scalars = train_lib.train_and_evaluate(cfg, str(tmp_path))
  assert np.isfinite(scalars["d_loss"])
  record = json.loads(open(tmp_path / "metrics.jsonl").readlines()[-1])
  assert {"d_loss/seed_0", "d_loss/seed_1"} <= set(record)


def test_replica_states_checkpoint_and_restore(tmp_path):
  cfg = tiny_config(num_seeds=2)
  st, _ = train(cfg, steps_per_call=1)
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "ck"), async_save=False)
  ckpts.save(1, st, cfg.to_dict())
  back, _, step = ckpts.restore(ckpt_lib.abstract(st))
  ckpts.close()
  assert step == 1
  assert_trees_equal(st, back)


def test_num_seeds_cli_writes_per_replica_metrics_plots_and_resumes(
    tmp_path):
  workdir = str(tmp_path / "run")
  args = ["--dataset=ring", "--g.hidden=16", "--d.hidden=8", "--g.layers=2",
          "--d.layers=2", "--d.pieces=2", "--batch_size=16",
          "--log_every=2", "--steps_per_loop=2", "--checkpoint_every=2",
          "--eval.num_samples=200", "--noprogress", "--num_seeds=2", "--seed=3",
          f"--workdir={workdir}"]
  for steps_ in (2, 4):  # the second run resumes the replicas from step 2
    result = run_module("gan_jax.main", *args, f"--num_steps={steps_}")
    assert result.returncode == 0, result.stderr[-2000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [2, 4]
  record = records[-1]
  for key in ("modes", "modes/seed_3", "modes/seed_4", "g_loss/seed_4"):
    assert key in record
  assert record["modes"] == pytest.approx(
      (record["modes/seed_3"] + record["modes/seed_4"]) / 2)
  for tag in ("seed_3", "seed_4"):
    assert os.listdir(os.path.join(workdir, "samples", tag))


def test_table1_summary_mean_and_standard_error(tmp_path):
  """experiments/pacgan/summarize.py: mean ± s.e. over the replicas of the
  chosen (or last) record, with the paper's cell beside ours."""
  run = tmp_path / "gan_ring"
  run.mkdir()
  records = [{"step": 500, "modes/seed_0": 2.0, "modes/seed_1": 4.0,
              "high_quality/seed_0": 0.1, "high_quality/seed_1": 0.3,
              "reverse_kl/seed_0": 1.0, "reverse_kl/seed_1": 2.0},
             {"step": 1000, "modes/seed_0": 8.0, "modes/seed_1": 8.0,
              "high_quality/seed_0": 0.5, "high_quality/seed_1": 0.5,
              "reverse_kl/seed_0": 0.1, "reverse_kl/seed_1": 0.1}]
  (run / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in records))
  script = os.path.join(os.path.dirname(__file__), "..", "experiments",
                        "pacgan", "summarize.py")
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  out = lambda *a: subprocess.run([sys.executable, script, *a],
                                  capture_output=True, text=True,
                                  check=True).stdout
  last = out(str(tmp_path)).strip().splitlines()[-1]
  assert last == ("| gan_ring | 1000 | 2 | 8.0±0.0 / 50.0±0.0% / "
                  "0.10±0.00 | 6.3±0.5 / 98.2±0.2% / 0.45±0.09 |")
  # step 500: modes 3 ± 1 (sample std sqrt(2) / sqrt(2)), HQ 20 ± 10%.
  first = out("--step=500", str(tmp_path)).strip().splitlines()[-1]
  assert "| 500 | 2 | 3.0±1.0 / 20.0±10.0% / 1.50±0.50 |" in first
  assert len(out("--step=7", str(tmp_path)).strip().splitlines()) == 2
  # A Stacked MNIST run (Tables 2-3): modes / KL from the last evaluated
  # record; one trial has no standard error.
  stacked = tmp_path / "pacdcgan2_stacked_mnist"
  stacked.mkdir()
  (stacked / "metrics.jsonl").write_text(
      json.dumps({"step": 2500, "modes": 990.0, "kl": 0.123}) + "\n" +
      json.dumps({"step": 3000, "d_loss": 1.0}) + "\n"
      + '{"step": 3500, "mod')  # a line cut short by a crash
  row = out(str(tmp_path), "pacdcgan2_stacked_mnist").strip().splitlines()[-1]
  assert row == ("| pacdcgan2_stacked_mnist | 2500 | 1 | 990.0 / 0.12 | "
                 "1000.0±0.00 / 0.06±0.003 |")
  # A run without mode metrics (MNIST) says so instead of "inf" cells;
  # --help is help, not a directory named --help.
  mnist = tmp_path / "dcgan_mnist"
  mnist.mkdir()
  (mnist / "metrics.jsonl").write_text(json.dumps({"step": 10, "fid": 3.0})
                                       + "\n")
  row = out(str(tmp_path), "dcgan_mnist").strip().splitlines()[-1]
  assert "| dcgan_mnist | 10 | 0 | no mode metrics" in row, row
  assert out("--help").startswith("usage: summarize.py")
  bad = subprocess.run([sys.executable, script, "--stpe=3", str(tmp_path)],
                       capture_output=True, text=True)
  assert bad.returncode != 0 and bad.stderr.startswith(
      "error: unknown option --stpe=3"), bad.stderr
