"""Runs the real compiled train step on tiny toy models (for regularizer
tests). Not a test module: imported through pytest's ``pythonpath``."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import gan as gan_lib
from gan_jax import state as state_lib
from gan_jax import steps
from helpers import tiny_config


def toy_config(**overrides):
  """ReLU MLPs without BatchNorm (deterministic G, per-example D)."""
  base = dict(generator="mlp", discriminator="mlp", **{"g.batchnorm": False,
              "g.hidden": 8, "g.layers": 1, "d.hidden": 8, "d.layers": 2}, batch_size=8,
              d_steps=1)
  base.update(overrides)
  return tiny_config(**base)


class Runner:
  """A built GAN, a mesh over ``n_devices`` and its initial state."""

  def __init__(self, cfg, n_devices=1, dataset=None):
    self.cfg = cfg
    self.gan = gan_lib.build(cfg, dataset=dataset)
    self.mesh = jax.make_mesh((n_devices,), ("data",),
                              devices=jax.devices()[:n_devices])
    self.replicated = NamedSharding(self.mesh, P())
    with jax.set_mesh(self.mesh):
      self.state = jax.jit(lambda: state_lib.create(self.gan, cfg.seed),
                           out_shardings=self.replicated)()
    self._fns = {}

  def host(self):
    """A copy of the current state on the host (numpy leaves)."""
    return jax.tree.map(np.asarray, jax.device_get(self.state))

  def set(self, **fields):
    """Replaces state fields (e.g. ema) with replicated copies."""
    with jax.set_mesh(self.mesh):
      put = {k: jax.device_put(jax.tree.map(jnp.asarray, v), self.replicated)
             for k, v in fields.items()}
      self.state = self.state.replace(**put)

  def steps(self, n=1):
    """Runs ``n`` training steps in one call; returns numpy metrics (n,)."""
    if n not in self._fns:
      self._fns[n] = steps.make_train_step(self.gan, self.mesh, n)
    with jax.set_mesh(self.mesh):
      self.state, metrics = self._fns[n](self.state, None)
    return {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}

  def inputs(self, step):
    """The random inputs (global batch) the step ``step`` draws."""
    with jax.set_mesh(self.mesh):
      key = jax.random.fold_in(self.state.rng, step)
      out = self.gan.sample_inputs(key, None)
    return jax.tree.map(np.asarray, jax.device_get(out))
