"""The train state: one immutable pytree, updated only with ``.replace``."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

PyTree = Any


@struct.dataclass
class TrainState:
  """Everything that shapes the future of a run (and so is checkpointed).

  ``rng`` is the run's base key; the key of step s is ``fold_in(rng, s)``, so
  no key is threaded through the loop and resuming at step s draws exactly the
  numbers an uninterrupted run would. ``g_state``/``d_state`` hold the
  non-trainable collections (BatchNorm statistics, spectral-norm vectors).
  ``ema_params`` is the EMA copy of G's parameters, or None when disabled.
  """
  step: jax.Array
  rng: jax.Array
  g_params: PyTree
  g_state: PyTree
  d_params: PyTree
  d_state: PyTree
  g_opt_state: PyTree
  d_opt_state: PyTree
  ema_params: Optional[PyTree] = None


def split_variables(variables):
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


def create(gan, seed: int) -> TrainState:
  """Initializes a train state (pure: use under jit or eval_shape)."""
  root = jax.random.PRNGKey(seed)
  k_g, k_d, k_run = jax.random.split(root, 3)
  cfg = gan.cfg
  n = max(2, cfg.pack)  # BatchNorm and packing need a batch of >= 2.
  z = gan.sample_z(jax.random.PRNGKey(0), (n,))
  y = gan.sample_labels(jax.random.PRNGKey(0), (n,))
  def init_g(key):
    return gan.generator.init({"params": key, "dropout": key}, z, y,
                              train=False)
  if cfg.num_generators > 1:  # MAD-GAN: params stacked on a leading k axis.
    g_vars = jax.vmap(init_g)(jax.random.split(k_g, cfg.num_generators))
  else:
    g_vars = init_g(k_g)
  g_params, g_state = split_variables(g_vars)
  x = jnp.zeros((n,) + gan.shape, jnp.float32)
  d_vars = gan.discriminator.init({"params": k_d, "dropout": k_d},
                                  gan.pack(x), y, train=False)
  d_params, d_state = split_variables(d_vars)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=k_run,
      g_params=g_params,
      g_state=g_state,
      d_params=d_params,
      d_state=d_state,
      g_opt_state=gan.g_tx.init(g_params),
      d_opt_state=gan.d_tx.init(d_params),
      ema_params=(jax.tree.map(jnp.copy, g_params)
                  if cfg.ema_decay > 0 else None),
  )


def create_replicas(gan, seed: int, num_seeds: int = 1) -> TrainState:
  """``num_seeds`` independent states for seeds seed..seed+N-1, stacked on a
  leading replica axis (just ``create`` when N is 1). Replica i is exactly
  ``create(gan, seed + i)``."""
  if num_seeds == 1:
    return create(gan, seed)
  # As uint32: PRNGKey keeps a seed's low 32 bits, so the key of uint32
  # (seed + i) mod 2**32 is create(gan, seed + i)'s (int32 overflowed
  # from seed 2**31 on).
  seeds = jnp.asarray(np.array([(seed + i) % 2**32 for i in range(num_seeds)],
                               np.uint32))
  return jax.vmap(lambda s: create(gan, s))(seeds)


def replica(state: TrainState, i: int) -> TrainState:
  """Replica ``i`` of a state with a leading replica axis."""
  return jax.tree.map(lambda x: x[i], state)


def sampling_params(state: TrainState):
  """G's parameters for sampling and evaluation: the EMA copy when enabled."""
  return state.ema_params if state.ema_params is not None else state.g_params
