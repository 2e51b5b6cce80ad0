"""Unrolled GAN (Metz et al. 2017): G's loss against D after
k differentiable D updates: ``--method=unrolled --unrolled.steps=k``.

The unrolled updates are the engine's D update itself (same loss,
penalties and optax update, applied functionally to a copy of D's params
and optimizer state) with D's optimizer in the variant that can be
differentiated (``optim.discriminator(differentiable=True)``), replaying
this step's D batches and keys cyclically, as the authors' code reuses the
step's data. G's gradient flows through the k updates (eq. 6); D itself
keeps its ordinary update.
"""

from __future__ import annotations

import jax

from gan_jax import optim
from gan_jax import sections
from gan_jax import steps
from gan_jax.methods.base import METHODS
from gan_jax.methods.gan import GAN


sections.integer("unrolled", "steps", 5, "Unrolled GAN's k: G's loss is "
                 "taken through k differentiable D updates (replaying the "
                 "step's D batches); the D kept after the step is the "
                 "non-unrolled one. At most 100: the unrolled updates are "
                 "traced one by one, so compilation time and memory grow "
                 "with k (the paper used up to 10).", bounds="[1, 100]")


class UnrolledGAN(GAN):
  """A GAN whose G trains against the k-step unrolled D."""

  def __init__(self, cfg, dataset, unroll_steps: int):
    super().__init__(cfg, dataset)
    self.unroll_steps = unroll_steps
    self.unrolled_txs = {"D": optim.discriminator(cfg, differentiable=True)}

  def unrolled_d(self, g_params, state, ctx):
    """D's (params, state) after ``--unrolled.steps`` differentiable D
    updates from ``state``, as a function of G's params (eq. 4-6)."""
    st = state.replace(params={**state.params, "G": g_params})
    keys, first, d = ctx["d_keys"], ctx["first"], ctx["inputs"]["d"]
    k = keys.shape[0]
    for j in range(self.unroll_steps):
      batch = jax.tree.map(lambda x, j=j: x[j % k], d)
      st, _ = steps.update(self, "d", st, {**batch, "key": keys[j % k]},
                           {"index": first + j % k, "differentiable": True},
                           txs=self.unrolled_txs)
    return st.params["D"], st.net_state["D"]

  def objective(self, side, params, state, batch, ctx):
    if side == "d":
      return self.d_objective(params, state, batch, ctx)
    d_params, d_state = self.unrolled_d(params["G"], state, ctx)
    return self.g_objective(params, state, self.g_batch(batch, ctx),
                            d_params, d_state)


@METHODS.register("unrolled")
def unrolled(cfg, dataset, steps: int = 5) -> UnrolledGAN:  # pylint: disable=redefined-outer-name
  """Unrolled GAN with the [unrolled] section's k D updates unrolled."""
  return UnrolledGAN(cfg, dataset, steps)
