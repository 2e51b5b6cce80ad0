"""The benchmark's PyTorch reference computes gan_jax's functions.

``benchmarks/torch_reference.py`` claims the same architectures as gan_jax's
DCGAN and PacGAN toy models; here gan_jax's parameters are copied into the
PyTorch modules and both are applied to the same inputs (train mode: batch
statistics). Needs the optional PyTorch extra (``pip install -e
'.[torch]'``): skipped without it, as in CI.
"""

import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO
from model_init import host_init

from helpers import discriminator, generator
from gan_jax.models import conv as conv_lib

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import torch_reference  # noqa: E402  pylint: disable=g-import-not-at-top
import train_step  # noqa: E402  pylint: disable=g-import-not-at-top


def _t(a):
  return torch.from_numpy(np.array(a, np.float32))


def _set(param, value):
  assert tuple(param.shape) == tuple(value.shape)
  with torch.no_grad():
    param.copy_(_t(value))


def _bn(bn, p):
  _set(bn.weight, p["scale"])
  _set(bn.bias, p["bias"])


def _nhwc_rows_to_nchw(kernel, hw, c):
  """Rows of a dense kernel ordered (h, w, c) -> ordered (c, h, w)."""
  h, w = hw
  k = np.asarray(kernel).reshape(h, w, c, -1).transpose(2, 0, 1, 3)
  return k.reshape(h * w * c, -1)


def _load_dcgan(tg, td, pg, pd, base, width_g, width_d):
  # G: Dense (columns (h, w, c) -> torch's view (c, h, w)), BN, transposed
  # convolutions (gan_jax's sub-pixel kernel as the stride-2 convolution
  # whose adjoint it is: HWIO -> PyTorch's (in, out, kh, kw) of
  # ConvTranspose2d, the adjoint of conv2d with an OIHW weight).
  dense = _nhwc_rows_to_nchw(np.asarray(pg["Dense_0"]["kernel"]).T,
                             (base, base), width_g).T
  _set(tg.fc.weight, dense.T)
  _bn(tg.bn0, pg["BatchNorm_0"])
  convs = [m for m in tg.blocks if isinstance(m, torch.nn.ConvTranspose2d)]
  bns = [m for m in tg.blocks if isinstance(m, torch.nn.BatchNorm2d)]
  for i, conv in enumerate(convs):
    p = pg[f"Upsample_{i}"]
    strided = np.asarray(conv_lib.strided_kernel(p["kernel"]))  # (4,4,f,cin)
    _set(conv.weight, strided.transpose(3, 2, 0, 1))
    if "bias" in p:
      _set(conv.bias, p["bias"])
  for i, bn in enumerate(bns):
    _bn(bn, pg[f"BatchNorm_{i + 1}"])
  # D: HWIO -> OIHW; the output layer's rows (h, w, c) -> (c, h, w).
  convs = [m for m in td.features if isinstance(m, torch.nn.Conv2d)]
  bns = [m for m in td.features if isinstance(m, torch.nn.BatchNorm2d)]
  for i, conv in enumerate(convs):
    p = pd[f"Conv_{i}"]
    _set(conv.weight, np.asarray(p["kernel"]).transpose(3, 2, 0, 1))
    if "bias" in p:
      _set(conv.bias, p["bias"])
  for i, bn in enumerate(bns):
    _bn(bn, pd[f"BatchNorm_{i}"])
  out = _nhwc_rows_to_nchw(pd["Dense_0"]["kernel"], (base, base), width_d)
  _set(td.fc.weight, out.T)
  _set(td.fc.bias, pd["Dense_0"]["bias"])


def _apply(module, variables, *args):
  out, _ = module.apply(variables, *args, train=True,
                        mutable=["batch_stats"])
  return np.asarray(out)


