"""The loss/regularizer flagfiles of experiments/ (issue 4): they parse, say
what their paper says, build, and a shortened run stays finite."""

import copy
import dataclasses

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from gan_jax import flags as flags_lib
from gan_jax import gan as gan_lib
from gan_jax import state as state_lib
from helpers import REPO
from step_runner import Runner

TINY_TOY = ("--g.hidden=8", "--d.hidden=8", "--g.layers=2", "--d.layers=2",
            "--batch_size=16")


def parse(monkeypatch, name, *overrides):
  """The Config of ``experiments/NAME.flags`` plus overrides, parsed in a
  private copy of the flags (the global FLAGS stay untouched)."""
  monkeypatch.chdir(REPO)  # nested --flagfile paths are relative to the repo
  fv = flags.FlagValues()
  for flag in flags_lib.SAFE:
    fv[flag] = copy.deepcopy(flags_lib.FLAGS[flag])
  fv(["prog", f"--flagfile=experiments/{name}.flags", *overrides])
  return flags_lib.Config({n: fv[n].value for n in flags_lib.SAFE})


@dataclasses.dataclass(frozen=True)
class FakeImages:
  """Stands in for an image dataset where only its shape matters."""
  shape: tuple
  name: str = "fake"
  kind: str = "image"
  num_classes: int = 10


# ---------------------------------------------------------------- toy sets


@pytest.mark.parametrize("name", ["wgan_gp_8gaussians", "wgan_gp_25gaussians",
                                  "wgan_gp_swissroll"])
def test_wgan_gp_toy_flagfiles(monkeypatch, name):
  cfg = parse(monkeypatch, name)
  # Gulrajani et al. 2017, gan_toy.py.
  assert cfg.dataset == name[len("wgan_gp_"):]
  assert (cfg.generator, cfg.discriminator) == ("mlp", "mlp")
  assert tuple(getattr(cfg, k) for k in (
      "g.hidden", "g.layers", "d.hidden", "d.layers")) == (512, 3, 512, 3)
  assert not getattr(cfg, "g.batchnorm")
  assert cfg.z_dim == 2 and cfg.z_dist == "normal"
  assert cfg.loss == "wgan" and cfg.penalties == ("gp",)
  assert getattr(cfg, "gp.weight") == 0.1
  assert cfg.d_steps == 5 and cfg.batch_size == 256
  assert (getattr(cfg, "g_optimizer.lr"), getattr(cfg, "d_optimizer.lr"), getattr(cfg, "g_optimizer.b1"), getattr(cfg, "g_optimizer.b2"), getattr(cfg, "d_optimizer.b1"),
          getattr(cfg, "d_optimizer.b2")) == (1e-4, 1e-4, 0.5, 0.9, 0.5, 0.9)
  assert cfg.num_steps == 100_000 and cfg.d_clip == 0
  m = Runner(parse(monkeypatch, name, *TINY_TOY)).steps(1)
  for key in ("d_loss", "g_loss", "penalty/gp", "d_grad_norm"):
    assert np.all(np.isfinite(m[key])), key


def test_lsgan_ring_flagfile(monkeypatch):
  cfg = parse(monkeypatch, "lsgan_ring")
  base = parse(monkeypatch, "gan_ring")
  assert (cfg.loss,) + tuple(getattr(cfg, f"loss.{k}") for k in "abc") == (
      "lsgan", 0.0, 1.0, 1.0)
  # Everything else is the PacGAN ring protocol of gan_ring.flags.
  diff = {k for k, v in cfg.items() if getattr(base, k) != v}
  assert diff <= {"loss", "loss.a", "loss.b", "loss.c"}
  m = Runner(parse(monkeypatch, "lsgan_ring", *TINY_TOY)).steps(1)
  assert np.all(np.isfinite(m["d_loss"])) and np.all(np.isfinite(m["g_loss"]))


# -------------------------------------------------------------- image sets


def _abstract_state(cfg, shape):
  gan = gan_lib.build(cfg, dataset=FakeImages(shape, num_classes=0))
  return jax.eval_shape(lambda: state_lib.create(gan, 0))


