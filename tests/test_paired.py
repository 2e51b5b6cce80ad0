"""The image-conditional family fits the method API (issue 22): a paired
dataset and a pix2pix-style method written outside the package
(tests/paired_translation.py) train through the generic engine, learn the
translation, write sample grids and interpolation strips of translations,
and give the same numbers on 8 devices as on 1."""

import json

import numpy as np

import paired_translation
from gan_jax import train
from helpers import tiny_config


def _config(**overrides):
  return tiny_config(**{
      "dataset": "negative_digits", "method": "translate", "batch_size": 16,
      "num_steps": 12, "log_every": 2, "steps_per_loop": 2,
      "g_optimizer.lr": 1e-2, "d_optimizer.lr": 1e-3, "translate.l1": 100.0,
      **overrides})


def _records(workdir):
  return [json.loads(line) for line in open(workdir / "metrics.jsonl")]


def test_pix2pix_style_method_learns_the_pairing(tmp_path):
  scalars = train.train_and_evaluate(_config(num_devices=1),
                                     str(tmp_path / "one"))
  records = _records(tmp_path / "one")
  # G's L1 distance to the paired targets falls as it learns x -> -x.
  assert records[-1]["l1"] < 0.5 * records[0]["l1"], records
  assert np.isfinite(scalars["d_loss"]) and np.isfinite(scalars["g_loss"])
  samples = tmp_path / "one" / "samples"
  assert (samples / "step_0000012.png").exists()
  assert (samples / "interp_step_0000012.png").exists()
  # The same run on 8 devices: the pairs are sharded alike.
  train.train_and_evaluate(_config(num_devices=8), str(tmp_path / "eight"))
  for one, eight in zip(records, _records(tmp_path / "eight")):
    for key in ("d_loss", "g_loss", "l1"):
      np.testing.assert_allclose(eight[key], one[key], rtol=2e-5, atol=1e-6)


def test_the_method_samples_translations_of_held_out_sources():
  from gan_jax import gan as gan_lib  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  method = gan_lib.build(_config())
  z = method.sample_z(jax.random.PRNGKey(0), (5,))
  assert z.shape == (5, 8, 8, 1)
  bank = paired_translation.NegativePairs.sources(method.dataset, "test")
  assert all(any(np.array_equal(row, b) for b in bank) for row in
             np.asarray(z))
