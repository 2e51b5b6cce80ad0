"""gan_jax.sample and gan_jax.interpolate (issue 6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from helpers import assert_one_line_error, run_module, tiny_config

import tiny_image_data  # noqa: F401  (registers tiny_digits)
from gan_jax import interpolate
from gan_jax import sample
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax.errors import UserError


@pytest.fixture(scope="module", name="toy_run")
def fixture_toy_run(tmp_path_factory):
  """A toy run with EMA and checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp("toy"))
  train.train_and_evaluate(tiny_config(**{"ema.decay": 0.9}, checkpoint_every=2,
                                       log_every=4, num_devices=1), workdir)
  return workdir


@pytest.fixture(scope="module", name="image_run")
def fixture_image_run(tmp_path_factory):
  """A conditional run on 8x8 images from a user-registered dataset."""
  workdir = str(tmp_path_factory.mktemp("images"))
  cfg = tiny_config(dataset="tiny_digits", generator="mlp",
                    discriminator="mlp", conditional=True, num_steps=2,
                    log_every=2, num_devices=1,
                    extra_modules=("tiny_image_data",))
  train.train_and_evaluate(cfg, workdir)
  return workdir


def test_npz_has_the_count_and_shape_and_same_seed_same_samples(toy_run,
                                                               tmp_path):
  out = str(tmp_path / "a.npz")
  step, arrays = sample.run_sample(toy_run, out, num=10, seed=3)
  assert step == 4
  with np.load(out) as f:
    assert sorted(f.files) == ["samples"]
    assert f["samples"].shape == (10, 2)
    np.testing.assert_array_equal(f["samples"], arrays["samples"])
  _, again = sample.run_sample(toy_run, str(tmp_path / "b.npz"), num=10,
                               seed=3)
  np.testing.assert_array_equal(again["samples"], arrays["samples"])
  _, other = sample.run_sample(toy_run, str(tmp_path / "c.npz"), num=10,
                               seed=4)
  assert not np.array_equal(other["samples"], arrays["samples"])
  _, older = sample.run_sample(toy_run, str(tmp_path / "d.npz"), num=10,
                               seed=3, step=2)
  assert not np.array_equal(older["samples"], arrays["samples"])


def test_samples_come_from_the_ema_parameters(toy_run, tmp_path):
  gan, state, _, mesh = sample.load(toy_run)
  assert state.ema_params is not None
  _, arrays = sample.run_sample(toy_run, str(tmp_path / "a.npz"), num=5,
                                seed=0)
  z = gan.sample_z(jax.random.fold_in(jax.random.PRNGKey(0), 0), (5,))
  with jax.set_mesh(mesh):
    ema, _ = gan.generate(state.ema_params, state.g_state, z, None,
                          train=False)
    raw, _ = gan.generate(state.g_params, state.g_state, z, None,
                          train=False)
  np.testing.assert_allclose(arrays["samples"], np.asarray(ema), atol=1e-6)
  assert not np.allclose(arrays["samples"], np.asarray(raw), atol=1e-6)


def test_cli_writes_a_toy_scatter_png(toy_run, tmp_path):
  out = tmp_path / "s.png"
  r = run_module("gan_jax.sample", f"--workdir={toy_run}", "--num=50",
                 f"--out={out}", "--seed=1")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "samples (50, 2)" in r.stdout
  assert Image.open(out).size[0] > 100


def test_cli_bad_extension_is_one_line(toy_run, tmp_path):
  r = run_module("gan_jax.sample", f"--workdir={toy_run}",
                 f"--out={tmp_path / 's.jpg'}")
  assert ".png or .npz" in assert_one_line_error(r)


