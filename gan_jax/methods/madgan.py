"""MAD-GAN (Ghosh et al. 2018): k generators against one discriminator with
k+1 outputs. ``--method=madgan --madgan.generators=k``.

The k generators' params are stacked on a leading axis and applied with
``jax.vmap``; a batch is split into k consecutive blocks, rows
[i b/k, (i+1) b/k) coming from generator i. D (an architecture with k+1
logits: ``mlp``, ``pacgan_maxout``) minimizes the softmax cross-entropy:
-log D_k(x) on real data plus -log D_i(G_i(z)) on generator i's samples.
Each generator wants its samples called real: G_i minimizes -log
D_k(G_i(z)), the non-saturating form of the paper's log(1 - D_k(G_i(z)))
(as Goodfellow et al. 2014, Sec. 3).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from gan_jax import losses as losses_lib
from gan_jax.errors import UserError
from gan_jax.methods.base import METHODS
from gan_jax.methods.gan import GAN

from gan_jax import sections

sections.integer("madgan", "generators", 4, "MAD-GAN's k: generators, each "
                 "making batch/k of every batch, against a discriminator "
                 "with k+1 outputs (generator 0..k-1, real = k).",
                 bounds=">= 2")


def generator_labels(n: int, k: int) -> jax.Array:
  """Which generator made each row of a batch of ``n``."""
  return jnp.arange(n) // (n // k)


def _ce(logits, labels):
  return -jnp.mean(jnp.take_along_axis(
      jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=-1))


class MADGAN(GAN):
  """k generators, one (k+1)-way discriminator."""

  def __init__(self, cfg, dataset, generators: int):
    k = generators
    if cfg.conditional or cfg.pack > 1:
      raise UserError("--method=madgan does not support --conditional or "
                      "--pack > 1")
    single_logit = sorted({"gp", "r1"} & set(cfg.penalties))
    if single_logit:
      raise UserError(f"--penalties={','.join(single_logit)} penalizes the "
                      "gradient of D's one logit per example; MAD-GAN's D "
                      "has k+1 softmax outputs, so those penalties are not "
                      "defined for it")
    self.k = k
    super().__init__(cfg, dataset)
    fields = {f.name for f in dataclasses.fields(self.discriminator)}
    if "outputs" not in fields:
      raise UserError(f"--method=madgan needs a discriminator with k+1 "
                      f"outputs (an 'outputs' field: mlp, pacgan_maxout); "
                      f"--discriminator={cfg.discriminator} has none")
    self.discriminator = self.discriminator.clone(outputs=k + 1)

  @property
  def batch_multiple(self):
    return self.k, f"{self.k} generators"

  def make_loss(self) -> losses_lib.Loss:
    k = self.k

    def d(real, fake):
      lr = _ce(real, jnp.full((real.shape[0],), k))
      lf = _ce(fake, generator_labels(fake.shape[0], k))
      return lr + lf, lr, lf

    return losses_lib.Loss(
        d=d, g=lambda fake: _ce(fake, jnp.full((fake.shape[0],), k)))

  def init_generator(self, key, z, y):
    one = super().init_generator
    return jax.vmap(lambda kk: one(kk, z, y))(jax.random.split(key, self.k))

  def generate(self, params, state, z, y, train: bool, rng=None):
    """Rows [i b/k, (i+1) b/k) from generator i (a batch not divisible by
    k, when sampling, is padded and cut)."""
    one = super().generate
    b, k = z.shape[0], self.k
    pad = -b % k
    if pad and train:
      raise UserError(f"a device's batch of {b} must divide by "
                      f"--madgan.generators={k}")
    z = jnp.concatenate([z, jnp.zeros((pad,) + z.shape[1:], z.dtype)])
    zs = z.reshape((k, (b + pad) // k) + z.shape[1:])
    x, state = jax.vmap(lambda p, s, zi: one(p, s, zi, None, train, rng))(
        params, state, zs)
    return x.reshape((b + pad,) + x.shape[2:])[:b], state


@METHODS.register("madgan")
def madgan(cfg, dataset, generators: int = 4) -> MADGAN:
  """MAD-GAN with the k generators of the [madgan] section."""
  return MADGAN(cfg, dataset, generators)
