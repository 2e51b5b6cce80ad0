"""The train state: one immutable pytree, updated only with ``.replace``.

It holds any number of named networks (``"G"`` and ``"D"``; ``"G"``, ``"D"``
and ``"Q"``; ``"G_AB"``, ``"G_BA"``, ``"D_A"``, ``"D_B"``), as the method
(``gan_jax.methods``) declares them, and whatever extra state the method
keeps (running means, an augmentation probability, a pool of past fakes).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

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
  numbers an uninterrupted run would. Per network name: ``params`` (the
  trainable ``params`` collection), ``net_state`` (its other collections:
  BatchNorm statistics, spectral-norm vectors), ``opt_state`` (its optax
  state). ``ema``: EMA copies of the method's ``ema_networks``' params
  (empty when ``--ema.decay`` is 0). ``extra``: the method's own state.
  """
  step: jax.Array
  rng: jax.Array
  params: Dict[str, PyTree]
  net_state: Dict[str, PyTree]
  opt_state: Dict[str, PyTree]
  ema: Dict[str, PyTree]
  extra: Dict[str, PyTree]

  # Shorthands for the two networks every GAN has.
  @property
  def g_params(self) -> PyTree:
    return self.params["G"]

  @property
  def d_params(self) -> PyTree:
    return self.params["D"]

  @property
  def g_state(self) -> PyTree:
    return self.net_state["G"]

  @property
  def d_state(self) -> PyTree:
    return self.net_state["D"]

  @property
  def ema_params(self) -> Optional[PyTree]:
    """G's EMA params, None without EMA."""
    return self.ema.get("G")


def split_variables(variables):
  """Flax variables -> (params, the other collections)."""
  variables = dict(variables)
  params = variables.pop("params")
  return params, variables


def create(method, seed: int) -> TrainState:
  """Initializes a train state (pure: use under jit or eval_shape).

  The seed's key splits into a generator-side key, a discriminator-side key
  (``method.init`` derives every network's initialization from them) and
  the run's key."""
  root = jax.random.PRNGKey(seed)
  k_g, k_d, k_run = jax.random.split(root, 3)
  params, net_state, extra = method.init(k_g, k_d)
  txs = method.optimizers
  ema = {}
  if getattr(method.cfg, "ema.decay") > 0:
    ema = {n: jax.tree.map(jnp.copy, params[n]) for n in method.ema_networks}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=k_run,
      params=params,
      net_state=net_state,
      opt_state={n: txs[n].init(params[n]) for n in txs},
      ema=ema,
      extra=dict(extra or {}),
  )


def create_replicas(method, seed: int, num_seeds: int = 1) -> TrainState:
  """``num_seeds`` independent states for seeds seed..seed+N-1, stacked on a
  leading replica axis (just ``create`` when N is 1). Replica i is exactly
  ``create(method, seed + i)``."""
  if num_seeds == 1:
    return create(method, seed)
  # As uint32: PRNGKey keeps a seed's low 32 bits, so the key of uint32
  # (seed + i) mod 2**32 is create(method, seed + i)'s (int32 overflowed
  # from seed 2**31 on).
  seeds = jnp.asarray(np.array([(seed + i) % 2**32 for i in range(num_seeds)],
                               np.uint32))
  return jax.vmap(lambda s: create(method, s))(seeds)


def replica(state: TrainState, i: int) -> TrainState:
  """Replica ``i`` of a state with a leading replica axis."""
  return jax.tree.map(lambda x: x[i], state)


def sampling_params(state: TrainState) -> Dict[str, PyTree]:
  """Every network's params for sampling and evaluation, the EMA copies
  where there are any."""
  return {**state.params, **state.ema}
