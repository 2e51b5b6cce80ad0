"""GAN losses, chosen by name (``--loss``), compare_gan's contract.

A loss is a pair of functions on discriminator logits:
``d(real_logits, fake_logits) -> (d_loss, d_loss_real, d_loss_fake)`` with
``d_loss = d_loss_real + d_loss_fake``, and ``g(fake_logits) -> g_loss``.
Factories take the config (for label smoothing, LSGAN targets). Register your
own with ``@LOSSES.register("name")`` from a module passed to
``--extra_modules``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from gan_jax.registry import Registry

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Loss:
  d: Callable[[Array, Array], Tuple[Array, Array, Array]]
  g: Callable[[Array], Array]


LOSSES = Registry("loss", returns=Loss)


def _bce(logits, target):
  """Mean binary cross-entropy of sigmoid(logits) against a constant target."""
  # -(t log s(l) + (1 - t) log(1 - s(l))), with log s(l) = -softplus(-l).
  return jnp.mean(target * jax.nn.softplus(-logits)
                  + (1.0 - target) * jax.nn.softplus(logits))


def _cross_entropy_d(real_target):
  """Goodfellow et al. 2014, eq. 1; real_target < 1 is one-sided smoothing."""
  def d(real, fake):
    lr, lf = _bce(real, real_target), _bce(fake, 0.0)
    return lr + lf, lr, lf
  return d


@LOSSES.register("minimax")
def minimax(cfg) -> Loss:
  """G minimizes log(1 - D(G(z))) (Goodfellow et al. 2014, eq. 1)."""
  return Loss(d=_cross_entropy_d(cfg.label_smoothing),
              g=lambda fake: -jnp.mean(jax.nn.softplus(fake)))


@LOSSES.register("ns")
def non_saturating(cfg) -> Loss:
  """G minimizes -log D(G(z)) (Goodfellow et al. 2014, section 3)."""
  return Loss(d=_cross_entropy_d(cfg.label_smoothing),
              g=lambda fake: jnp.mean(jax.nn.softplus(-fake)))


@LOSSES.register("lsgan")
def least_squares(cfg) -> Loss:
  """Mao et al. 2017, eq. 2: targets a (fake), b (real) for D; c for G."""
  a, b, c = cfg.lsgan_a, cfg.lsgan_b, cfg.lsgan_c

  def d(real, fake):
    lr = 0.5 * jnp.mean((real - b) ** 2)
    lf = 0.5 * jnp.mean((fake - a) ** 2)
    return lr + lf, lr, lf

  return Loss(d=d, g=lambda fake: 0.5 * jnp.mean((fake - c) ** 2))


@LOSSES.register("wgan")
def wasserstein(cfg) -> Loss:
  """Arjovsky et al. 2017: the critic maximizes E[D(x)] - E[D(G(z))]."""
  del cfg

  def d(real, fake):
    lr, lf = -jnp.mean(real), jnp.mean(fake)
    return lr + lf, lr, lf

  return Loss(d=d, g=lambda fake: -jnp.mean(fake))


@LOSSES.register("hinge")
def hinge(cfg) -> Loss:
  """Lim & Ye 2017; Miyato et al. 2018, eq. 16-17."""
  del cfg

  def d(real, fake):
    lr = jnp.mean(jax.nn.relu(1.0 - real))
    lf = jnp.mean(jax.nn.relu(1.0 + fake))
    return lr + lf, lr, lf

  return Loss(d=d, g=lambda fake: -jnp.mean(fake))


def madgan_labels(n: int, k: int):
  """Class of each fake row for MAD-GAN: rows [i n/k, (i+1) n/k) are
  generator i's (``GAN.generate`` splits a batch into k blocks)."""
  return jnp.arange(n) // (n // k)


@LOSSES.register("madgan")
def madgan(cfg) -> Loss:
  """MAD-GAN (Ghosh et al. 2018, Sec. 3), with --num_generators=k.

  D has k+1 logits per sample: class i < k = "made by generator i", class k
  = real. D minimizes the softmax cross-entropy: -log D_k(x) on real data
  plus -log D_i(G_i(z)) on generator i's samples (d_loss = mean over real
  rows + mean over fake rows). Each generator wants its samples called real:
  G_i minimizes -log D_k(G_i(z)), the non-saturating form of the paper's
  log(1 - D_k(G_i(z))) (as Goodfellow et al. 2014, Sec. 3).
  """
  k = cfg.num_generators

  def ce(logits, labels):
    return -jnp.mean(jnp.take_along_axis(
        jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=-1))

  def d(real, fake):
    lr = ce(real, jnp.full((real.shape[0],), k))
    lf = ce(fake, madgan_labels(fake.shape[0], k))
    return lr + lf, lr, lf

  return Loss(d=d, g=lambda fake: ce(fake, jnp.full((fake.shape[0],), k)))


# The losses this module registers (flags that only some of them read are
# checked against these; a loss registered by a user may read any flag).
BUILTIN = frozenset(LOSSES.names())