@pytest.mark.parametrize("name", ["a.npz", "a.png"])
def test_cli_failed_write_keeps_the_old_file(image_run, tmp_path, name):
  """Issue 23: --out onto a good file whose write then fails (a full disk;
  here ``ulimit -f``) was left truncated; now it is kept byte for byte, no
  temporary file is left, and the error is one line naming the file."""
  out = tmp_path / name
  sample.run_sample(image_run, str(out), num=4)
  good = out.read_bytes()
  # No compilation cache: the limit would cut its entries short too.
  r = run_module("gan_jax.sample", f"--workdir={image_run}", "--num=2000",
                 f"--out={out}", max_file_bytes=16 * 1024,
                 env={"PYTHONPATH": "tests",
                      "JAX_ENABLE_COMPILATION_CACHE": "false"})
  assert r.returncode == 2, r.stderr[-3000:]
  assert "Traceback" not in r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert errors == [f"error: {out}: File too large"], r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1] == errors[0]
  assert out.read_bytes() == good
  assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("kwargs, message", [
    (dict(step=3), "no checkpoint for step 3"),
    (dict(labels=("1",)), "needs a conditional model"),
    (dict(num=0), "--num must be >= 1"),
    (dict(replica=1), r"--replica=1 but the run has 1 replica \(0..0\)"),
])
def test_bad_input_raises_user_error(toy_run, tmp_path, kwargs, message):
  with pytest.raises(UserError, match=message):
    sample.run_sample(toy_run, str(tmp_path / "a.npz"), **kwargs)


def test_no_checkpoint_is_an_error(tmp_path):
  with pytest.raises(UserError, match="no checkpoint in"):
    sample.run_sample(str(tmp_path), str(tmp_path / "a.npz"))


def test_conditional_images_npz_png_and_labels(image_run, tmp_path):
  out = str(tmp_path / "a.npz")
  _, arrays = sample.run_sample(image_run, out, num=7, labels=("3", "5"))
  with np.load(out) as f:
    assert f["samples"].shape == (7, 8, 8, 1)
    np.testing.assert_array_equal(f["labels"], [3, 5, 3, 5, 3, 5, 3])
  _, random_labels = sample.run_sample(image_run, str(tmp_path / "b.npz"),
                                       num=7)
  assert random_labels["labels"].shape == (7,)
  png = tmp_path / "a.png"
  sample.run_sample(image_run, str(png), num=12)
  assert Image.open(png).size == (3 * 10 + 2, 4 * 10 + 2)  # 8 px + 2 pad
  with pytest.raises(UserError, match="0..9"):
    sample.run_sample(image_run, out, labels=("10",))


def test_interpolation_strips(image_run, tmp_path):
  out = str(tmp_path / "i.npz")
  _, arrays = sample.run_sample(image_run, out, num=3, interpolate=True,
                                interpolate_steps=5, labels=("2",))
  assert arrays["linear"].shape == (3, 5, 8, 8, 1)
  assert arrays["spherical"].shape == (3, 5, 8, 8, 1)
  np.testing.assert_array_equal(arrays["labels"], [2, 2, 2])
  # Both paths start and end at the same samples.
  np.testing.assert_allclose(arrays["linear"][:, [0, -1]],
                             arrays["spherical"][:, [0, -1]], atol=1e-5)
  png = tmp_path / "i.png"
  sample.run_sample(image_run, str(png), num=3, interpolate=True,
                    interpolate_steps=5)
  assert Image.open(png).size == (5 * 10 + 2, 6 * 10 + 2)