def test_wgan_mnist_flagfile_is_algorithm_1(monkeypatch):
  cfg = parse(monkeypatch, "wgan_mnist")
  assert cfg.dataset == "mnist" and cfg.loss == "wgan" and not cfg.penalties
  assert cfg.d_clip == 0.01 and cfg.d_steps == 5 and cfg.batch_size == 64
  assert (cfg.g_optimizer, cfg.d_optimizer) == ("rmsprop", "rmsprop")
  assert getattr(cfg, "g_optimizer.lr") == getattr(cfg, "d_optimizer.lr") == 5e-5
  st = _abstract_state(cfg, (28, 28, 1))
  assert "batch_stats" in st.d_state  # DCGAN critic with BatchNorm


def test_lsgan_mnist_flagfile(monkeypatch):
  cfg = parse(monkeypatch, "lsgan_mnist")
  assert (cfg.loss,) + tuple(getattr(cfg, f"loss.{k}") for k in "abc") == (
      "lsgan", 0.0, 1.0, 1.0)
  assert (getattr(cfg, "d_optimizer.lr"), getattr(cfg, "d_optimizer.b1"), getattr(cfg, "g_optimizer.b1")) == (2e-4, 0.5, 0.5)
  _abstract_state(cfg, (28, 28, 1))


def test_wgan_gp_cifar10_flagfile(monkeypatch):
  cfg = parse(monkeypatch, "wgan_gp_cifar10")
  assert (cfg.generator, cfg.discriminator) == ("resnet", "resnet")
  assert getattr(cfg, "g.channels") == getattr(cfg, "d.channels") == 128
  assert (getattr(cfg, "g.norm"), getattr(cfg, "d.norm")) == ("batch", "none")  # BN in G only
  assert cfg.loss == "wgan" and cfg.penalties == ("gp",)
  assert getattr(cfg, "gp.weight") == 10 and cfg.d_steps == 5 and cfg.batch_size == 64
  assert (getattr(cfg, "g_optimizer.lr"), getattr(cfg, "g_optimizer.b1"), getattr(cfg, "g_optimizer.b2")) == (2e-4, 0.0, 0.9)
  assert cfg.lr_schedule == "linear" and cfg.num_steps == 100_000
  st = _abstract_state(cfg, (32, 32, 3))
  assert not st.d_state  # no normalization state in the critic


@pytest.mark.parametrize("name,arch", [("sngan_cifar10", "resnet"),
                                       ("sngan_dcgan_cifar10", "dcgan")])
def test_sngan_cifar10_flagfiles(monkeypatch, name, arch):
  cfg = parse(monkeypatch, name)
  assert cfg.discriminator == arch and getattr(cfg, "d.norm") == "spectral"
  assert cfg.loss == "hinge" and not cfg.penalties
  assert (getattr(cfg, "d_optimizer.lr"), getattr(cfg, "d_optimizer.b1"), getattr(cfg, "d_optimizer.b2"), cfg.d_steps, cfg.batch_size) == (
      2e-4, 0.0, 0.9, 5, 64)
  st = _abstract_state(cfg, (32, 32, 3))
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_leaves_with_path(st.d_state)]
  # Only spectral-norm state (u and sigma per weight layer) in the critic.
  assert any(p.endswith("/u']") for p in paths)
  assert all("SpectralNorm" in p for p in paths), paths


@pytest.mark.parametrize("name", ["wgan_gp_cifar10", "sngan_cifar10"])
def test_cifar10_flagfiles_build_on_mock_cifar10(monkeypatch, name):
  # The flagfile's dataset through tensorflow-datasets (mock CIFAR-10 data:
  # the real one can't be downloaded here) and its full-size model at 32x32.
  # (A real step of these ResNets takes minutes to compile on 2 CPU cores;
  # the spectral-norm step mechanics are tested with MLPs in
  # test_regularizers.py.)
  from gan_jax import data as data_lib
  from gan_jax.data import images
  cfg = parse(monkeypatch, name)
  images._load.cache_clear()
  try:
    with tfds.testing.mock_data(num_examples=8):
      ds = data_lib.get(cfg)
  finally:
    images._load.cache_clear()
  assert ds.kind == "image" and ds.shape == (32, 32, 3)
  gan = gan_lib.build(cfg, dataset=ds)
  st = jax.eval_shape(lambda: state_lib.create(gan, 0))
  x = jax.eval_shape(lambda p, s: gan.generate(p, s, np.zeros((2, 128)),
                                               None, train=False)[0],
                     st.g_params, st.g_state)
  assert x.shape == (2, 32, 32, 3)
  host = ds.batches(0, 1, cfg.d_steps, 4)
  assert host["image"].shape == (1, cfg.d_steps, 4, 32, 32, 3)