def test_dcgan_reference_matches_gan_jax():
  cfg = train_step.config_from_flagfile(
      "experiments/dcgan_mnist.flags", **{"g.channels": 8, "d.channels": 8}, z_dim=5)
  shape = (28, 28, 1)
  g = generator("dcgan", cfg, shape, 0)
  d = discriminator("dcgan", cfg, shape, 0)
  rs = np.random.RandomState(0)
  z = rs.uniform(-1, 1, (6, 5)).astype(np.float32)
  x = rs.uniform(-1, 1, (6,) + shape).astype(np.float32)
  vg = host_init(g, jnp.ones((2, 5)), None, train=False)
  vd = host_init(d, jnp.ones((2,) + shape), None, train=False, seed=1)
  tg, td = torch_reference.build_models(cfg, shape)
  tg.train()
  td.train()
  _load_dcgan(tg, td, vg["params"], vd["params"], base=7, width_g=16,
              width_d=16)
  with torch.no_grad():
    t_fake = tg(_t(z)).numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC
    t_logit = td(_t(x.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(_apply(g, vg, z, None), t_fake, atol=2e-5)
  np.testing.assert_allclose(_apply(d, vd, x, None), t_logit, rtol=1e-4,
                             atol=1e-4)


def _load_toy(tg, td, pg, pd):
  linears = [m for m in tg.net if isinstance(m, torch.nn.Linear)]
  bns = [m for m in tg.net if isinstance(m, torch.nn.BatchNorm1d)]
  for i, lin in enumerate(linears):
    _set(lin.weight, np.asarray(pg[f"Dense_{i}"]["kernel"]).T)
    if lin.bias is not None:
      _set(lin.bias, pg[f"Dense_{i}"]["bias"])
  for i, bn in enumerate(bns):
    _bn(bn, pg[f"BatchNorm_{i}"])
  for i, layer in enumerate(td.net[:-1]):
    p = pd[f"Maxout_{i}"]["Dense_0"]
    _set(layer.fc.weight, np.asarray(p["kernel"]).T)
    _set(layer.fc.bias, p["bias"])
  _set(td.net[-1].weight, np.asarray(pd["Dense_0"]["kernel"]).T)
  _set(td.net[-1].bias, pd["Dense_0"]["bias"])


def _toy_config(**kw):
  return train_step.config_from_flagfile("experiments/gan_ring.flags",
                                         **{"g.hidden": 16, "d.hidden": 8}, **kw)


def test_toy_reference_matches_gan_jax():
  cfg = _toy_config()
  g = generator(cfg.generator, cfg, (2,), 0)
  d = discriminator(cfg.discriminator, cfg, (2,), 0)
  rs = np.random.RandomState(0)
  z = rs.normal(size=(10, cfg.z_dim)).astype(np.float32)
  x = rs.normal(size=(10, 2)).astype(np.float32)
  vg = host_init(g, jnp.ones((2, cfg.z_dim)), None, train=False)
  vd = host_init(d, jnp.ones((2, 2)), None, train=False, seed=1)
  tg, td = torch_reference.build_models(cfg, (2,))
  tg.train()
  td.train()
  _load_toy(tg, td, vg["params"], vd["params"])
  with torch.no_grad():
    t_fake = tg(_t(z)).numpy()
    t_logit = td(_t(x)).numpy()
  np.testing.assert_allclose(_apply(g, vg, z, None), t_fake, atol=2e-5)
  np.testing.assert_allclose(np.asarray(d.apply(vd, x, None, train=True)),
                             t_logit, rtol=1e-5, atol=1e-5)


def _check_same_update(make_ref, load, before, after, inputs, metrics, *,
                       rtol, atol):
  """Replays gan_jax's first step in a fresh reference (``make_ref()``)
  loaded with the parameters ``before`` it, on its noise: the same losses;
  then the parameters ``after`` it, loaded into another reference, equal
  the reference's updated ones."""
  ref = make_ref()
  load(ref, before)
  zs = iter([inputs["d"]["z"][0], inputs["g"]["z"]])
  ref.sample_z = lambda n: _t(next(zs))
  d_loss, g_loss = ref.run(1)
  np.testing.assert_allclose(metrics["d_loss"][0], d_loss, rtol=rtol)
  np.testing.assert_allclose(metrics["g_loss"][0], g_loss, rtol=rtol)
  moved = make_ref()
  load(moved, after)
  for name, module, mine in (("G", ref.g, moved.g), ("D", ref.d, moved.d)):
    for (pname, p), q in zip(module.named_parameters(), mine.parameters()):
      np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(),
                                 atol=atol, err_msg=f"{name} {pname}")


def test_toy_reference_performs_gan_jax_update():
  """One whole train step (D update, then G update with fresh noise, Adam)
  from the same parameters on the same noise and data: the same losses and
  the same updated parameters."""
  from step_runner import Runner  # pylint: disable=g-import-not-at-top
  cfg = _toy_config(batch_size=16, steps_per_loop=1, progress=False)
  runner = Runner(cfg)
  before = runner.host()
  inputs = runner.inputs(0)
  metrics = runner.steps(1)
  after = runner.host()

  def make_ref():
    ref = torch_reference.TrainStep(cfg, (2,), None)
    ref._real = lambda: _t(inputs["d"]["real"][0])  # pylint: disable=protected-access
    return ref

  def load(ref, state):
    _load_toy(ref.g, ref.d, state.g_params, state.d_params)

  _check_same_update(make_ref, load, before, after, inputs, metrics,
                     rtol=1e-5, atol=1e-6)


def test_dcgan_reference_performs_gan_jax_update():
  """The same for DCGAN (BatchNorm in both networks, D's real and fake
  passes apart), with the benchmark's own compiled call of one step."""
  import jax  # pylint: disable=g-import-not-at-top
  cfg = train_step.config_from_flagfile(
      "experiments/dcgan_mnist.flags", **{"g.channels": 8, "d.channels": 8}, z_dim=5,
      batch_size=6, steps_per_loop=1)
  shape = (28, 28, 1)
  case = train_step.JaxCase(cfg, 1, shape)
  before = jax.device_get(case.state)
  host = jax.tree.map(lambda v: v[0], case.host)  # the one step's batch
  with jax.set_mesh(case.mesh):
    inputs = jax.device_get(case.gan.sample_inputs(
        jax.random.fold_in(case.state.rng, case.state.step), host))
  case.run()
  metrics = jax.device_get(case.last_metrics)
  after = jax.device_get(case.state)

  real = np.asarray(inputs["d"]["real"][0]).transpose(0, 3, 1, 2)

  def make_ref():
    return torch_reference.TrainStep(cfg, shape, _t(real)[None])

  def load(ref, state):
    _load_dcgan(ref.g, ref.d, state.g_params, state.d_params, base=7,
                width_g=16, width_d=16)

  _check_same_update(make_ref, load, before, after, inputs, metrics,
                     rtol=1e-4, atol=2e-6)
