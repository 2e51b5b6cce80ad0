"""Image GANs through the trainer (issue 3): the flagfiles build, DCGAN trains
on the real MNIST files offline and writes its sample grid and interpolation
strips, conditional grids have one row per class, and bad data setups end in
one line."""

import copy
import importlib.util
import json
import os
import time

import jax
import numpy as np
import pytest
from absl import flags
from PIL import Image

from gan_jax import flags as flags_lib
from gan_jax import gan as gan_lib
from gan_jax import host_input
from gan_jax import sampler
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax.data import images
from helpers import REPO, assert_one_line_error, run_module

MNIST_DIR = images.default_manual_dir("mnist")
needs_mnist = pytest.mark.skipif(MNIST_DIR is None,
                                 reason="../shared/data/mnist absent")
TINY = ("--g.channels=8", "--d.channels=8", "--batch_size=16",
        "--num_steps=4", "--log_every=2", "--steps_per_loop=2",
        "--checkpoint_every=0", "--noprogress")


def parse(monkeypatch, name, *overrides):
  """``experiments/NAME.flags`` plus overrides as a Config, parsed in a
  private copy of the flags."""
  monkeypatch.chdir(REPO)  # nested --flagfile paths are relative to the repo
  fv = flags.FlagValues()
  for flag in flags_lib.SAFE:
    fv[flag] = copy.deepcopy(flags_lib.FLAGS[flag])
  fv(["prog", f"--flagfile=experiments/{name}.flags", *overrides])
  return flags_lib.Config({n: fv[n].value for n in flags_lib.SAFE})


class FakeImages:
  """Stands in for an image dataset where only its shape matters."""
  kind = "image"
  name = "fake"

  def __init__(self, shape, num_classes=10):
    self.shape, self.num_classes = shape, num_classes


FLAGFILES = {  # name -> (dataset, shape of G's samples)
    "goodfellow2014": ("ring", (2,)),  # the base of goodfellow2014_mnist
    "goodfellow2014_mnist": ("mnist", (28, 28, 1)),
    "dcgan_mnist": ("mnist", (28, 28, 1)),
    "dcgan_fashion_mnist": ("fashion_mnist", (28, 28, 1)),
    "dcgan_cifar10": ("cifar10", (32, 32, 3)),
    "dcgan_mnist_64": ("mnist", (64, 64, 1)),
    "cgan_mnist": ("mnist", (28, 28, 1)),
    "cdcgan_mnist": ("mnist", (28, 28, 1)),
    "dcgan_stacked_mnist": ("stacked_mnist", (28, 28, 3)),
    "infogan_mnist": ("mnist", (28, 28, 1)),
    "acgan_mnist": ("mnist", (28, 28, 1)),
}


@pytest.mark.parametrize("name", sorted(FLAGFILES))
def test_flagfile_parses_and_builds(monkeypatch, name):
  """Full-size models, abstractly: jax.eval_shape allocates nothing."""
  dataset, shape = FLAGFILES[name]
  cfg = parse(monkeypatch, name)
  assert cfg.dataset == dataset
  if name.startswith("dcgan") or name == "cdcgan_mnist":
    # Radford et al. 2015, Sec. 4: Adam, lr 2e-4, beta1 0.5.
    assert (cfg.g_optimizer, getattr(cfg, "g_optimizer.lr"), getattr(cfg, "g_optimizer.b1")) == ("adam", 2e-4, 0.5)
    assert (cfg.d_optimizer, getattr(cfg, "d_optimizer.lr"), getattr(cfg, "d_optimizer.b1")) == ("adam", 2e-4, 0.5)
  gan = gan_lib.build(cfg, None if dataset == "ring" else FakeImages(shape))
  if name == "infogan_mnist":
    # The authors' settings (openai/InfoGAN, run_mnist_exp.py).
    assert (gan.z_dim, gan.categories, gan.continuous) == (74, 10, 2)
    assert (getattr(cfg, "g_optimizer.lr"), getattr(cfg, "d_optimizer.lr"), cfg.batch_size) == (1e-3, 2e-4, 128)
    assert set(jax.eval_shape(lambda: state_lib.create(gan, 0)).params) == {
        "G", "D", "Q"}
  state = jax.eval_shape(lambda: state_lib.create(gan, 0))
  z = jax.ShapeDtypeStruct((2, gan.z_dim), np.float32)
  y = (jax.ShapeDtypeStruct((2,), np.int32) if gan.num_classes else None)
  x = jax.eval_shape(lambda s, z, y: gan.generate(
      s.g_params, s.g_state, z, y, train=False)[0], state, z, y)
  assert x.shape == (2,) + shape


