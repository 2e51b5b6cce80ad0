"""Fast initialization and application of tiny models for the model tests."""

import jax
import jax.numpy as jnp
import numpy as np


def host_init(module, *args, seed=0, **kwargs):
  """Variables of ``module`` drawn with NumPy from the shapes of its init.

  Tracing the init with ``jax.eval_shape`` and filling it on the host skips
  compiling the initializers' random number generation, which dominates a
  tiny model's test time on CPU. ``test_real_init`` covers the real init.
  """
  shapes = jax.eval_shape(
      lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
  rs = np.random.RandomState(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if name.endswith(("['scale']", "['var']", "sigma']")):
      return jnp.ones(s.shape, s.dtype)
    if name.endswith(("['bias']", "['mean']")):
      return jnp.zeros(s.shape, s.dtype)
    fan_in = int(np.prod(s.shape[:-1])) or 1
    return jnp.asarray(rs.randn(*s.shape) / np.sqrt(fan_in), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def generate(g, z, y=None, train=True):
  v = host_init(g, z, y, train=False)
  x, upd = jax.jit(lambda v, z, y: g.apply(
      v, z, y, train=train, mutable=["batch_stats"]))(v, z, y)
  return x, v, upd


def discriminate(d, x, y=None, train=True):
  v = host_init(d, x, y, train=False, seed=1)
  logits, upd = jax.jit(lambda v, x, y: d.apply(
      v, x, y, train=train, mutable=["batch_stats"]))(v, x, y)
  return logits, v, upd
