"""The Parzen window log-likelihood (Goodfellow et al. 2014, Table 1), held-out
training images (--data.train_examples), and replica streams of dataset
subclasses."""

import json
import math

import numpy as np
import pytest

from gan_jax import data as data_lib
from gan_jax import evaluate
from gan_jax import gan as gan_lib
from gan_jax import metrics
from gan_jax import state as state_lib
from gan_jax import sampler
from gan_jax.data import images
from gan_jax.data import stacked_mnist
from gan_jax.errors import UserError
from gan_jax.metrics import METRICS
from gan_jax.metrics import parzen
from helpers import assert_one_line_error, run_module, tiny_config

MNIST_DIR = images.default_manual_dir("mnist")
needs_mnist = pytest.mark.skipif(MNIST_DIR is None,
                                 reason="../shared/data/mnist absent")


def naive_log_density(centers, points, sigma):
  """float64, one point at a time, straight from the definition."""
  c = np.asarray(centers, np.float64)
  out = []
  for x in np.asarray(points, np.float64):
    e = -((x - c) ** 2).sum(1) / (2 * sigma ** 2)
    m = e.max()
    out.append(m + math.log(np.exp(e - m).mean())
               - c.shape[1] * math.log(sigma * math.sqrt(2 * math.pi)))
  return np.array(out)


def test_log_density_matches_the_definition_for_every_width():
  rng = np.random.default_rng(0)
  centers = rng.uniform(size=(300, 50))
  # More points than a block, not a multiple of it: the padded last block.
  points = rng.uniform(size=(1100, 50))
  sigmas = [0.1, 0.3, 1.0]
  got = parzen.log_density(centers, points, sigmas)
  assert got.shape == (3, 1100)
  for i, s in enumerate(sigmas):
    np.testing.assert_allclose(got[i], naive_log_density(centers, points, s),
                               rtol=0, atol=2e-3)


def test_one_center_is_a_gaussian_density():
  x = np.array([[0.5, 0.25, 1.0]])
  got = parzen.log_density(x, x + np.array([[0.1, 0.0, 0.0]]), [0.2])[0, 0]
  want = -0.01 / (2 * 0.04) - 3 * math.log(0.2 * math.sqrt(2 * math.pi))
  assert got == pytest.approx(want, abs=1e-5)


def test_width_is_chosen_on_validation_points_and_scores_the_test_points():
  rng = np.random.default_rng(1)
  # Data near 0.5 with spread 0.2 per pixel: a width of 0.1 is far too
  # narrow for 200 centers in 20 dimensions and 1.0 far too wide.
  centers = 0.5 + 0.2 * rng.standard_normal((200, 20))
  valid = 0.5 + 0.2 * rng.standard_normal((100, 20))
  test = 0.5 + 0.2 * rng.standard_normal((400, 20))
  means = parzen.log_density(centers, valid, parzen.DEFAULT_SIGMAS).mean(1)
  out = parzen.parzen(centers, test, valid=valid)
  assert out["parzen_sigma"] == parzen.DEFAULT_SIGMAS[int(np.argmax(means))]
  assert parzen.DEFAULT_SIGMAS[0] < out["parzen_sigma"] < 1.0
  ll = naive_log_density(centers, test, out["parzen_sigma"])
  assert out["parzen_ll"] == pytest.approx(ll.mean(), abs=1e-3)
  assert out["parzen_ll_se"] == pytest.approx(ll.std() / 20, rel=1e-3)
  # A given width is used as it is; samples far from the data score lower.
  fixed = parzen.parzen(centers, test, sigma=0.5)
  assert fixed["parzen_sigma"] == 0.5
  shifted = parzen.parzen(centers + 0.5, test, sigma=out["parzen_sigma"])
  assert shifted["parzen_ll"] < out["parzen_ll"] - 10
  with pytest.raises(ValueError, match="validation"):
    parzen.parzen(centers, test)
  with pytest.raises(ValueError, match="same d"):
    parzen.log_density(centers, test[:, :5], [0.5])


def test_the_authors_grid():
  np.testing.assert_allclose(parzen.DEFAULT_SIGMAS, np.logspace(-1, 0, 10))
  assert METRICS.get("parzen").needs == ("pixels",)
  # The held-out images are needed only to choose the width.
  cfg = tiny_config(dataset="mnist")
  assert metrics.build(cfg, "parzen").needs == ("pixels", "valid_pixels")
  assert metrics.build(cfg.replace(**{"parzen.sigma": 0.3}),
                       "parzen").needs == ("pixels",)


def test_train_examples_holds_out_the_rest_of_the_train_split():
  import tiny_image_data  # pylint: disable=import-outside-toplevel
  cfg = tiny_config(dataset="tiny_digits", **{"data.train_examples": 48})
  whole = tiny_image_data.make(cfg)
  ds = data_lib.get(cfg)
  assert ds.num_examples == 48
  np.testing.assert_array_equal(ds.images, whole.images[:48])
  valid_x, valid_y = ds.eval_arrays("valid")
  np.testing.assert_array_equal(valid_x, whole.images[48:])
  np.testing.assert_array_equal(valid_y, whole.labels[48:])
  # Every training batch comes from the first 48 images.
  batch = np.round((ds.batches(1, 4, 1, 16)["image"].reshape(-1, 64) + 1)
                   * 127.5).astype(np.uint8)
  firsts = {bytes(x) for x in whole.images[:48].reshape(48, -1)}
  assert all(bytes(x) in firsts for x in batch)
  assert sorted(ds.permutation(0)) == list(range(48))  # an epoch: 48
  # A replica's stream keeps the held-out split.
  assert len(ds.with_seed(3).eval_arrays("valid")[0]) == 16
  with pytest.raises(UserError, match="holds out no training images"):
    whole.eval_arrays("valid")
  with pytest.raises(UserError, match="has 64 images"):
    data_lib.get(cfg.replace(**{"data.train_examples": 65}))
  with pytest.raises(UserError, match="not an image set"):
    data_lib.get(tiny_config(**{"data.train_examples": 10}))


