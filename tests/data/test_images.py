"""Tests of the image input stream and offline tfds preparation."""

import importlib.util
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from helpers import assert_one_line_error, run_module

from gan_jax import data as data_lib
from gan_jax import flags as flags_lib
from gan_jax.data import images
from gan_jax.data import mnist_family
from gan_jax.data import stacked_mnist
from gan_jax.errors import UserError

NUM = 40  # mock examples per split


@pytest.fixture(name="mock_ds")
def fixture_mock_ds():
  """A dataset built through the stock tfds path on tfds mock data."""
  images._load.cache_clear()
  cfg = flags_lib.defaults(dataset="tfds:mnist", seed=3)
  with tfds.testing.mock_data(num_examples=NUM):
    ds = data_lib.get(cfg)
  images._load.cache_clear()
  return ds


def expected_indices(seed, n, positions):
  """Example index at each stream position, computed independently."""
  out = []
  for q in np.ravel(positions):
    perm = np.random.default_rng([seed, q // n]).permutation(n)
    out.append(perm[q % n])
  return np.array(out).reshape(np.shape(positions))


def test_shapes_range_and_order(mock_ds):
  assert mock_ds.kind == "image"
  assert mock_ds.shape == (28, 28, 1)
  assert mock_ds.num_classes == 10
  assert mock_ds.num_examples == NUM
  b = mock_ds.batches(start_step=5, num_steps=2, d_steps=3, batch_size=8)
  assert b["image"].shape == (2, 3, 8, 28, 28, 1)
  assert b["image"].dtype == np.float32
  assert b["label"].shape == (2, 3, 8) and b["label"].dtype == np.int32
  assert b["image"].min() >= -1.0 and b["image"].max() <= 1.0
  # Step s reads positions [s * d * B, (s + 1) * d * B).
  positions = 5 * 3 * 8 + np.arange(2 * 3 * 8).reshape(2, 3, 8)
  idx = expected_indices(3, NUM, positions)
  want = mock_ds.images[idx].astype(np.float64) / 127.5 - 1
  np.testing.assert_allclose(b["image"], want, atol=1e-6)
  np.testing.assert_array_equal(b["label"], mock_ds.labels[idx])


def test_batches_are_pure_functions_of_the_step(mock_ds):
  whole = mock_ds.batches(0, 6, 2, 8)
  again = mock_ds.batches(0, 6, 2, 8)
  parts = [mock_ds.batches(0, 2, 2, 8), mock_ds.batches(2, 3, 2, 8),
           mock_ds.batches(5, 1, 2, 8)]
  for key in ("image", "label"):
    np.testing.assert_array_equal(whole[key], again[key])
    np.testing.assert_array_equal(
        whole[key], np.concatenate([p[key] for p in parts]))


def test_process_shards_partition_the_global_batch(mock_ds):
  full = mock_ds.batches(7, 2, 2, 12)
  shards = [mock_ds.batches(7, 2, 2, 12, process_index=p, process_count=4)
            for p in range(4)]
  assert shards[0]["image"].shape == (2, 2, 3, 28, 28, 1)
  for key in ("image", "label"):
    np.testing.assert_array_equal(
        full[key], np.concatenate([s[key] for s in shards], axis=2))
  with pytest.raises(UserError):
    mock_ds.batches(0, 1, 1, 10, process_index=0, process_count=4)


def test_epochs_are_permutations_that_differ(mock_ds):
  # One step of 1 x 40 = one epoch exactly.
  labels = mock_ds.batches(0, 3, 1, NUM)["label"]
  imgs = mock_ds.batches(0, 3, 1, NUM)["image"]
  for e in range(3):
    assert sorted(labels[e, 0]) == sorted(mock_ds.labels)
  assert not np.array_equal(imgs[0], imgs[1])
  other_seed = images.ImageDataset(mock_ds.images, mock_ds.labels, 10, seed=4)
  assert not np.array_equal(other_seed.batches(0, 1, 1, NUM)["image"],
                            imgs[:1])
  same_seed = images.ImageDataset(mock_ds.images, mock_ds.labels, 10, seed=3)
  np.testing.assert_array_equal(same_seed.batches(0, 3, 1, NUM)["image"],
                                imgs)


def test_iterator_reads_consecutive_ranges(mock_ds):
  with mock_ds.iterator(3, 2, 2, 4, process_index=1, process_count=2) as it:
    got = [next(it) for _ in range(3)]
  for k, b in enumerate(got):
    want = mock_ds.batches(3 + 2 * k, 2, 2, 4, 1, 2)
    np.testing.assert_array_equal(b["image"], want["image"])
    np.testing.assert_array_equal(b["label"], want["label"])


def test_iterator_reraises_errors(mock_ds):
  it = mock_ds.iterator(0, 1, 1, 5, process_count=2)
  with pytest.raises(UserError):
    next(it)


def test_image_size_resizes_at_load():
  images._load.cache_clear()
  cfg = flags_lib.defaults(dataset="tfds:mnist", seed=0,
                           **{"data.image_size": 32})
  with tfds.testing.mock_data(num_examples=4):
    ds = data_lib.get(cfg)
  images._load.cache_clear()
  assert ds.shape == (32, 32, 1)
  b = ds.batches(0, 1, 1, 4)["image"]
  assert b.shape == (1, 1, 4, 32, 32, 1)
  assert b.min() >= -1 and b.max() <= 1


def test_names_resolve():
  assert "mnist" in data_lib.DATASETS
  assert "fashion_mnist" in data_lib.DATASETS
  assert "stacked_mnist" in data_lib.DATASETS
  assert images.is_tfds_name("cifar10")
  assert images.is_tfds_name("tfds:mnist")
  assert not images.is_tfds_name("no_such_dataset_xyz")
  with pytest.raises(UserError, match="unknown dataset") as e:
    data_lib.get(flags_lib.defaults(dataset="no_such_dataset_xyz"))
  assert "\n" not in str(e.value)
  # A known dataset with an unknown config or version, or a name tfds
  # cannot parse: tfds raises ValueError / AssertionError, given as one line.
  for name, part in (("tfds:cifar10/nope", "BuilderConfig nope not found"),
                     ("tfds:cifar10:9.9.9", "cannot be loaded at version"),
                     ("tfds:cifar-10", "Parsing builder name")):
    with pytest.raises(UserError, match="cannot use tensorflow-datasets "
                       "dataset") as e:
      images.load_arrays(name, "train")
    assert part in str(e.value) and "\n" not in str(e.value)


def test_missing_files_fail_fast_in_one_line(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "train-labels-idx1-ubyte.gz").write_bytes(b"")
  start = time.monotonic()
  with pytest.raises(UserError) as e:
    images.load_arrays("fashion_mnist", "train", data_dir=str(tmp_path / "d"),
                       manual_dir=str(manual))
  assert time.monotonic() - start < 5
  message = str(e.value)
  assert "\n" not in message
  for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz", str(manual)):
    assert name in message
  assert not (tmp_path / "d" / "mnist_idx" / "fashion_mnist").exists() or (
      not any((tmp_path / "d").rglob("*.array_record*")))


def test_wrong_file_is_refused(tmp_path):
  for fname in mnist_family.FILES["mnist"]:
    (tmp_path / fname).write_bytes(b"x")
  with pytest.raises(UserError, match="bytes, expected"):
    mnist_family.check_manual_dir("mnist", str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="with TensorFlow the stock builder may prepare")
def test_stock_dataset_unprepared_fails_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(UserError, match="needs TensorFlow") as e:
    images.load_arrays("cifar10", "train", data_dir=str(tmp_path))
  assert time.monotonic() - start < 10
  assert "\n" not in str(e.value)


def test_a_text_dataset_is_refused_before_preparing(tmp_path):
  """tfds describes imdb_reviews' features from its code: the run says it
  is not an image dataset (not that preparing needs TensorFlow), at once
  and without downloading anything (issue 23)."""
  want = ("--dataset=imdb_reviews: the tfds dataset has no image feature "
          "(features: label, text); gan_jax trains on image datasets")
  data_dir = tmp_path / "tfds"
  start = time.monotonic()
  with pytest.raises(UserError) as e:
    images.load_arrays("imdb_reviews", "train", data_dir=str(data_dir))
  assert time.monotonic() - start < 10
  assert str(e.value) == want
  with pytest.raises(UserError, match="--dataset=tfds:imdb_reviews: the "
                     "tfds dataset has no image feature"):
    images.load_arrays("tfds:imdb_reviews", "test", data_dir=str(data_dir))
  assert not data_dir.exists() or not any(data_dir.rglob("*.*"))
  r = run_module("gan_jax.main", "--dataset=imdb_reviews",
                 f"--tfds_data_dir={data_dir}",
                 f"--workdir={tmp_path / 'work'}", "--num_steps=1",
                 "--noprogress", timeout=300)
  assert assert_one_line_error(r) == f"error: {want}"


# ------------------------------------------- integration: the real files

MNIST_DIR = images.default_manual_dir("mnist")


@pytest.mark.skipif(MNIST_DIR is None, reason="../shared/data/mnist absent")
def test_prepare_mnist_offline(tmp_path):
  """Prepares MNIST from the official files; no network, no TensorFlow."""
  images._load.cache_clear()
  data_dir = str(tmp_path / "tfds")
  train_x, train_y = images.load_arrays("mnist", "train", data_dir=data_dir)
  test_x, test_y = images.load_arrays("mnist", "test", data_dir=data_dir)
  assert train_x.shape == (60000, 28, 28, 1) and train_x.dtype == np.uint8
  assert test_x.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(train_y[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
  np.testing.assert_array_equal(test_y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
  np.testing.assert_array_equal(
      np.bincount(test_y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                            1009])
  raw = mnist_family.read_idx(
      os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"), 3)
  np.testing.assert_array_equal(test_x[..., 0], raw)
  # The training stream on the prepared data.
  cfg = flags_lib.defaults(dataset="mnist", seed=0, tfds_data_dir=data_dir)
  ds = data_lib.get(cfg)
  assert (ds.shape, ds.num_classes, ds.num_examples) == ((28, 28, 1), 10,
                                                         60000)
  assert ds.eval_arrays("test")[0].shape == (10000, 28, 28, 1)
  b = ds.batches(0, 1, 1, 16)
  assert b["image"].shape == (1, 1, 16, 28, 28, 1)
  assert b["image"].min() == -1.0 and b["image"].max() == 1.0
  # Stacked MNIST on the real digits: channel c of epoch 0 walks
  # default_rng([seed, 0, c]).
  stacked = stacked_mnist.StackedMnist(train_x, train_y, seed=5)
  s = stacked.batches(1, 1, 1, 8)
  idx = np.stack([np.random.default_rng([5, 0, c]).permutation(60000)[8:16]
                  for c in range(3)], axis=-1)
  np.testing.assert_array_equal(
      np.rint((s["image"][0, 0] + 1) * 127.5).astype(np.uint8),
      np.concatenate([train_x[idx[:, c]] for c in range(3)], axis=-1))
  np.testing.assert_array_equal(
      s["label"][0, 0], train_y[idx] @ np.array([100, 10, 1]))
  images._load.cache_clear()


def test_resize_matches_jax_image_resize():
  import jax  # pylint: disable=g-import-not-at-top
  x = np.random.RandomState(0).randint(0, 256, (6, 28, 28, 3)).astype(
      np.uint8)
  for size in (32, 64, 20):
    got = images.resize(x, size)
    assert got.shape == (6, size, size, 3) and got.dtype == np.uint8
    want = jax.image.resize(x.astype(np.float32), (6, size, size, 3),
                            "linear", antialias=True)
    np.testing.assert_allclose(got, np.asarray(want), atol=1.0)


# ------------------------------------ damaged prepared files (issue 23)


def damaged_copy(tmp_path, mnist_data_dir, damage, split="test"):
  """A copy of the prepared MNIST with ``damage`` done to one file: the
  copy's data dir and the damaged file."""
  data_dir = str(tmp_path / "tfds")
  shutil.copytree(mnist_data_dir, data_dir)
  folder = os.path.join(data_dir, "mnist_idx", "mnist", "1.0.0")
  if damage == "json":
    path = os.path.join(folder, "dataset_info.json")
  else:
    path = os.path.join(
        folder, f"mnist_idx-{split}.array_record-00000-of-00001")
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    if damage in ("truncated", "json"):  # the end (postscript) is gone
      f.truncate(size // 2)
    elif damage == "stub":  # an interrupted copy
      f.truncate(100)
    elif damage == "flipped":  # a record's chunk: seen only when read
      f.seek(size // 2)
      byte = f.read(1)[0]
      f.seek(size // 2)
      f.write(bytes([byte ^ 0x10]))
  return data_dir, path


@pytest.mark.parametrize("damage", ["truncated", "stub", "flipped", "json"])
def test_a_damaged_prepared_file_is_one_line_naming_it(tmp_path,
                                                       mnist_data_dir,
                                                       damage):
  data_dir, path = damaged_copy(tmp_path, mnist_data_dir, damage)
  folder = os.path.dirname(path)
  # No manual dir: the message says how to prepare it again.
  with pytest.raises(UserError) as e:
    mnist_family.load_split("mnist", "test", data_dir, None)
  message = str(e.value)
  assert "\n" not in message and len(message) < 1000
  assert message.startswith(f"{path}: the prepared mnist file is damaged (")
  assert "--tfds_manual_dir=FOLDER" in message and folder in message
  # A manual dir without the official files: it can't be redone, and why.
  manual = tmp_path / "manual"
  manual.mkdir()
  images._load.cache_clear()
  with pytest.raises(UserError) as e:
    images.load_arrays("mnist", "test", data_dir=data_dir,
                       manual_dir=str(manual))
  images._load.cache_clear()
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(f"{path}: the prepared mnist file is damaged (")
  assert f"can't be prepared again: mnist: --tfds_manual_dir={manual}" in (
      message)
  assert os.path.exists(path)  # nothing deleted when it can't be redone


@pytest.mark.skipif(MNIST_DIR is None, reason="../shared/data/mnist absent")
def test_a_damaged_prepared_file_is_prepared_again_from_the_manual_dir(
    tmp_path, mnist_data_dir, caplog):
  data_dir, path = damaged_copy(tmp_path, mnist_data_dir, "flipped")
  images._load.cache_clear()
  with caplog.at_level("WARNING"):
    test_x, test_y = images.load_arrays("mnist", "test", data_dir=data_dir)
  images._load.cache_clear()
  warnings = [r.getMessage() for r in caplog.records
              if "damaged" in r.getMessage()]
  assert len(warnings) == 1 and "\n" not in warnings[0]
  assert warnings[0].startswith(f"{path}: the prepared mnist file is "
                                f"damaged (Corrupted Riegeli/records file")
  assert f"preparing it again from {MNIST_DIR}" in warnings[0]
  raw = mnist_family.read_idx(
      os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"), 3)
  np.testing.assert_array_equal(test_x[..., 0], raw)
  assert test_y.shape == (10000,)
  # Prepared anew: the next read needs nothing.
  again = mnist_family.load_split("mnist", "test", data_dir, None)
  np.testing.assert_array_equal(again[0], test_x)


def test_a_damaged_prepared_file_ends_the_cli_in_one_line(tmp_path,
                                                          mnist_data_dir):
  data_dir, path = damaged_copy(tmp_path, mnist_data_dir, "truncated",
                                split="train")
  manual = tmp_path / "manual"
  manual.mkdir()
  r = run_module("gan_jax.main", "--dataset=mnist",
                 f"--tfds_data_dir={data_dir}", f"--tfds_manual_dir={manual}",
                 f"--workdir={tmp_path / 'work'}", "--num_steps=1",
                 "--noprogress", timeout=300)
  line = assert_one_line_error(r)
  assert line.startswith(f"error: {path}: the prepared mnist file is damaged "
                         f"(Invalid Riegeli/records file"), line
  assert "can't be prepared again" in line
