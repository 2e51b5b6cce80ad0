"""LeCam-regularized GAN (Tseng et al., "Regularizing Generative
Adversarial Networks under Limited Data", CVPR 2021, eq. 3), written
outside the package: a method with its own knobs and its own train state.

    python -m gan_jax.main --extra_modules=examples.lecam_gan \
        --flagfile=examples/lecam_ring.flags --workdir=/tmp/lecam

D's loss gains lambda * (E[(D(x) - a_fake)^2] + E[(D(G(z)) - a_real)^2]),
where a_real and a_fake are exponential moving averages of D's outputs on
real and fake data, kept in the train state (saved, restored, averaged
over devices by the engine).
"""

import jax.numpy as jnp

from gan_jax import sections
from gan_jax.methods import METHODS
from gan_jax.methods.gan import GAN

# The [lecam] section: --lecam.weight, --lecam.decay.
sections.float_("lecam", "weight", 0.3, "lambda: the LeCam term's weight.",
                bounds=">= 0")
sections.float_("lecam", "decay", 0.99, "EMA decay of the anchors.",
                bounds="[0, 1)")


class LeCamGAN(GAN):
  """The plain GAN (any --loss, architecture, penalty) plus the LeCam
  term on D's side."""

  def __init__(self, cfg, dataset, weight, decay):
    super().__init__(cfg, dataset)
    self.weight, self.decay = weight, decay

  def init(self, key_g, key_d):
    params, net_state, extra = super().init(key_g, key_d)
    zero = jnp.zeros((), jnp.float32)
    return params, net_state, {**extra, "lecam_real": zero,
                               "lecam_fake": zero}

  def d_term(self, real_logits, fake_logits, state):
    a_real, a_fake = state.extra["lecam_real"], state.extra["lecam_fake"]
    reg = (jnp.mean((real_logits - a_fake) ** 2)
           + jnp.mean((fake_logits - a_real) ** 2))
    d = self.decay
    extra = {"lecam_real": d * a_real + (1 - d) * jnp.mean(real_logits),
             "lecam_fake": d * a_fake + (1 - d) * jnp.mean(fake_logits)}
    metrics = {"lecam/reg": reg, "lecam/anchor_real": a_real,
               "lecam/anchor_fake": a_fake}
    return self.weight * reg, metrics, extra


@METHODS.register("lecam")
def lecam(cfg, dataset, weight: float = 0.3, decay: float = 0.99):
  return LeCamGAN(cfg, dataset, weight, decay)