def test_a_replica_stream_of_a_dataset_subclass_keeps_its_class():
  """--num_seeds on Stacked MNIST gave replicas plain MNIST digits (a
  1-channel stream: a shape traceback in the model)."""
  rng = np.random.default_rng(0)
  digits = rng.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8)
  ds = stacked_mnist.StackedMnist(digits, np.arange(30) % 10, seed=0)
  other = ds.with_seed(1)
  assert type(other) is stacked_mnist.StackedMnist
  assert other.shape == (8, 8, 3) and other.seed == 1 and ds.seed == 0
  b0 = ds.batches(1, 1, 1, 4)["image"]
  b1 = other.batches(1, 1, 1, 4)["image"]
  assert b0.shape == b1.shape == (1, 1, 4, 8, 8, 3)
  assert not np.array_equal(b0, b1)
  np.testing.assert_array_equal(
      ds.with_seed(0).batches(1, 1, 1, 4)["image"], b0)


def tiny_mnist_gan(data_dir, **overrides):
  cfg = tiny_config(dataset="mnist", tfds_data_dir=data_dir, generator="goodfellow_mlp",
                    discriminator="goodfellow_maxout", z_dim=8, **{"g.hidden": 16,
                    "g.layers": 1, "d.hidden": 8, "d.layers": 1}, batch_size=8,
                    **overrides)
  return gan_lib.build(cfg), cfg


@needs_mnist
def test_evaluator_parzen_on_mnist_pixels_with_the_width_chosen_held_out(
    mnist_data_dir):
  gan, cfg = tiny_mnist_gan(mnist_data_dir, **{
      "eval.metrics": ("parzen",), "data.train_examples": 50000,
      "parzen.valid_examples": 40})
  assert gan.dataset.num_examples == 50000
  state = state_lib.create(gan, cfg.seed)
  import jax  # pylint: disable=import-outside-toplevel
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  ev = evaluate.Evaluator(gan, sampler.Sampler(gan, mesh), 64)
  with jax.set_mesh(mesh):
    out = ev(state)
  assert set(out) == {"parzen_ll", "parzen_ll_se", "parzen_sigma"}
  assert out["parzen_sigma"] in parzen.DEFAULT_SIGMAS
  assert np.isfinite(out["parzen_ll"]) and out["parzen_ll_se"] > 0
  # The real set is MNIST's first 64 test images in [0, 1]; the width was
  # chosen on train images 50000-50039.
  real = ev._real_arrays()  # pylint: disable=protected-access
  test_x, _ = gan.dataset.eval_arrays("test")
  np.testing.assert_allclose(real["pixels"],
                             test_x[:64].reshape(64, -1) / 255.0, atol=1e-6)
  # The whole held-out split; the metric chooses on its first 40 images.
  assert real["valid_pixels"].shape == (10000, 784)
  assert "features" not in real  # no feature network for pixels only
  settings = ev.settings()
  assert settings["parzen_sigma_chosen_on"] == "40 held-out training images"


@needs_mnist
def test_parzen_without_held_out_images_fails_before_training(
    mnist_data_dir, tmp_path):
  r = run_module("gan_jax.main",
                 "--flagfile=experiments/goodfellow2014_mnist.flags",
                 f"--workdir={tmp_path / 'run'}",
                 f"--tfds_data_dir={mnist_data_dir}", "--num_steps=2",
                 "--log_every=2", "--steps_per_loop=2", "--eval.every=2",
                 "--eval.metrics=parzen", "--data.train_examples=0",
                 "--noprogress")
  line = assert_one_line_error(r)
  assert "held-out training images" in line and "--data.train_examples" in line
  assert not (tmp_path / "run" / "metrics.jsonl").exists()


@needs_mnist
def test_evaluate_cli_reports_parzen_with_a_given_width(mnist_data_dir,
                                                        tmp_path):
  workdir = tmp_path / "run"
  r = run_module("gan_jax.main",
                 "--flagfile=experiments/goodfellow2014_mnist.flags",
                 f"--workdir={workdir}", f"--tfds_data_dir={mnist_data_dir}",
                 "--num_steps=2", "--log_every=2", "--steps_per_loop=2",
                 "--checkpoint_every=2", "--noprogress", "--g.hidden=32",
                 "--d.hidden=16",
                 "--eval.every=0")  # (the checkpoint only: no evaluation)
  assert r.returncode == 0, r.stderr[-3000:]
  r = run_module("gan_jax.evaluate", f"--workdir={workdir}",
                 "--num_samples=50", "--eval.metrics=parzen",
                 "--parzen.sigma=0.2")
  assert r.returncode == 0, r.stderr[-3000:]
  record = json.loads(open(workdir / "eval.json").read())
  assert record["parzen_sigma"] == 0.2
  assert np.isfinite(record["parzen_ll"])
  assert record["settings"]["parzen.sigma"] == 0.2