def test_slerp_keeps_the_norm_and_the_endpoints():
  z0 = jnp.array([[3.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
  z1 = jnp.array([[0.0, 3.0, 0.0], [2.0, -1.0, 2.0]])
  lin, sph = interpolate.strips(z0, z1, 5)
  np.testing.assert_allclose(sph[:, 0], z0, atol=1e-6)
  np.testing.assert_allclose(sph[:, -1], z1, atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(sph, axis=-1), 3.0, atol=1e-5)
  # Quarter circle: the midpoint is (3, 3, 0) / sqrt(2).
  np.testing.assert_allclose(sph[0, 2], [3 / 2**0.5, 3 / 2**0.5, 0],
                             atol=1e-5)
  np.testing.assert_allclose(lin[0, 2], [1.5, 1.5, 0.0])
  # Parallel vectors: slerp falls back to lerp (no division by sin 0).
  same = interpolate.slerp(z0, 2 * z0, 0.5)
  np.testing.assert_allclose(same, 1.5 * z0, atol=1e-5)
  # Nearly antipodal pairs of unequal length: the straight line, not a
  # blow-up (it reached |z| ~ 2000 at float32's rounding of the angle).
  a = jnp.array([[1.0, 0.0, 0.0, 0.0]])
  b = -2.0 * (a + jnp.array([[0.0, 1e-3, 0.0, 0.0]]))
  path = interpolate.strips(a, b, 5)[1]
  assert float(jnp.max(jnp.abs(path))) <= 2.01
  # The endpoints are exact.
  assert (np.asarray(sph[:, 0]) == np.asarray(z0)).all()
  assert (np.asarray(sph[:, -1]) == np.asarray(z1)).all()


def test_spherical_strips_of_uniform_noise_stay_in_its_support():
  """The great circle between two points of [-1, 1]^d leaves the cube
  (5% of coordinates for random 100-d pairs); a bounded prior's spherical
  strips are clipped to it, the straight ones never leave it."""
  key0, key1 = jax.random.split(jax.random.PRNGKey(0))
  z0 = jax.random.uniform(key0, (200, 100), minval=-1, maxval=1)
  z1 = jax.random.uniform(key1, (200, 100), minval=-1, maxval=1)
  _, unclipped = interpolate.strips(z0, z1, 10)
  assert float(jnp.max(jnp.abs(unclipped))) > 1.2
  lin, sph = interpolate.strips(z0, z1, 10, support=(-1.0, 1.0))
  assert float(jnp.max(jnp.abs(sph))) <= 1.0
  assert float(jnp.max(jnp.abs(lin))) <= 1.0
  np.testing.assert_array_equal(sph[:, 0], z0)


def test_saved_runs_take_safe_overrides_only(image_run, tmp_path):
  from gan_jax import evaluate
  # A safe flag given to the tool replaces the run's saved value ...
  weights = str(tmp_path / "elsewhere.pth")
  with pytest.raises(UserError, match="elsewhere.pth"):
    evaluate.run_evaluate(image_run, 10, None,
                          overrides={"inception_weights": weights})
  # ... metric settings the sample count cannot meet fail before sampling ...
  with pytest.raises(UserError, match="--precision_recall.k=10 needs more than 10"):
    evaluate.run_evaluate(image_run, 10, None, overrides={"precision_recall.k": 10})
  with pytest.raises(UserError, match="--inception_score.splits=11 needs at least 11"):
    evaluate.run_evaluate(image_run, 10, None, overrides={"inception_score.splits": 11})
  # ... and a structural flag cannot be overridden (the CLIs pass every
  # config flag given on their command line) ...
  with pytest.raises(UserError, match="^cannot override dataset, g.hidden of "
                     "a saved run \\(--dataset: the run's tiny_digits, given "
                     "fashion_mnist; --g.hidden: the run's"):
    sample.run_sample(image_run, str(tmp_path / "a.npz"),
                      overrides={"g.hidden": 3, "dataset": "fashion_mnist"})
  # ... though it may be restated with the run's own value.
  run_cfg = sample.load(image_run)[0].cfg
  sample.run_sample(image_run, str(tmp_path / "b.npz"),
                    overrides={"dataset": run_cfg.dataset,
                               "g.hidden": getattr(run_cfg, "g.hidden")})


def test_evaluate_reports_every_replica_and_their_mean(tmp_path,
                                                      monkeypatch):
  from gan_jax import evaluate
  workdir = str(tmp_path / "seeds")
  train.train_and_evaluate(tiny_config(num_seeds=2, seed=5, num_devices=1),
                           workdir)
  # A stand-in metric that identifies the parameters it was given (a tiny
  # run's mode metrics are all 0 / inf).
  def g_sum(self, state, progress=False):
    del self, progress
    return {"g_sum": float(sum(np.sum(l) for l in
                               jax.tree.leaves(state.g_params)))}
  monkeypatch.setattr(evaluate.Evaluator, "__call__", g_sum)
  results = evaluate.run_evaluate(workdir, 200, None)
  _, full, _, _ = sample.load(workdir, replica=None)
  want = [g_sum(None, state_lib.replica(full, i))["g_sum"] for i in (0, 1)]
  assert want[0] != want[1]
  assert [results["g_sum/seed_5"], results["g_sum/seed_6"]] == want
  assert results["g_sum"] == pytest.approx(np.mean(want))