def png(path):
  return np.asarray(Image.open(path).convert("RGB"))


def cells(image, size, rows, cols, pad=2):
  """The (rows, cols, size, size, 3) tiles of a plots.grid image."""
  assert image.shape == (rows * (size + pad) + pad, cols * (size + pad) + pad,
                         3)
  return np.stack([np.stack([
      image[pad + r * (size + pad): pad + r * (size + pad) + size,
            pad + c * (size + pad): pad + c * (size + pad) + size]
      for c in range(cols)]) for r in range(rows)])


@needs_mnist
def test_dcgan_mnist_trains_through_the_cli(mnist_data_dir, tmp_path):
  workdir = tmp_path / "run"
  r = run_module("gan_jax.main", "--flagfile=experiments/dcgan_mnist.flags",
                 f"--workdir={workdir}", f"--tfds_data_dir={mnist_data_dir}",
                 *TINY, "--eval.every=4", "--eval.num_samples=64")
  assert r.returncode == 0, r.stderr[-3000:]
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert [rec["step"] for rec in records] == [2, 4]
  for rec in records:
    for key in ("d_loss", "g_loss", "d_loss_real", "d_loss_fake"):
      assert np.isfinite(rec[key]), (key, rec)
  # Periodic evaluation (--eval.every) on the MNIST classifier's features.
  assert "fid" not in records[0]
  for key in ("fid", "kid", "inception_score", "precision", "recall"):
    assert np.isfinite(records[1][key]), (key, records[1])
  assert 1.0 <= records[1]["inception_score"] <= 10.0
  # The evaluate CLI on the final checkpoint: a table and eval.json, with the
  # same metrics as the in-training evaluation of that step.
  r = run_module("gan_jax.evaluate", f"--workdir={workdir}",
                 "--num_samples=64", f"--tfds_data_dir={mnist_data_dir}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "fid" in r.stdout and "eval.json" in r.stdout
  result = json.load(open(workdir / "eval.json"))
  assert result["step"] == 4 and result["num_samples"] == 64
  np.testing.assert_allclose(result["fid"], records[1]["fid"], rtol=1e-4)
  np.testing.assert_allclose(result["kid"], records[1]["kid"], rtol=1e-4)
  assert result["settings"] == {"features": "mnist", "num_real": 64,
                                "generated": "quantized to 8 bits",
                                "real_split": "test",
                                "kid.subsets": 100, "kid.subset_size": 64,
                                "inception_score.splits": 10,
                                "precision_recall.k": 3}
  # Metric settings on the evaluate command line override the run's.
  r = run_module("gan_jax.evaluate", f"--workdir={workdir}",
                 "--num_samples=64", "--kid.subset_size=16",
                 "--inception_score.splits=4")
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.load(open(workdir / "eval.json"))
  assert result["settings"]["kid.subset_size"] == 16
  # eval.json is the latest evaluation; eval.jsonl keeps every one.
  history = [json.loads(line) for line in open(workdir / "eval.jsonl")]
  assert [h["settings"]["kid.subset_size"] for h in history] == [64, 16]
  assert history[-1] == result
  assert result["settings"]["inception_score.splits"] == 4
  np.testing.assert_allclose(result["fid"], records[1]["fid"], rtol=1e-4)
  assert abs(result["kid"] - records[1]["kid"]) > 1e-6
  # The real set can be the train split's first N images instead, and
  # --eval.metrics picks metrics by name, a user's own included.
  r = run_module("gan_jax.evaluate", f"--workdir={workdir}",
                 "--num_samples=64", "--eval.real_split=train",
                 "--eval.metrics=fid,feat_mean",
                 "--extra_modules=user_metrics",
                 env={"PYTHONPATH": os.path.dirname(__file__)})
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.load(open(workdir / "eval.json"))
  assert result["settings"]["real_split"] == "train"
  assert abs(result["fid"] - records[1]["fid"]) > 1e-3
  assert {k for k in result if k not in ("step", "num_samples", "settings")
          } == {"fid", "feat_mean"}
  assert np.isfinite(result["feat_mean"])
  r = run_module("gan_jax.evaluate", f"--workdir={workdir}",
                 "--num_samples=64", "--eval.metrics=fid,fdi")
  assert "unknown metric 'fdi'" in assert_one_line_error(r)
  samples = workdir / "samples"
  for step in (2, 4):
    grid = png(samples / f"step_{step:07d}.png")
    cells(grid, 28, 8, 8)  # 64 samples, 8 x 8
    strips = png(samples / f"interp_step_{step:07d}.png")
    tiles = cells(strips, 28, 8, 10)  # 4 pairs x (linear, spherical) x 10
    # Linear and spherical paths share their endpoints.
    np.testing.assert_array_equal(tiles[0::2, [0, -1]], tiles[1::2, [0, -1]])
  # The grid's noise is fixed: steps 2 and 4 differ only through training.
  assert not np.array_equal(png(samples / "step_0000002.png"),
                            png(samples / "step_0000004.png"))
  events = os.listdir(workdir / "tensorboard")
  assert any(e.startswith("events.out.tfevents") for e in events)


@needs_mnist
def test_conditional_grid_has_one_row_per_class(mnist_data_dir, tmp_path,
                                                monkeypatch):
  cfg = parse(monkeypatch, "cdcgan_mnist", *TINY,
              f"--tfds_data_dir={mnist_data_dir}", "--num_steps=2",
              "--num_devices=1")
  scalars = train.train_and_evaluate(cfg, str(tmp_path))
  assert np.isfinite(scalars["d_loss"]) and np.isfinite(scalars["g_loss"])
  tiles = cells(png(tmp_path / "samples" / "step_0000002.png"), 28, 10, 6)
  # Row r is class r for the same six z's: rows differ, and within a row
  # the samples differ.
  for r in range(1, 10):
    assert not np.array_equal(tiles[0], tiles[r])
  assert not np.array_equal(tiles[0, 0], tiles[0, 1])
  cells(png(tmp_path / "samples" / "interp_step_0000002.png"), 28, 8, 10)


@needs_mnist
def test_periodic_evaluation_on_all_devices(mnist_data_dir, tmp_path,
                                            monkeypatch):
  """--eval.every inside the data-parallel loop (8 host devices, the mesh in
  context): every metric, precision/recall's per-device blocks included."""
  assert jax.device_count() == 8
  cfg = parse(monkeypatch, "dcgan_mnist", *TINY,
              f"--tfds_data_dir={mnist_data_dir}", "--num_steps=2",
              "--eval.every=2", "--eval.num_samples=32")
  train.train_and_evaluate(cfg, str(tmp_path))
  record = json.loads(open(tmp_path / "metrics.jsonl").readlines()[-1])
  for key in ("fid", "kid", "inception_score", "precision", "recall"):
    assert np.isfinite(record[key]), (key, record)


def test_interpolation_inputs_are_fixed_paths(monkeypatch):
  cfg = parse(monkeypatch, "cgan_mnist")
  gan = gan_lib.build(cfg, FakeImages((28, 28, 1)))
  rng = jax.random.PRNGKey(0)
  z, y = sampler.interpolation_inputs(gan, rng, 3, 5)
  z2, _ = sampler.interpolation_inputs(gan, rng, 3, 5)
  np.testing.assert_array_equal(z, z2)
  z = np.asarray(z).reshape(3, 2, 5, -1)
  np.testing.assert_allclose(z[:, 0, [0, -1]], z[:, 1, [0, -1]], atol=1e-6)
  # Linear: equal steps along the chord; spherical: on the arc between.
  np.testing.assert_allclose(np.diff(z[:, 0], 2, axis=1), 0, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(y).reshape(3, 10),
                                np.repeat([[0], [1], [2]], 10, axis=1))


def test_host_input_prefetches_the_same_batches_and_resumes(monkeypatch):
  """Prefetched full chunks and in-place partial ones equal
  dataset.batches; a resume mid-chunk and a jump restart the iterator."""
  import threading
  import tiny_image_data
  from jax.sharding import NamedSharding, PartitionSpec as P
  cfg = flags_lib.defaults(dataset="tiny_digits", batch_size=8, d_steps=2,
                           steps_per_loop=3)
  ds = tiny_image_data.make(cfg)
  mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
  host = host_input.HostInput([ds], cfg, NamedSharding(mesh, P(None, None,
                                                                "data")))
  calls = [(1, 2), (3, 3), (6, 3), (9, 3), (12, 1), (20, 3), (23, 3)]
  with host:
    for first, n in calls:
      got = jax.device_get(host(first, n))
      want = ds.batches(first, n, 2, 8)
      for k in ("image", "label"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=str(first))
    assert any(t.name == "gan_jax-prefetch" for t in threading.enumerate())
  assert host._iters is None  # pylint: disable=protected-access
  assert host_input.HostInput([], cfg, None)(0, 3) is None


class _DocumentedSignature:
  """A user's dataset with docs/data.md's signatures: no ``prefetch`` and
  no ``rows`` keyword (the loop passed ``prefetch=`` regardless: a
  TypeError traceback)."""

  def __init__(self, ds):
    self.ds = ds

  def batches(self, start_step, num_steps, d_steps, batch_size,
              process_index=0, process_count=1):
    return self.ds.batches(start_step, num_steps, d_steps, batch_size,
                           process_index, process_count)

  def iterator(self, start_step, steps_per_call, d_steps, batch_size,
               process_index=0, process_count=1):
    return self.ds.iterator(start_step, steps_per_call, d_steps, batch_size,
                            process_index, process_count)


def test_host_input_takes_a_dataset_with_the_documented_signature(
    monkeypatch):
  import tiny_image_data
  from jax.sharding import NamedSharding, PartitionSpec as P
  from gan_jax.errors import UserError
  cfg = flags_lib.defaults(dataset="tiny_digits", batch_size=8, d_steps=1,
                           steps_per_loop=2)
  ds = tiny_image_data.make(cfg)
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  sharding = NamedSharding(mesh, P(None, None, "data"))
  with host_input.HostInput([_DocumentedSignature(ds)], cfg,
                            sharding) as host:
    for first, n in [(0, 2), (2, 2), (4, 1)]:
      np.testing.assert_array_equal(jax.device_get(host(first, n))["image"],
                                    ds.batches(first, n, 1, 8)["image"])
  # Several processes pass rows=: such a dataset is one line, not a
  # TypeError in the reading thread.
  monkeypatch.setattr(host_input.distributed, "process_rows",
                      lambda devices, batch: np.arange(4))
  with pytest.raises(UserError, match="takes no rows= argument"):
    host_input.HostInput([_DocumentedSignature(ds)], cfg, sharding)


def test_missing_mnist_files_end_in_one_line(tmp_path):
  start = time.monotonic()
  r = run_module("gan_jax.main", "--dataset=mnist", "--generator=dcgan",
                 "--discriminator=dcgan", f"--workdir={tmp_path / 'run'}",
                 "--tfds_manual_dir=/nonexistent",
                 f"--tfds_data_dir={tmp_path / 'tfds'}", timeout=120)
  line = assert_one_line_error(r)
  assert "/nonexistent" in line and "idx" in line, line
  assert time.monotonic() - start < 60  # ~20 s on an idle machine


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="with TensorFlow the stock builder may prepare")
def test_cifar10_without_tensorflow_ends_in_one_line(tmp_path):
  r = run_module("gan_jax.main", "--flagfile=experiments/dcgan_cifar10.flags",
                 f"--workdir={tmp_path / 'run'}",
                 f"--tfds_data_dir={tmp_path / 'tfds'}", timeout=120)
  line = assert_one_line_error(r)
  assert "TensorFlow" in line, line


def test_real_baseline_scores_real_against_real():
  """experiments/real_baseline.py: the metrics of real train images against
  real test images (the floor a generator is read against)."""
  if images.default_manual_dir("mnist") is None:
    pytest.skip("../shared/data/mnist absent")
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  script = os.path.join(REPO, "experiments", "real_baseline.py")
  r = subprocess.run([sys.executable, script, "--num=300"], cwd=REPO,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads(r.stdout.splitlines()[0])
  assert result["dataset"] == "mnist" and result["num"] == 300
  assert 0 < result["fid"] < 100 and 0 < result["precision"] <= 1
  assert 5 < result["inception_score"] <= 10  # ten classes, well spread
  # Real images under a Parzen window on other real images: finite, its
  # width chosen among the authors' ten.
  assert np.isfinite(result["parzen_ll"]) and result["parzen_ll_se"] > 0
  assert 0.1 <= result["parzen_sigma"] <= 1.0
  bad = subprocess.run([sys.executable, script, "--dataset=cifar10"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
  assert bad.returncode == 1 and bad.stderr.startswith("error: --dataset"), (
      bad.stderr)
